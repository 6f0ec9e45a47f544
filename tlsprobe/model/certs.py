"""Parsed facts of one certificate and what strict parsers refuse in it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime


class CertPart(enum.StrEnum):
    """The part of a certificate a `CertProblem` is about."""

    ENCODING = "encoding"
    """The certificate as a whole: strict DER parsing failed, fields were read leniently."""
    SERIAL = "serial"
    SIGNATURE = "signature"
    ISSUER = "issuer"
    SUBJECT = "subject"
    VALIDITY = "validity"
    KEY = "key"
    EXTENSIONS = "extensions"


UNREADABLE = "(unreadable)"
"""The placeholder of a text field that cannot be read, and what is shown for a date that
cannot be read."""
UNREADABLE_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""The placeholder of a validity date that cannot be read (a `CertFacts` with a VALIDITY
problem); the drift history stores it as 0.0. Shown as `UNREADABLE`, never as a 1970 date."""


def readable_time(timestamp: float) -> bool:
    """False for the stored placeholder of an unreadable validity date."""
    return timestamp != UNREADABLE_TIME.timestamp()


_CRITICAL_PARTS = frozenset(
    {CertPart.ENCODING, CertPart.SIGNATURE, CertPart.VALIDITY, CertPart.KEY, CertPart.EXTENSIONS}
)


@dataclass(frozen=True, slots=True)
class CertProblem:
    """Something in a certificate that strict parsers refuse or that could not be read."""

    part: CertPart
    detail: str

    @property
    def critical(self) -> bool:
        """Strict verifiers (Exchange Online's included) refuse such a certificate; a name in
        a legacy string type is only a warning, because it is read and verified regardless."""
        return self.part in _CRITICAL_PARTS


@dataclass(frozen=True, slots=True)
class CertFacts:
    """Parsed facts of one certificate, independent of any verdict."""

    der: bytes = field(repr=False)
    subject: str
    """RFC 4514 string."""
    issuer: str
    serial: str
    """Hex, upper case, no separators."""
    not_before: datetime
    not_after: datetime
    sha256: str
    """Lower-case hex fingerprint of the DER."""
    dns_names: tuple[str, ...]
    """SAN dNSName entries, as found (A-labels)."""
    common_names: tuple[str, ...]
    key_type: str
    """RSA, EC, Ed25519, Ed448, DSA or unknown."""
    key_bits: int
    signature_algorithm: str
    """Dotted name, for example sha256WithRSAEncryption or ecdsa-with-SHA256."""
    signature_hash: str | None
    """sha1, sha256, md5, ...; None for Ed25519/Ed448 (no separate hash)."""
    is_ca: bool
    self_issued: bool
    """Subject equals issuer (a root, or a self-signed leaf)."""
    exchange_name: str
    """`<I>issuer<S>subject` as Exchange's TlsCertificateName wants it."""
    problems: tuple[CertProblem, ...] = ()
    """What could not be read strictly. A field whose part has a problem holds what a lenient
    reading found, or a placeholder ("(unreadable)", the Unix epoch for dates)."""

    @property
    def key(self) -> str:
        return f"{self.key_type} {self.key_bits}"

    def unreadable(self, part: CertPart) -> bool:
        return any(p.part is part for p in self.problems)

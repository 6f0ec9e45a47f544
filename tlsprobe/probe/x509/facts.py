"""DER bytes to certificate facts: names, dates, key, signature, fingerprints.

Parsing never judges and never fails: a certificate that is expired, weak, malformed in its
extensions or not even strict DER still yields facts, so the report shows exactly what the
server sent. Whatever `cryptography` refuses is read by the lenient reader (`der`) instead and
recorded as a `CertProblem`; the fingerprint is always that of the raw DER, so drift history
works for any certificate. Library warnings (a serial number that is not positive) become
problems too, never text on a user's terminal.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import warnings
from collections.abc import Callable
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from tlsprobe.model import UNREADABLE, UNREADABLE_TIME, CertFacts, CertPart, CertProblem
from tlsprobe.probe.x509 import der as lenient
from tlsprobe.probe.x509.bytecache import ByteLRU

READ_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
)
"""What `cryptography` raises on hostile certificates when a field is read."""

_T = TypeVar("_T")


class CertificateParseError(ValueError):
    """The bytes are not a DER certificate `cryptography` can load."""


def load(der: bytes) -> x509.Certificate:
    """Strict load, with the library's deprecation warnings silenced (they become problems)."""
    try:
        return quiet(lambda: x509.load_der_x509_certificate(der))
    except READ_ERRORS as exc:
        raise CertificateParseError(f"not a DER certificate: {exc}") from exc


def quiet(read: Callable[[], _T]) -> _T:
    """`read()` without the library's warnings (a serial that is not positive, a CN over 64
    characters): the caller records such findings as problems; a user never sees a warning."""
    return _warned(read)[0]


def _warned(read: Callable[[], _T]) -> tuple[_T, list[str]]:
    # catch_warnings swaps process-wide state; evaluation runs in worker threads, and two
    # overlapping catches would leave one's recorder installed for good.
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = read()
    return value, [str(w.message) for w in caught]


_WARNINGS_LOCK = threading.RLock()
"""Reentrant: a verification run under `quiet` reads facts, which capture warnings again."""


def facts(cert: x509.Certificate) -> CertFacts:
    """Facts of one certificate. Cached by DER: fleets serve the same chain many times."""
    return facts_from_der(cert.public_bytes(Encoding.DER))


FACTS_CACHE_BYTES = 32 << 20
"""Bytes of certificates whose facts are remembered (DER plus the parsed facts, estimated)."""
_FACTS: ByteLRU[bytes, CertFacts] = ByteLRU(max_bytes=FACTS_CACHE_BYTES, max_entries=4096)


def facts_from_der(der: bytes) -> CertFacts:
    """Facts of any bytes a server sent as a certificate; never raises."""
    return _FACTS.memoize(der, lambda: _facts(der), 2 * len(der) + 1024)


def _facts(der: bytes) -> CertFacts:
    try:
        cert = load(der)
    except CertificateParseError as exc:
        return _lenient_facts(der, f"not strict DER, read leniently ({exc.__cause__})")
    return _Reader(cert, der).facts()


class _Reader:
    """Reads each field of a loaded certificate on its own, so one unreadable field (a subject
    string `cryptography` refuses, a duplicated extension) costs only that field: it is read
    leniently instead and recorded as a problem."""

    def __init__(self, cert: x509.Certificate, der: bytes) -> None:
        self.cert = cert
        self.der = der
        self.problems: list[CertProblem] = []
        self._lenient: lenient.LenientCertificate | None = None

    def read(
        self,
        part: CertPart,
        strict: Callable[[x509.Certificate], _T],
        fallback: Callable[[lenient.LenientCertificate], _T],
        *,
        warns: bool = False,
    ) -> _T:
        """`strict(cert)`, or what the lenient reader found. `warns`: the library may warn
        while reading this part (names), and its warnings become problems of the part."""
        try:
            if not warns:
                return strict(self.cert)
            value, warned = _warned(lambda: strict(self.cert))
        except READ_ERRORS as exc:
            if self._lenient is None:
                self._lenient = lenient.read_certificate(self.der)
            # The lenient reader says what deviated (a T61String with 8-bit bytes); the
            # library's own message is the fallback.
            details = self._lenient.notes.get(part.value) or [f"cannot be read strictly: {exc}"]
            self.problems.extend(CertProblem(part, detail) for detail in details)
            return fallback(self._lenient)
        self.problems.extend(CertProblem(part, message) for message in warned)
        return value

    def problem(self, part: CertPart, detail: str) -> None:
        self.problems.append(CertProblem(part, detail))

    def facts(self) -> CertFacts:
        cert = self.cert
        # Each Name is built once: building it is where the library warns (a long CN).
        subject_name = self.read(CertPart.SUBJECT, _subject_name, _none, warns=True)
        issuer_name = self.read(CertPart.ISSUER, _issuer_name, _none, warns=True)
        fallback = self._lenient or lenient.LenientCertificate()
        subject = _rfc4514(subject_name, fallback.subject)
        issuer = _rfc4514(issuer_name, fallback.issuer)
        cns = _common_names(subject_name) if subject_name is not None else fallback.common_names
        if subject_name is not None and issuer_name is not None:
            exchange = exchange_name_of(issuer_name, subject_name)
        else:
            exchange = f"<I>{issuer}<S>{subject}"
        key_type, key_bits = self.read(CertPart.KEY, key_description, lambda _: _no_key())
        if key_type == "unknown":
            self.problem(CertPart.KEY, "public key algorithm not supported")
        sig_hash = self.read(CertPart.SIGNATURE, _hash_name, lambda _: None)
        unknown = sig_hash is None and cert.signature_algorithm_oid not in _HASHLESS
        if unknown and not any(p.part is CertPart.SIGNATURE for p in self.problems):
            self.problem(CertPart.SIGNATURE, f"{_signature_name(cert)} is not supported")
        san, ca = self.read(
            CertPart.EXTENSIONS, _extension_facts, lambda lc: (lc.dns_names, lc.is_ca)
        )
        serial = quiet(lambda: cert.serial_number)
        if serial <= 0:  # cryptography only warns, and will refuse such certificates one day
            self.problem(CertPart.SERIAL, "serial number is not positive (RFC 5280)")
        return CertFacts(
            der=self.der,
            subject=subject,
            issuer=issuer,
            serial=_serial(serial),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256=hashlib.sha256(self.der).hexdigest(),
            dns_names=san,
            common_names=cns,
            key_type=key_type,
            key_bits=key_bits,
            signature_algorithm=_signature_name(cert),
            signature_hash=sig_hash,
            is_ca=ca,
            self_issued=subject == issuer,
            exchange_name=exchange,
            problems=_unique(self.problems),
        )


def _subject_name(cert: x509.Certificate) -> x509.Name | None:
    return cert.subject


def _issuer_name(cert: x509.Certificate) -> x509.Name | None:
    return cert.issuer


def _none(_: lenient.LenientCertificate) -> None:
    return None


def _rfc4514(name: x509.Name | None, fallback: str | None) -> str:
    return name.rfc4514_string() if name is not None else (fallback or UNREADABLE)


def _common_names(name: x509.Name) -> tuple[str, ...]:
    return tuple(str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME))


def _extension_facts(cert: x509.Certificate) -> tuple[tuple[str, ...], bool]:
    """SAN dNSNames and the CA flag; raises when the extensions cannot be read at all."""
    cert.extensions  # noqa: B018 -- parses every extension: a duplicate raises here
    return dns_names(cert), is_ca(cert)


def _no_key() -> tuple[str, int]:
    return "unknown", 0


def _unique(problems: list[CertProblem]) -> tuple[CertProblem, ...]:
    # Several fields of one part (subject, CN, Exchange name) fail for the same reason.
    return tuple(dict.fromkeys(problems))


def _hash_name(cert: x509.Certificate) -> str | None:
    algorithm = cert.signature_hash_algorithm
    return algorithm.name if algorithm is not None else None


def _serial(serial: int) -> str:
    return f"{serial:X}" if serial >= 0 else f"-{-serial:X}"


def _lenient_facts(der: bytes, error: str) -> CertFacts:
    """Facts of DER `cryptography` cannot load at all: what the lenient reader finds."""
    found = lenient.read_certificate(der)
    problems = [CertProblem(CertPart.ENCODING, error)]
    problems += [
        CertProblem(CertPart(part), detail)
        for part, details in found.notes.items()
        for detail in details
    ]
    if (found.not_before is None or found.not_after is None) and "validity" not in found.notes:
        problems.append(CertProblem(CertPart.VALIDITY, "validity dates cannot be read"))
    subject, issuer = found.subject or UNREADABLE, found.issuer or UNREADABLE
    key_type, key_bits = _lenient_key(found.spki)
    oid = found.signature_oid or UNREADABLE
    return CertFacts(
        der=der,
        subject=subject,
        issuer=issuer,
        serial=_serial(found.serial) if found.serial is not None else UNREADABLE,
        not_before=found.not_before or UNREADABLE_TIME,
        not_after=found.not_after or UNREADABLE_TIME,
        sha256=hashlib.sha256(der).hexdigest(),
        dns_names=found.dns_names,
        common_names=found.common_names,
        key_type=key_type,
        key_bits=key_bits,
        signature_algorithm=_oid_name(oid),
        signature_hash=None,
        is_ca=found.is_ca,
        self_issued=found.subject is not None and subject == issuer,
        exchange_name=f"<I>{issuer}<S>{subject}",
        problems=_unique(problems),
    )


def _lenient_key(spki: bytes | None) -> tuple[str, int]:
    if spki is None:
        return _no_key()
    try:
        return _describe(load_der_public_key(spki))
    except READ_ERRORS:
        return _no_key()


_HASHLESS = frozenset({SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448})
"""Signature algorithms without a separate hash; every other one without a hash is unknown."""

_SIGNATURE_NAMES = {
    "1.2.643.7.1.1.3.2": "GOST R 34.10-2012 with Streebog-256",
    "1.2.643.7.1.1.3.3": "GOST R 34.10-2012 with Streebog-512",
    "1.2.643.2.2.3": "GOST R 34.10-2001 with GOST R 34.11-94",
    "1.2.156.10197.1.501": "SM2 with SM3",
}
"""Signature algorithms `cryptography` does not name; named here so the report is legible."""


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except READ_ERRORS:
        # A malformed SAN extension is reported as "no SAN" rather than aborting the report.
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def common_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except READ_ERRORS:
        return ()
    return tuple(str(a.value) for a in attrs)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, *READ_ERRORS):
        return False


def key_description(cert: x509.Certificate) -> tuple[str, int]:
    try:
        key = cert.public_key()
    except READ_ERRORS:
        return _no_key()
    return _describe(key)


def _describe(key: object) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return "unknown", 0


def _signature_name(cert: x509.Certificate) -> str:
    return _oid_name(cert.signature_algorithm_oid.dotted_string)


def _oid_name(dotted: str) -> str:
    try:
        name = getattr(x509.ObjectIdentifier(dotted), "_name", None)
    except ValueError:
        return dotted
    if name and name != "Unknown OID":
        return str(name)
    return _SIGNATURE_NAMES.get(dotted, dotted)


def exchange_name(cert: x509.Certificate) -> str:
    """Exchange's `<I>issuer<S>subject` form (Set-SendConnector -TlsCertificateName).

    Exchange writes distinguished names most-specific first with ", " separators
    (CN=R3, O=Let's Encrypt, C=US), which is the RFC 4514 order.
    """
    return exchange_name_of(cert.issuer, cert.subject)


def exchange_name_of(issuer: x509.Name, subject: x509.Name) -> str:
    return f"<I>{_exchange_dn(issuer)}<S>{_exchange_dn(subject)}"


def _exchange_dn(name: x509.Name) -> str:
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(list(name.rdns)))


@functools.lru_cache(maxsize=4096)
def extended_key_usages(der: bytes) -> frozenset[str] | None:
    """Dotted OIDs of the certificate's EKU; None when the extension is absent (any use
    allowed)."""
    try:
        extension = load(der).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return None
    except (*READ_ERRORS, CertificateParseError):
        # Unparseable, or extensions that cannot be read (one twice): allows nothing a
        # verifier can rely on.
        return frozenset()
    return frozenset(oid.dotted_string for oid in extension.value)


def issuing_organization(der: bytes) -> str:
    """The organization of the certificate's issuer (`O=…, C=…`, C where present): what two
    sibling intermediates of one CA share (Let's Encrypt's R10 and R11). "" when the issuer
    names no organization or cannot be read."""
    try:
        issuer = load(der).issuer
        organizations = issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        countries = issuer.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    except (*READ_ERRORS, CertificateParseError):
        return ""
    if not organizations:
        return ""
    # A Name of the organization and country alone, so it is written as names are.
    return x509.Name([*organizations, *countries]).rfc4514_string()

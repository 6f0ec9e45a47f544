"""Frozen result types and the closed enums that cross module boundaries.

Everything a probe learns is expressed here as immutable values: the endpoint that was probed
(`Endpoint`), what the transport captured (`Capture`), the parsed facts of each certificate
(`CertFacts`), the verdicts (`Check`) and the whole `ProbeResult`.  Failure text never becomes a
metric label: only the `Reason` tokens do, and they are a closed set.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TypeAlias


class Status(enum.IntEnum):
    """Nagios-style status; the integer is both the exit code and the metric value."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Reason(enum.StrEnum):
    """Why no healthy TLS session was seen. The only failure text that becomes a label value."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    DNS = "dns"
    THROTTLED = "throttled"
    NO_STARTTLS = "no_starttls"
    STARTTLS_REJECTED = "starttls_rejected"
    TLS_HANDSHAKE = "tls_handshake"
    PROTOCOL = "protocol"
    UNREACHABLE = "unreachable"

    @property
    def status(self) -> Status:
        """UNKNOWN when nothing about the endpoint's TLS could be learnt, else CRITICAL."""
        return Status.UNKNOWN if self in _OUTSIDE_TLS else Status.CRITICAL


_OUTSIDE_TLS = frozenset(
    {Reason.REFUSED, Reason.TIMEOUT, Reason.DNS, Reason.THROTTLED, Reason.UNREACHABLE}
)

# Reasons worth retrying: the next attempt may well see a certificate.
TRANSIENT_REASONS = frozenset({Reason.REFUSED, Reason.TIMEOUT, Reason.DNS, Reason.THROTTLED})


class CanaryReason(enum.StrEnum):
    """Why a send-side canary failed: the only canary failure text that becomes a label."""

    SUBMIT_UNREACHABLE = "submit_unreachable"
    SUBMIT_TIMEOUT = "submit_timeout"
    SUBMIT_TLS = "submit_tls"
    SUBMIT_AUTH = "submit_auth"
    SUBMIT_REFUSED = "submit_refused"
    MISSING = "missing"
    """Submitted, but not received before its deadline (the relay's routing or TLS broke)."""


IMPLICIT_TLS_PORT = 465
"""Submissions (RFC 8314): the one port where TLS starts at connect unless told otherwise."""


class Mode(enum.StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"

    @classmethod
    def for_port(cls, port: int) -> Mode:
        """The mode a port implies when none is configured: implicit TLS on 465 only."""
        return cls.IMPLICIT if port == IMPLICIT_TLS_PORT else cls.STARTTLS


class CheckName(enum.StrEnum):
    """Every check a result may carry, in report order. `expected_certificate` only when pinned,
    `certificate_format` only when a certificate could not be read strictly."""

    STARTTLS = "starttls"
    TLS_VERSION = "tls_version"
    CERTIFICATE_FORMAT = "certificate_format"
    CHAIN_TRUSTED = "chain_trusted"
    NOT_EXPIRED = "not_expired"
    HOSTNAME = "hostname"
    CERTIFICATE_DOMAIN = "certificate_domain"
    ACCEPTED_DOMAIN = "accepted_domain"
    KEY_STRENGTH = "key_strength"
    SIGNATURE_ALGORITHM = "signature_algorithm"
    EXPECTED_CERTIFICATE = "expected_certificate"
    CLIENT_AUTH_EKU = "client_auth_eku"
    """Send side only: the leaf a relay sends with allows TLS client authentication."""
    SAME_AS_SERVER = "same_as_server"
    """Send side only: the relay sends with the certificate it serves."""
    DANE = "dane"
    """Only when the host publishes TLSA records (and DANE was asked for)."""
    MTA_STS = "mta_sts"
    """Only when the host's policy domain publishes an MTA-STS policy (and it was asked for)."""


CHECK_NAMES: tuple[CheckName, ...] = (*tuple(CheckName)[:11], CheckName.DANE, CheckName.MTA_STS)
"""The checks of a server probe, in report order (each has its runbook heading in the README);
`dane` and `mta_sts` only where DNS policies apply."""


class ChainReason(enum.StrEnum):
    """Why `chain_trusted` failed: the `reason` label of `tlsprobe_chain_untrusted_info`."""

    SELF_SIGNED = "self_signed"
    UNKNOWN_ROOT = "unknown_root"
    INTERMEDIATE_MISSING = "intermediate_missing"
    INTERMEDIATE_EXPIRED = "intermediate_expired"
    LEAF_EXPIRED = "leaf_expired"
    NOT_YET_VALID = "not_yet_valid"
    MALFORMED = "malformed"
    """A certificate that cannot be parsed, or whose signature algorithm or extensions the
    verifier refuses (see the `certificate_format` check)."""
    INVALID = "invalid"
    NO_CERTIFICATE = "no_certificate"
    """Send side only: the relay negotiated TLS without presenting a client certificate."""


class Phase(enum.StrEnum):
    """Where a probe spent its time: the `phase` label of `tlsprobe_probe_duration_seconds`."""

    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    TOTAL = "total"


PHASES: tuple[Phase, ...] = tuple(Phase)


EndpointKey: TypeAlias = tuple[str, str, str, str, int]
"""(tenant, target, host, address, port): one probed endpoint, wherever it is kept (latest
results, history, logs); address is "" when unknown. As metric labels, the port is its text."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One thing to connect to: the name checked, and where and how to connect."""

    host: str
    """Host name the certificate is judged against (an IP literal skips the hostname check)."""
    port: int = 25
    mode: Mode = Mode.STARTTLS
    address: str | None = None
    """IP to connect to; None means resolve `host`."""
    sni: str | None = None
    """Server name sent in the ClientHello; None sends none (IP literals never get one)."""
    ehlo_name: str = "localhost"
    target: str = ""
    """Configured target name (the `target` metric label); defaults to host."""

    @property
    def name(self) -> str:
        return self.target or self.host


@dataclass(frozen=True, slots=True)
class Policy:
    """What the certificate is judged against. Pure data; no trust store here."""

    certificate_domain: str | None = None
    """Connector TlsSenderCertificateName: literal name or `*.domain`."""
    accepted_domains: tuple[str, ...] = ()
    warn_days: float = 21.0
    crit_days: float = 7.0
    expected: tuple[str, ...] = ()
    """Pinned certificates: SHA-256 fingerprints (hex) or `<I>issuer<S>subject` strings."""


@dataclass(frozen=True, slots=True)
class ProbeError:
    kind: Reason
    message: str


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    """As OpenSSL names it: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3."""
    cipher: str


@dataclass(frozen=True, slots=True)
class Capture:
    """What the transport saw. `chain_der` is in the order the server sent it (leaf first)."""

    address: str | None
    chain_der: tuple[bytes, ...] = ()
    tls: TlsInfo | None = None
    error: ProbeError | None = None
    starttls_offered: bool | None = None
    """None for implicit TLS or when the dialogue ended before EHLO."""
    phases: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Seconds per step: every `Phase` reached, plus the SMTP client's other steps by name."""
    transcript: tuple[str, ...] = ()
    """SMTP dialogue, `C: ` / `S: ` prefixed, for /probe?debug=true and --verbose."""


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


@dataclass(frozen=True, slots=True)
class Check:
    name: CheckName
    status: Status
    message: str
    symptom: str = ""
    """What Exchange Online does when this check fails (empty when ok or not applicable)."""
    reason: ChainReason | None = None
    """Why chain_trusted failed (the metric label); None for every other outcome."""


_NO_PHASES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's verdict. `chain` is reported whatever the verdict."""

    endpoint: Endpoint
    address: str | None
    started_at: float
    """Unix time the probe began."""
    status: Status
    error: ProbeError | None
    tls: TlsInfo | None
    chain: tuple[CertFacts, ...]
    checks: tuple[Check, ...]
    phases: Mapping[str, float]
    transcript: tuple[str, ...] = ()
    dane: DaneFindings | None = None
    """The TLSA lookup and each record's verdict, when DANE was asked for."""

    @classmethod
    def failed(
        cls,
        endpoint: Endpoint,
        error: ProbeError,
        *,
        started_at: float,
        address: str | None = None,
        tls: TlsInfo | None = None,
        chain: tuple[CertFacts, ...] = (),
        checks: tuple[Check, ...] = (),
        phases: Mapping[str, float] = _NO_PHASES,
        transcript: tuple[str, ...] = (),
    ) -> ProbeResult:
        """A failed probe: its status is the one the error's reason implies. `chain` is what the
        server sent before the failure, if anything (reported, never judged)."""
        return cls(
            endpoint=endpoint,
            address=address,
            started_at=started_at,
            status=error.kind.status,
            error=error,
            tls=tls,
            chain=chain,
            checks=checks,
            phases=phases,
            transcript=transcript,
        )

    @property
    def success(self) -> bool:
        """A TLS session was established and a chain captured."""
        return self.tls is not None and bool(self.chain)

    @property
    def leaf(self) -> CertFacts | None:
        return self.chain[0] if self.chain else None

    def check(self, name: CheckName | str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def o365_ready(self) -> bool:
        """See `o365_ready`: derived from the checks, so it cannot disagree with them."""
        return o365_ready(self.checks)


def is_ip_literal(text: str) -> bool:
    """An IPv4 or IPv6 address (no brackets, no port)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostPortError(ValueError):
    """A HOST[:PORT] string that cannot be parsed."""


def parse_host_port(value: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [v6] or [v6]:PORT. A bare IPv6 literal has no port."""
    value = value.strip()
    port: str | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise HostPortError(f"cannot parse {value!r}: expected [IPv6]:PORT")
        port = rest[1:] or None
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host = value
    if not host or any(c.isspace() for c in host):
        raise HostPortError(f"invalid host {value!r}")
    if port is None:
        return host, None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise HostPortError(f"invalid port {port!r}: must be 1-65535")
    return host, int(port)


O365_RULES = (
    CheckName.STARTTLS,
    CheckName.TLS_VERSION,
    CheckName.CHAIN_TRUSTED,
    CheckName.NOT_EXPIRED,
    CheckName.CERTIFICATE_DOMAIN,
    CheckName.ACCEPTED_DOMAIN,
)
"""The checks that carry Exchange Online's connector rules (a TLS session on 1.2+, a trusted
full chain, nothing expired, the connector name matched inside an accepted domain)."""


def o365_ready(checks: Iterable[Check]) -> bool:
    """Ready for a certificate-based connector: the one rule every output reads.

    True only when every connector rule holds (`O365_RULES` ok, except that `not_expired` may
    be a warning: the certificate is valid, just due for renewal) **and** no check at all is
    critical, so a 1024-bit key or a SHA-1 signature, or any check added later, clears it. A
    warning elsewhere (a CN-only name, a missing clientAuth EKU) does not.
    """
    statuses: dict[CheckName, Status] = {}
    for check in checks:
        if check.status is Status.CRITICAL:
            return False
        statuses[check.name] = check.status
    return all(
        statuses.get(name) is Status.OK
        or (name is CheckName.NOT_EXPIRED and statuses.get(name) is Status.WARNING)
        for name in O365_RULES
    )


def overall_status(checks: tuple[Check, ...] | list[Check]) -> Status:
    """Critical if any check is critical, else warning if any is warning, else ok.

    A check that could not be determined (unknown) does not make the whole result unknown:
    UNKNOWN overall is reserved for "no certificate could be seen".
    """
    worst = Status.OK
    for check in checks:
        if check.status in (Status.CRITICAL, Status.WARNING) and check.status > worst:
            worst = check.status
    return worst


# --- DNS policies (DANE, MTA-STS) ----------------------------------------------------------


class DnssecStatus(enum.StrEnum):
    """What a validating resolver said about an answer (RFC 4035 terms, Postfix style)."""

    SECURE = "secure"
    """The resolver set the AD bit: the answer validated."""
    INSECURE = "insecure"
    """No AD bit: the zone is unsigned (or the resolver does not validate)."""
    BOGUS = "bogus"
    """SERVFAIL from the validating resolver: signatures failed (a sender defers the mail)."""
    FAILED = "failed"
    """No answer at all (timeout, unreachable resolver): nothing could be judged."""


class TlsaMatch(enum.StrEnum):
    """How one TLSA record relates to the chain served."""

    MATCHED = "matched"
    NEXT_KEY = "next_key"
    """A `3 1 x` record that matches no served key: the staged next key of a rollover."""
    NO_MATCH = "no_match"
    UNUSABLE = "unusable"
    """Usage 0/1 (PKIX, unusable for SMTP), unknown parameters, or malformed data."""


@dataclass(frozen=True, slots=True, order=True)
class Tlsa:
    """One TLSA record (RFC 6698): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def text(self) -> str:
        """Presentation form, `3 1 1 ab12...`, as in a zone file."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex() or '-'}"


@dataclass(frozen=True, slots=True)
class TlsaVerdict:
    record: Tlsa
    match: TlsaMatch
    note: str
    """Why: which certificate matched, or why the record is unusable."""


@dataclass(frozen=True, slots=True)
class DaneFindings:
    """The TLSA lookup of one endpoint and each record's verdict against the chain served."""

    name: str
    """The TLSA owner asked (`_25._tcp.mx.example`)."""
    status: DnssecStatus
    """Of the TLSA answer (or of the denial of existence when there are no records)."""
    mx_status: DnssecStatus | None
    """Of the MX lookup that named this host; None when the host was configured directly."""
    records: tuple[TlsaVerdict, ...]
    detail: str = ""
    """The resolver's words on a failure (extended DNS error when one was given)."""

    @property
    def applicable(self) -> bool:
        """DANE applies: TLSA records exist (judged or not)."""
        return bool(self.records)

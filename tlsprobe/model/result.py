"""What the transport captured, the checks, and the whole `ProbeResult` with the one rule
(`o365_ready`) and the one status roll-up (`overall_status`) every output reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tlsprobe.model.certs import CertFacts
from tlsprobe.model.dane import DaneFindings
from tlsprobe.model.endpoint import Endpoint
from tlsprobe.model.enums import ChainReason, CheckName, Reason, Status


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
    def judged(
        cls,
        endpoint: Endpoint,
        captured: Capture,
        *,
        started_at: float,
        chain: tuple[CertFacts, ...],
        checks: tuple[Check, ...],
    ) -> ProbeResult:
        """A probe whose chain was judged: its status is the worst of its checks."""
        return cls(
            endpoint=endpoint,
            address=captured.address,
            started_at=started_at,
            status=overall_status(checks),
            error=None,
            tls=captured.tls,
            chain=chain,
            checks=checks,
            phases=captured.phases,
            transcript=captured.transcript,
        )

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


_UNKNOWN_MAY_BLOCK = frozenset({CheckName.DANE})
"""Checks whose unknown may hide an outage: a TLSA lookup that fails (timeout, unreachable
authority) is no denial of existence, and validating senders that see the same failure defer
mail (RFC 7672 2.1.1). The other unknowns are "not judged" by configuration (`hostname` of an
IP literal, Office 365 checks without domains) or leave mail flowing (`mta_sts` unusable:
senders deliver without MTA-STS or keep their cached policy)."""


def overall_status(checks: tuple[Check, ...] | list[Check]) -> Status:
    """Critical if any check is critical, else warning if any is warning, else unknown if a
    check whose unknown may hide an outage is unknown (`dane`), else ok.

    Any other check that could not be determined does not make the whole result unknown.
    """
    worst = Status.OK
    for check in checks:
        if check.status in (Status.CRITICAL, Status.WARNING) and check.status > worst:
            worst = check.status
    if worst is Status.OK and any(
        c.status is Status.UNKNOWN and c.name in _UNKNOWN_MAY_BLOCK for c in checks
    ):
        return Status.UNKNOWN
    return worst

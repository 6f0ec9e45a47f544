"""What the transport captured, the checks, and the whole `ProbeResult` with the one rule
(`o365_ready`) and the one status roll-up (`overall_status`) every output reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tlsprobe.model.certs import CertFacts
from tlsprobe.model.dane import DaneFindings
from tlsprobe.model.endpoint import ConnectorRef, Endpoint
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
    connector: ConnectorRef | None = None
    """The Exchange Online connector `o365_ready` speaks for; None where nobody said."""

    @classmethod
    def judged(
        cls,
        endpoint: Endpoint,
        captured: Capture,
        *,
        started_at: float,
        chain: tuple[CertFacts, ...],
        checks: tuple[Check, ...],
        connector: ConnectorRef | None = None,
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
            connector=connector,
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

    @property
    def o365_failing(self) -> tuple[CheckName, ...]:
        """The connector rules (see `o365_ready`) that do not hold: what outputs name."""
        return o365_failing(self.checks)

    @property
    def readiness(self) -> str:
        """`ready for the outbound connector 'X' (TlsSettings ...)`, or `NOT ready for ...:
        RULES fails`: the line the text report, the status page and the detail view show."""
        ref = self.connector
        which = f"the {ref.describe()}" if ref is not None else "a certificate-based connector"
        if self.o365_ready:
            return f"ready for {which}"
        failing = ", ".join(self.o365_failing)
        return f"NOT ready for {which}" + (f": {failing} fails" if failing else "")


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


OUTBOUND_RULES = (CheckName.STARTTLS, CheckName.TLS_VERSION, CheckName.OUTBOUND_CONNECTOR)
"""The checks that carry an outbound connector's rules (its `TlsSettings` and `TlsDomain` are
judged by `outbound_connector`, which weighs the chain and the expiry as they demand)."""

_OUTBOUND_SET_ASIDE = frozenset(
    {
        CheckName.HOSTNAME,
        CheckName.CERTIFICATE_DOMAIN,
        CheckName.ACCEPTED_DOMAIN,
        CheckName.CHAIN_TRUSTED,
        CheckName.NOT_EXPIRED,
        CheckName.DANE,
        CheckName.MTA_STS,
    }
)
"""Checks an outbound connector does not judge (the inbound connector's name rules, other
senders' host-name rules) or judges through `outbound_connector` (the chain, the expiry)."""


def o365_ready(checks: Iterable[Check]) -> bool:
    """Ready for the connector that governs the direction: the one rule every output reads.

    Where an `outbound_connector` check is present (an outbound connector routes to the
    server), its rules are `OUTBOUND_RULES`; elsewhere (the inbound, OnPremises connector's
    rules) `O365_RULES`. True only when every rule holds (`not_expired` may be a warning: the
    certificate is valid, just due for renewal) **and** no check is critical, so a 1024-bit key
    or a SHA-1 signature, or any check added later, clears it; for an outbound connector the
    checks it does not judge are set aside. A warning elsewhere (a CN-only name, a missing
    clientAuth EKU) does not clear it.
    """
    return not o365_failing(checks)


def o365_failing(checks: Iterable[Check]) -> tuple[CheckName, ...]:
    """The checks that keep `o365_ready` false, in report order; empty when ready."""
    checks = tuple(checks)
    statuses = {check.name: check.status for check in checks}
    outbound = CheckName.OUTBOUND_CONNECTOR in statuses
    rules = OUTBOUND_RULES if outbound else O365_RULES
    aside = _OUTBOUND_SET_ASIDE if outbound else frozenset()
    failing = [
        name
        for name in rules
        if not (
            statuses.get(name) is Status.OK
            or (name is CheckName.NOT_EXPIRED and statuses.get(name) is Status.WARNING)
        )
    ]
    failing += [
        c.name
        for c in checks
        if c.status is Status.CRITICAL and c.name not in aside and c.name not in failing
    ]
    return tuple(failing)


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

"""The published states: what the exporter knows of each endpoint and each sender right now.

The scheduler and the send side publish these immutable values; the renderer (`exposition`), the
pages and the last results on disk read them. They live here, apart from all of those, so that
none of them imports another to get a dataclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tlsprobe.exporter.history.store import Drift
from tlsprobe.model import CanaryReason, Check, CheckName, EndpointKey, ProbeResult, Status
from tlsprobe.probe.smtp.reply import MESSAGE_CHARS, clip
from tlsprobe.probe.software import MailServer, identify

if TYPE_CHECKING:  # the configuration's types only: reading states needs no config parser
    from tlsprobe.exporter.config import TargetConfig
    from tlsprobe.exporter.config.send import SenderConfig

__all__ = [
    "SENDER_TARGET",
    "CanaryState",
    "EndpointState",
    "ResultKey",
    "SenderState",
    "attributed",
    "result_key",
]

SENDER_TARGET = "sender:"
"""The target column of a sender's rows in the drift history and the last results."""
ResultKey = tuple[str, str, str, str, str]
"""A sender's row in the last results (`lastresults`): tenant, `sender:NAME`, NAME, "", ""."""


def result_key(sender: SenderConfig) -> ResultKey:
    """The row of a sender's last verdict: one per sender, whichever node sent last."""
    return (sender.tenant, f"{SENDER_TARGET}{sender.name}", sender.name, "", "")


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What is known of one endpoint right now: its latest result and its drift history."""

    tenant: str
    target: str
    result: ProbeResult
    drift: Drift | None = None
    interval: float = 0.0
    connector: tuple[str, str] = ("", "")
    """The target's certificate domain and accepted domains (comma-joined); "" when unset."""
    labels: tuple[tuple[str, str], ...] = ()
    """The target's configured labels (`TargetConfig.labels`)."""
    issuer_bound: bool = False
    """A connector names this certificate by its issuer, so another intermediate of the same
    CA is a risky change: the target's `issuer_bound`, else whether the server is Exchange."""

    @property
    def key(self) -> EndpointKey:
        endpoint = self.result.endpoint
        address = self.result.address or endpoint.address or ""
        return (self.tenant, self.target, endpoint.host, address, endpoint.port)

    @property
    def label_values(self) -> tuple[str, ...]:
        tenant, target, host, address, port = self.key
        return (tenant, target, host, address, str(port))


@dataclass(frozen=True, slots=True)
class CanaryState:
    """The latest canary outcome of a sender."""

    success: bool
    at: float
    round_trip: float | None = None
    reason: CanaryReason | None = None
    message: str = ""
    """One printable line of at most `MESSAGE_CHARS`: clipped here, whether it comes from a
    canary's outcome or from disk (the status page shows it)."""
    last_success_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", clip(self.message, MESSAGE_CHARS))


@dataclass(frozen=True, slots=True)
class SenderState:
    """What is known of one sender now: its latest judged session and canary."""

    sender: SenderConfig
    result: ProbeResult | None = None
    drift: Drift | None = None
    sessions: int = 0
    canary: CanaryState | None = None
    canary_failures: tuple[tuple[CanaryReason, int], ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()
    """(address, leaf SHA-256) each address of the sender presented last (`presented`)."""
    canaries: tuple[CanaryState, ...] = ()
    """The latest canary outcomes, newest last (at most `CANARY_HISTORY` of `senders`; since
    start)."""

    @property
    def status(self) -> Status:
        """The sender as the pages show it: its client certificate's verdict, and critical
        while its last canary failed (mail through the relay is probably stuck)."""
        if self.canary is not None and not self.canary.success:
            return Status.CRITICAL
        return self.result.status if self.result is not None else Status.UNKNOWN


def state_for(target: TargetConfig, result: ProbeResult) -> EndpointState:
    """A result of `target` as published: with its interval and connector policy."""
    policy = target.policy
    connector = (policy.certificate_domain or "", ",".join(policy.accepted_domains))
    bound = target.issuer_bound
    if bound is None:
        # Exchange's TlsCertificateName ("<I>issuer<S>subject") names the issuer.
        bound = identify(result.transcript) is MailServer.EXCHANGE
    return EndpointState(
        target.tenant,
        target.name,
        result,
        interval=target.interval,
        connector=connector,
        labels=target.labels,
        issuer_bound=bound,
    )


CROSS_TENANT_SYMPTOM = (
    "Exchange Online attributes mail on an OnPremises inbound connector by the client "
    "certificate's domain first (MC1226222): this tenant's mail may be attributed to the other "
    "tenant (delivered into it) or refused with 550 5.7.64 TenantAttribution"
)
MAX_CROSS_TENANT_MESSAGES = 3
"""Findings quoted in one `cross_tenant` check's message; the rest are counted."""


def attributed(result: ProbeResult, messages: Sequence[str]) -> ProbeResult:
    """`result` with a critical `cross_tenant` check carrying `messages` (the cross-tenant
    findings that name its certificate, each naming the other tenant and the fix): the
    status, `check_status`, `o365_ready` and every page follow from the checks, as for any
    other failing check. Unchanged without messages."""
    if not messages:
        return result
    quoted = "; ".join(messages[:MAX_CROSS_TENANT_MESSAGES])
    more = len(messages) - MAX_CROSS_TENANT_MESSAGES
    if more > 0:
        quoted += f"; and {more} more finding{'s' if more > 1 else ''}"
    check = Check(CheckName.CROSS_TENANT, Status.CRITICAL, quoted, CROSS_TENANT_SYMPTOM)
    kept = tuple(c for c in result.checks if c.name is not CheckName.CROSS_TENANT)
    return replace(result, checks=(*kept, check), status=Status.CRITICAL)

"""DANE and MTA-STS for the exporter: judge each probe result against its DNS policies.

A target with `dane` gets its TLSA records looked up through the validating resolver of the
`dns:` section (the one discovery uses) beside every probe, judged when the probe captured a
chain; the lookups start with the probe and end by the target's timeout, so one deadline
covers the probe and its policies (`/probe` within the scrape's timeout); a target with
an `mta_sts_domain` gets the `mta_sts` check from that domain's policy, fetched at most once per
target interval per domain (senders cache it for `max_age`, so refetching each probe would only
load the policy server). The policy host `mta-sts.DOMAIN` is resolved through that same
resolver. Per domain, the exporter keeps what the metrics show (mode, `max_age`, fetch success,
when the id last changed) and records TLSA and policy changes in the policy history. A domain
that left the configuration is forgotten, so the state stays bounded; a reload that changes the
`dns:` section gets a new resolver for the lookups that follow.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tlsprobe.exporter.config import Config, DnsSettings, TargetConfig
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.exporter.history.policies import POLICY_HISTORY_FILE, PolicyHistory
from tlsprobe.model import DaneFindings, Endpoint, ProbeResult
from tlsprobe.probe import policies
from tlsprobe.probe.dns import dnssec, mtasts
from tlsprobe.probe.dns.dane import TlsaAnswer
from tlsprobe.probe.dns.mtasts_fetch import FetchSettings

log = logging.getLogger("tlsprobe.exporter.dnspolicies")


@dataclass(frozen=True, slots=True)
class DomainState:
    """What `/metrics` shows of one policy domain."""

    policy: mtasts.DomainPolicy
    fetched_at: float
    id_changed_at: float
    """Unix time the TXT id was first seen with its current value (0 when none)."""


@dataclass(frozen=True, slots=True)
class MtaStsSample:
    """What `/metrics` shows of one policy domain that announces a policy."""

    fetched: bool
    mode: str | None
    max_age: float | None
    id_changed_at: float


def open_history(state_dir: Path) -> PolicyHistory | None:
    """The policy history beside the certificate history; None (logged) when it cannot open:
    losing the history must not stop the probes."""
    try:
        return PolicyHistory(state_dir / POLICY_HISTORY_FILE)
    except sqlite3.Error as exc:
        log.error("policy history unavailable: %s", exc)
        return None


class DnsPolicies:
    def __init__(
        self,
        config: Config,
        *,
        history: PolicyHistory | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domains: dict[str, DomainState] = {}
        self.published: dict[str, MtaStsSample] = {}
        """The per-domain metrics (`samples`), kept in step with `domains`; bounded by the
        configuration's domains."""
        self._history = history
        self._wall, self._clock = wall, clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._dns: DnsSettings | None = None
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Forget domains no target names any more (bounded state across reloads); a changed
        `dns:` section takes effect from the next lookup on."""
        if config.dns != self._dns:
            self._resolver = dnssec.make_validating_resolver(
                config.dns.nameservers, port=config.dns.port, timeout=config.dns.timeout
            )
            self._dns = config.dns
        wanted = {t.mta_sts_domain for t in config.targets if t.mta_sts_domain}
        for domain in [d for d in self.domains if d not in wanted]:
            del self.domains[domain]
        for domain in [d for d in self.published if d not in wanted]:
            del self.published[domain]
        self._locks = {d: self._locks.get(d) or asyncio.Lock() for d in wanted}

    def samples(self) -> Iterator[Sample]:
        """The MTA-STS series per policy domain, read at scrape time from another thread (the
        exporter registry collects them): the dict is copied in one step."""
        for domain, sample in sorted(dict(self.published).items()):
            yield "tlsprobe_mta_sts_fetch_success", (domain,), 1.0 if sample.fetched else 0.0
            if sample.mode is not None:
                yield "tlsprobe_mta_sts_policy_info", (domain, sample.mode), 1.0
            if sample.max_age is not None:
                yield "tlsprobe_mta_sts_max_age_seconds", (domain,), sample.max_age
            if sample.id_changed_at:
                yield (
                    "tlsprobe_mta_sts_id_change_timestamp_seconds",
                    (domain,),
                    sample.id_changed_at,
                )

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None

    async def judge(
        self, target: TargetConfig, endpoint: Endpoint, probe: Awaitable[ProbeResult]
    ) -> ProbeResult:
        """The probe's result with the `dane` and `mta_sts` checks its target asks for. The
        lookups run beside the probe, from its start, and end by the target's timeout (one
        deadline for the probe and its policies); they are dropped when no chain was seen."""
        if not (target.dane or target.mta_sts_domain):
            return await probe
        lookups = asyncio.ensure_future(self._lookups(target, endpoint))
        try:
            result = await probe
        except BaseException:
            lookups.cancel()
            raise
        if not result.chain:
            lookups.cancel()  # nothing to judge them against
            return result
        dane, sts = await lookups
        if dane is not None:
            result = policies.add_dane(result, *dane, datetime.now(UTC))
            if result.dane is not None:
                self._record_tlsa(result.dane)
        return policies.add_mta_sts(result, sts)

    async def _lookups(
        self, target: TargetConfig, endpoint: Endpoint
    ) -> tuple[tuple[TlsaAnswer, policies.DaneContext] | None, mtasts.DomainPolicy | None]:
        dane, sts = await asyncio.gather(
            policies.lookup_dane(
                self._resolver, endpoint.host, endpoint.port, target.mx, timeout=target.timeout
            )
            if target.dane
            else policies.nothing(),
            self._domain_within(target, target.mta_sts_domain)
            if target.mta_sts_domain
            else policies.nothing(),
        )
        return dane, sts

    def _record_tlsa(self, findings: DaneFindings) -> None:
        # A failed or bogus lookup says nothing about the records: no drift from it.
        if self._history is None or findings.status.value in ("bogus", "failed"):
            return
        value = " | ".join(v.record.text for v in findings.records)
        if self._history.observe("tlsa", findings.name, value, self._wall()):
            log.warning("TLSA records changed", extra={"fields": {"name": findings.name}})

    async def _domain_within(self, target: TargetConfig, domain: str) -> mtasts.DomainPolicy:
        """The domain's policy, fresh or remembered, by the target's timeout (waiting for
        another endpoint's fetch of the same domain included)."""
        try:
            async with asyncio.timeout(target.timeout):
                return (await self._domain(target, domain)).policy
        except TimeoutError:
            what = "MTA-STS TXT lookup and policy fetch"
            return mtasts.DomainPolicy(
                domain, None, None, policies.past_deadline(what, target.timeout)
            )

    async def _domain(self, target: TargetConfig, domain: str) -> DomainState:
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            state = self.domains.get(domain)
            if state is not None and self._clock() - state.fetched_at < target.interval:
                return state
            fetch = FetchSettings(ca_file=target.ca_file)
            fresh = await policies.domain_policy(
                domain, self._resolver, fetch, timeout=target.timeout
            )
            return self._remember(domain, state, fresh)

    def _remember(
        self, domain: str, previous: DomainState | None, fresh: mtasts.DomainPolicy
    ) -> DomainState:
        now = self._wall()
        changed_at = now
        if previous is not None and previous.policy.policy_id == fresh.policy_id:
            changed_at = previous.id_changed_at
        finding = mtasts.compare(previous.policy if previous else None, fresh)
        if finding:
            log.warning("MTA-STS %s", finding, extra={"fields": {"domain": domain}})
        if self._history is not None and fresh.policy is not None:
            value = f"id={fresh.policy_id} {fresh.policy.mode} max_age={fresh.policy.max_age} "
            value += f"mx={','.join(fresh.policy.mx)} sha256={fresh.policy.sha256[:16]}"
            self._history.observe("mta_sts", domain, value, now)
        state = DomainState(fresh, self._clock(), changed_at if fresh.policy_id else 0.0)
        self.domains[domain] = state
        self._publish(domain, state)
        return state

    def _publish(self, domain: str, state: DomainState) -> None:
        policy = state.policy.policy
        if not state.policy.published:
            self.published.pop(domain, None)  # no policy: MTA-STS is not applicable
            return
        self.published[domain] = MtaStsSample(
            fetched=policy is not None,
            mode=policy.mode.value if policy else None,
            max_age=float(policy.max_age) if policy else None,
            id_changed_at=state.id_changed_at,
        )

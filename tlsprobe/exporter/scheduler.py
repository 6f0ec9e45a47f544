"""Periodic probes: one loop per target, interval plus jitter, bounded concurrency, politeness.

Each cycle a target re-resolves its endpoints (MX hosts and A/AAAA addresses, so endpoints
follow the zone), probes each one and publishes the result as soon as it is in. A global
semaphore bounds concurrent probes and a lock per address keeps at most one connection open to
any one server, because mail servers throttle scanners. Transient failures (timeout, refused,
421, DNS) are retried through tenacity, bounded in attempts and in time; a certificate verdict
is never retried. Time and sleep are injected so tests can drive the scheduler with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tenacity

from tlsprobe.exporter import mxguard
from tlsprobe.exporter.config import Config, TargetConfig
from tlsprobe.exporter.dnspolicies import DnsPolicies
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.exporter.history.store import Drift, HistoryStore
from tlsprobe.exporter.outcomes import OutcomeLog
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.state import EndpointState, state_for
from tlsprobe.model import (
    TRANSIENT_REASONS,
    Endpoint,
    EndpointKey,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
)
from tlsprobe.probe import policies
from tlsprobe.probe.dns import discover
from tlsprobe.probe.dns.hostsfile import HostsFile
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.transport.starttls import default_ehlo_name
from tlsprobe.probe.x509.evaluate import TrustStore

log = logging.getLogger("tlsprobe.exporter.scheduler")

ProbeFn = Callable[..., Awaitable[ProbeResult]]
Sleep = Callable[[float], Awaitable[None]]

JITTER = 0.1
DNS_RETRY_WAIT = 0.5
MIN_PROBE_SECONDS = 0.05
"""What a probe gets of a one-deadline cycle whose discovery took (nearly) all of it."""
"""Seconds before the first retry of a transient DNS failure; each next one waits this more."""
"""Each cycle's start moves by up to +/-10% of the interval, so probes spread out."""


@dataclass(frozen=True, slots=True)
class Job:
    """One endpoint of a target for one cycle."""

    target: TargetConfig
    endpoint: Endpoint
    failure: ProbeError | None = None
    """Set when discovery already failed: the job publishes this instead of probing."""


class Scheduler:
    def __init__(
        self,
        config: Config,
        *,
        results: LatestResults,
        history: HistoryStore | None = None,
        resolver: Any = None,
        dns_policies: DnsPolicies | None = None,
        probe: ProbeFn = probe_endpoint,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_publish: Callable[[EndpointState], None] | None = None,
        on_forget: Callable[[list[EndpointKey]], None] | None = None,
    ) -> None:
        self.results = results
        self._on_publish = on_publish
        self._on_forget = on_forget
        self.probes: dict[str, int] = {s.label: 0 for s in Status}
        """Probes completed by overall result."""
        self.retries: dict[str, int] = {r.value: 0 for r in sorted(TRANSIENT_REASONS)}
        """Every reason a retry can have, from zero: the series exist before the first retry."""
        self.mx_skipped: dict[tuple[str, str], int] = {}
        """MX-discovered addresses not probed, per (tenant, target)."""
        self.history = history
        self._probe = probe
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: dict[tuple[str, str], tuple[TargetConfig, asyncio.Task[None]]] = {}
        # Weak values: a lock lives while a probe holds or waits for it, so addresses that
        # left the zone or the configuration do not accumulate.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._trust: dict[str | None, TrustStore] = {}
        self._skipped: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self._outcomes = OutcomeLog()
        self.config = config
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._resolver = resolver or discover.make_resolver(
            config.dns.nameservers, port=config.dns.port, timeout=config.dns.timeout
        )
        self._hosts: HostsFile | None = None
        self._use_hosts_file(config)
        # DANE and MTA-STS, when the caller (the exporter) asks for them.
        self.dns_policies = dns_policies
        self.in_flight = 0
        self.max_in_flight = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.apply(self.config)

    def use_resolver(self, resolver: Any) -> None:
        """Discovery asks `resolver` from the next lookup on (a reload changed `dns:`)."""
        self._resolver = resolver

    def _use_hosts_file(self, config: Config) -> None:
        path = config.dns.hosts_file
        if path is None:
            self._hosts = None
        elif self._hosts is None or self._hosts.path != path:
            self._hosts = HostsFile(path)

    def apply(self, config: Config) -> None:
        """Bring the running loops in line with `config`: stop removed or changed targets."""
        if config.concurrency != self.config.concurrency:
            self._semaphore = asyncio.Semaphore(config.concurrency)
        self._use_hosts_file(config)
        self.config = config
        self._trust.clear()
        if self.dns_policies is not None:
            self.dns_policies.apply(config)
        wanted = {t.key: t for t in config.targets}
        for key, (target, task) in list(self._tasks.items()):
            if wanted.get(key) != target:
                task.cancel()
                del self._tasks[key]
                if key not in wanted:
                    self._forget(key)
        for key, target in wanted.items():
            if key not in self._tasks:
                task = asyncio.create_task(self._target_loop(target), name=f"target {key}")
                self._tasks[key] = (target, task)

    def samples(self) -> Iterator[Sample]:
        """The scheduler's numbers and the history's health, read at scrape time from another
        thread (the exporter registry collects them): each dict is copied in one step."""
        for status, count in dict(self.probes).items():
            yield "tlsprobe_probes", (status,), float(count)
        for reason, count in sorted(dict(self.retries).items()):
            yield "tlsprobe_retries", (reason,), float(count)
        for (tenant, target), count in sorted(dict(self.mx_skipped).items()):
            yield "tlsprobe_mx_addresses_skipped", (tenant, target), float(count)
        history = self.history
        writable, errors = (history.writable, history.write_errors) if history else (True, 0)
        yield "tlsprobe_state_writable", (), 1.0 if writable else 0.0
        yield "tlsprobe_state_write_errors", (), float(errors)
        yield "tlsprobe_targets_configured", (), float(len(self._tasks))

    async def stop(self, timeout: float = 2.0) -> None:
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._tasks.clear()
        if self.dns_policies is not None:
            self.dns_policies.close()

    def _forget(self, key: tuple[str, str]) -> None:
        for skipped in [k for k in self._skipped if k[:2] == key]:
            del self._skipped[skipped]
        self.mx_skipped.pop(key, None)
        removed = self.results.remove_target(*key)
        for endpoint in removed:
            self._outcomes.forget(endpoint)
        if self.history is not None:
            self.history.forget(removed)
        if self._on_forget is not None and removed:
            self._on_forget(removed)

    # --- the loop --------------------------------------------------------------------------

    async def _target_loop(self, target: TargetConfig) -> None:
        # Spread the first cycle over a tenth of the interval (at most 10 s) so a restart
        # does not hit every server at once, yet the first results arrive quickly.
        await self._sleep(self._rng.uniform(0, min(target.interval * JITTER, 10.0)))
        while True:
            started = self._clock()
            try:
                await self.run_cycle(target)
            except Exception:
                # A bug in one cycle must not end this target's monitoring for good.
                log.exception("probe cycle failed", extra={"fields": {"target": target.name}})
            elapsed = self._clock() - started
            jitter = self._rng.uniform(-JITTER, JITTER) * target.interval
            await self._sleep(max(target.interval - elapsed + jitter, 1.0))

    async def run_cycle(
        self, target: TargetConfig, *, one_deadline: bool = False
    ) -> list[EndpointState]:
        """Discover and probe every endpoint of `target` once; publish each result. With
        `one_deadline` (`/probe`), discovery, probe and policies all end by the target's
        timeout, counted from now."""
        jobs = await self._jobs_within(target, one_deadline)
        states = await asyncio.gather(*(self.run_job(job) for job in jobs))
        gone = self.results.retain(target.tenant, target.name, {s.key for s in states})
        for key in gone:
            self._outcomes.forget(key)
        if self.history is not None and gone:
            self.history.forget(gone)
        if self._on_forget is not None and gone:
            self._on_forget(gone)
        return list(states)

    async def probe_unpublished(
        self, target: TargetConfig, *, one_deadline: bool = False
    ) -> list[ProbeResult]:
        """Probe a target once without publishing (ad hoc /probe of an allowlisted host)."""
        jobs = await self._jobs_within(target, one_deadline)
        return list(await asyncio.gather(*(self.job_result(job) for job in jobs)))

    async def _jobs_within(self, target: TargetConfig, one_deadline: bool) -> list[Job]:
        """The cycle's jobs; with `one_deadline`, discovery ends by the target's timeout and
        each probe gets what is left of it (a scrape's /probe must answer before the scrape
        times out, whatever DNS does)."""
        if not one_deadline:
            return await self.jobs(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.timeout
        jobs = await self.jobs(target, deadline)
        left = max(deadline - loop.time(), MIN_PROBE_SECONDS)
        return [replace(job, target=replace(job.target, timeout=left)) for job in jobs]

    async def jobs(self, target: TargetConfig, deadline: float | None = None) -> list[Job]:
        """The cycle's endpoints; DNS trouble is a job that publishes its failure. Discovery
        ends by `deadline` (the loop's clock) when one is given."""
        base = Endpoint(
            host=target.host or target.mx or "",
            port=target.port,
            mode=target.mode,
            sni=target.sni,
            ehlo_name=target.ehlo_name or default_ehlo_name(),
            target=target.name,
        )
        if target.address:
            return [Job(target, replace(base, address=target.address))]
        if target.mx:
            mx = await self._retry_dns(
                target,
                lambda: discover.resolve_mx(target.mx or "", self._resolver),
                deadline,
                lambda error: discover.MxResult(
                    target.mx or "", (), False, False, error=error, transient=True
                ),
            )
            if mx.error is not None:
                return [Job(target, base, mx.error)]
            if mx.null_mx:
                error = ProbeError(Reason.DNS, f"{target.mx} has a null MX (RFC 7505): no mail")
                return [Job(target, base, error)]
            hosts = [h.host for h in mx.hosts]
        else:
            hosts = [base.host]
        jobs: list[Job] = []
        for host in hosts:
            jobs.extend(await self._host_jobs(target, replace(base, host=host), deadline))
        return jobs

    async def _host_jobs(
        self, target: TargetConfig, endpoint: Endpoint, deadline: float | None
    ) -> list[Job]:
        # A configured host is resolved as `tlsprobe check` resolves it: the hosts file, then
        # DNS. MX hosts come from DNS only, as senders resolve them.
        hosts = self._hosts if target.mx is None else None
        result = await self._retry_dns(
            target,
            lambda: discover.resolve_addresses(
                endpoint.host,
                self._resolver,
                which="one" if target.addresses == "one" else "all",
                hosts=hosts,
            ),
            deadline,
            lambda error: discover.AddressResult(endpoint.host, (), error=error, transient=True),
        )
        if result.error is not None:
            error = result.error
            if target.mx is None:
                error = replace(error, message=error.message + _resolution_hint(hosts))
            return [Job(target, endpoint, error)]
        addresses = list(result.addresses)
        if target.mx is not None:
            addresses, skipped = mxguard.split(addresses, target.networks)
            self._report_skipped(target, endpoint.host, skipped)
            if not addresses:
                error = ProbeError(
                    Reason.DNS,
                    f"{endpoint.host} resolves only to loopback, link-local or unspecified"
                    f" addresses ({', '.join(skipped)}): skipped; list them in the tenant's"
                    " networks to probe them",
                )
                return [Job(target, endpoint, error)]
        sni = endpoint.sni
        if target.mx is not None and target.sni is None and target.send_sni:
            sni = endpoint.host  # each discovered MX host is named in its own handshake
        return [Job(target, replace(endpoint, address=a, sni=sni)) for a in addresses]

    def _report_skipped(self, target: TargetConfig, host: str, skipped: list[str]) -> None:
        """Count skipped MX addresses per target and host; log when a host's set changes."""
        key = (target.tenant, target.name, host)
        previous = self._skipped.get(key, ())
        if tuple(skipped) != previous:
            if skipped:
                fields = {"tenant": target.tenant, "target": target.name, "host": host}
                fields["skipped"] = ",".join(skipped)
                log.warning(
                    "MX host resolves to loopback, link-local or unspecified addresses;"
                    " not probed (allow them with the tenant's networks)",
                    extra={"fields": fields},
                )
            self._skipped[key] = tuple(skipped)
        counts: dict[tuple[str, str], int] = {}
        for (tenant, name, _host), addresses in self._skipped.items():
            counts[tenant, name] = counts.get((tenant, name), 0) + len(addresses)
        self.mx_skipped = counts

    async def _retry_dns(
        self,
        target: TargetConfig,
        lookup: Callable[[], Awaitable[Any]],
        deadline: float | None = None,
        failed: Callable[[ProbeError], Any] | None = None,
    ) -> Any:
        """A lookup, retried like a probe: only transient failures, at most `retries` times, and
        no retry whose wait would end past the target's timeout (counted from the first try).
        With `deadline`, what `failed` makes of a lookup that has not finished by it."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + target.retries)
            | _StopBefore(self._clock, self._clock() + target.timeout),
            wait=tenacity.wait_incrementing(start=DNS_RETRY_WAIT, increment=DNS_RETRY_WAIT),
            retry=tenacity.retry_if_result(
                lambda outcome: outcome.error is not None and outcome.transient
            ),
            before_sleep=lambda _: self._count_retry(Reason.DNS),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            sleep=self._sleep,
        )

        async def attempt() -> Any:
            return await lookup()  # tenacity awaits only coroutine functions, not lambdas

        if deadline is None or failed is None:
            return await retrying(attempt)
        try:
            async with asyncio.timeout_at(deadline):
                return await retrying(attempt)
        except TimeoutError:
            what = f"{target.mx if target.mx else target.host} DNS lookup"
            return failed(ProbeError(Reason.DNS, policies.past_deadline(what, target.timeout)))

    async def run_job(self, job: Job) -> EndpointState:
        return self.publish(job.target, await self.job_result(job))

    async def job_result(self, job: Job) -> ProbeResult:
        if job.failure is not None:
            return ProbeResult.failed(
                job.endpoint,
                job.failure,
                started_at=self._wall(),
                address=job.endpoint.address,
            )
        if self.dns_policies is None:
            return await self.probe_with_retries(job)
        return await self.dns_policies.judge(job.target, job.endpoint, self.probe_with_retries(job))

    async def probe_with_retries(self, job: Job) -> ProbeResult:
        """Probe once; only a transient failure goes on to tenacity's bounded retries."""
        first = await self._probe_once(job)
        if not _transient(first) or job.target.retries < 1:
            return first  # the common case pays nothing for the retry machinery
        replay = iter([first])

        async def attempt() -> ProbeResult:
            # Tenacity's first attempt is the probe already made; later ones probe again.
            return next(replay, None) or await self._probe_once(job)

        target = job.target
        budget = max(target.interval - target.timeout, target.timeout) / 2
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + target.retries)
            | tenacity.stop_after_delay(budget),
            wait=tenacity.wait_exponential(multiplier=1, min=1, max=30)
            + tenacity.wait_random(0, 1),
            retry=tenacity.retry_if_result(_transient),
            before_sleep=lambda state: self._count_retry(
                state.outcome.result().error.kind  # type: ignore[union-attr]
            ),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            sleep=self._sleep,
            reraise=True,
        )
        result: ProbeResult = await retrying(attempt)
        return result

    async def _probe_once(self, job: Job) -> ProbeResult:
        address = job.endpoint.address or job.endpoint.host
        lock = self._locks.get(address)
        if lock is None:
            lock = self._locks[address] = asyncio.Lock()
        # The address lock first: a probe queued behind another one to the same server must
        # not hold a concurrency slot meanwhile, or one slow server starves all the others.
        async with lock, self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._probe(
                    job.endpoint,
                    job.target.policy,
                    self._trust_for(job.target),
                    timeout=job.target.timeout,
                )
            finally:
                self.in_flight -= 1

    def _trust_for(self, target: TargetConfig) -> TrustStore:
        return self.trust_store(target.ca_file)

    def trust_store(self, ca_file: Path | None) -> TrustStore:
        """The trust store of a CA file (None: the system's), loaded once per reload."""
        path = str(ca_file) if ca_file else None
        store = self._trust.get(path)
        if store is None:
            store = TrustStore.from_pem_file(path) if path else TrustStore.system()
            self._trust[path] = store
        return store

    def _count_retry(self, reason: Reason) -> None:
        self.retries[reason.value] = self.retries.get(reason.value, 0) + 1

    # --- publishing ------------------------------------------------------------------------

    def publish(self, target: TargetConfig, result: ProbeResult) -> EndpointState:
        state = state_for(target, result)
        if self.history is not None:
            leaf = result.leaf
            drift: Drift | None
            if leaf is not None:
                drift = self.history.observe(
                    state.key, leaf, result.started_at, result.checks or None
                )
            else:
                drift = self.history.drift(state.key)
            state = replace(state, drift=drift)
        self.results.put(state)
        if self._on_publish is not None:
            self._on_publish(state)
        self.probes[result.status.label] += 1
        self._outcomes.record(state)
        return state

    @property
    def tasks(self) -> Iterable[asyncio.Task[None]]:
        return [task for _, task in self._tasks.values()]


def _resolution_hint(hosts: HostsFile | None) -> str:
    where = f"the hosts file {hosts.path} and DNS" if hosts is not None else "DNS only"
    return (
        f" (serve resolves a configured host through {where} (dns:), with no search"
        " domains: give the full name, or the target's address)"
    )


def _transient(result: ProbeResult) -> bool:
    return result.error is not None and result.error.kind in TRANSIENT_REASONS


class _StopBefore(tenacity.stop.stop_base):
    """Stop when the next wait would end at or past `deadline` on the scheduler's own clock
    (tenacity's stop_before_delay reads time.monotonic, which tests cannot steer)."""

    def __init__(self, clock: Callable[[], float], deadline: float) -> None:
        self._clock = clock
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._clock() + (retry_state.upcoming_sleep or 0.0) >= self._deadline

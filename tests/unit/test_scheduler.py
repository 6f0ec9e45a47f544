"""The scheduler, driven by a virtual clock and a fake probe: no sockets, no real waiting.

`VirtualTime` is a small discrete-event clock: `sleep()` parks the caller until the test
advances time past its wake-up, and time advances only once every task is asleep (or parked on
an event the test controls), so a day of probe cycles runs in milliseconds and every timing
assertion is exact. The probe function is injected and returns canned results. One test goes
through the real resolver path against the loopback `DnsTestServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsserver import DnsTestServer
from tests.support.pki import FIXED_NOW, Hierarchy, make_intermediate
from tlsprobe.exporter.config import Config, TargetConfig, parse_config
from tlsprobe.exporter.history.store import HistoryStore, history_path
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.model import (
    ChangeClass,
    ChangeReason,
    Check,
    CheckName,
    Endpoint,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore, evaluate_der

EPOCH = 1_700_000_000.0
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")


class VirtualTime:
    """Simulated seconds for asyncio code that takes `clock=` and `sleep=`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._parked = 0

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (self.now + max(delay, 0.0), next(self._seq), future))
        await future

    @contextlib.asynccontextmanager
    async def parked(self) -> AsyncIterator[None]:
        """Mark the caller as idle while it waits on something the test controls."""
        self._parked += 1
        try:
            yield
        finally:
            self._parked -= 1

    async def run_until(self, end: float, *, idle: int) -> None:
        """Advance to `end`, waking sleepers in time order; `idle` tasks must settle first."""
        while True:
            await self._settle(idle)
            while self._queue and self._queue[0][2].done():
                heapq.heappop(self._queue)  # cancelled sleepers
            if not self._queue or self._queue[0][0] > end:
                self.now = end
                return
            wake, _, future = heapq.heappop(self._queue)
            self.now = max(self.now, wake)
            future.set_result(None)

    async def _settle(self, idle: int) -> None:
        for _ in range(10_000):
            if self._parked + sum(not f.done() for *_, f in self._queue) >= idle:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"expected {idle} idle tasks")


async def until(condition: Callable[[], bool], spins: int = 10_000) -> None:
    for _ in range(spins):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def canned(
    endpoint: Endpoint,
    *,
    error: Reason | None = None,
    status: Status = Status.OK,
    checks: tuple[Check, ...] = (),
) -> ProbeResult:
    failure = ProbeError(error, f"canned {error}") if error else None
    return ProbeResult(
        endpoint=endpoint,
        address=endpoint.address,
        started_at=EPOCH,
        status=failure.kind.status if failure else status,
        error=failure,
        tls=None if failure else TLS,
        chain=(),
        checks=checks,
        phases={},
    )


class FakeProbe:
    """Records every call with the virtual time; answers from `answers` (or ok)."""

    def __init__(self, vt: VirtualTime | None = None) -> None:
        self.vt = vt
        self.calls: list[tuple[float, Endpoint]] = []
        self.answers: list[Reason | Check] = []
        self.hold: asyncio.Event | None = None
        self.cancelled = 0

    async def __call__(
        self, endpoint: Endpoint, policy: Policy, trust: TrustStore, *, timeout: float
    ) -> ProbeResult:
        assert isinstance(trust, TrustStore)
        self.calls.append((self.vt.now if self.vt else 0.0, endpoint))
        if self.hold is not None:
            await self._wait(self.hold)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Check):
            return canned(endpoint, status=answer.status, checks=(answer,))
        return canned(endpoint, error=answer)

    async def _wait(self, event: asyncio.Event) -> None:
        try:
            if self.vt is None:
                await event.wait()
            else:
                async with self.vt.parked():
                    await event.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def times(self, target: str) -> list[float]:
        return [t for t, ep in self.calls if ep.target == target]


def target(name: str, address: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": f"{name}.contoso.test", "address": address, **extra}


def make_config(
    targets: Iterable[dict[str, Any]],
    ca_file: Path,
    *,
    concurrency: int = 50,
    interval: str = "100s",
    retries: int = 2,
    dns: dict[str, Any] | None = None,
) -> Config:
    data: dict[str, Any] = {
        "defaults": {
            "interval": interval,
            "timeout": "5s",
            "retries": retries,
            "concurrency": concurrency,
            "ca_file": str(ca_file),
        },
        "targets": list(targets),
    }
    if dns is not None:
        data["dns"] = dns
    return parse_config(data, base_dir=ca_file.parent)


def make_scheduler(
    config: Config,
    probe: FakeProbe,
    *,
    vt: VirtualTime | None = None,
    sleep: Callable[[float], Any] | None = None,
    seed: int = 1,
    resolver: Any = "unused",
) -> Scheduler:
    vt = vt or VirtualTime()
    return Scheduler(
        config,
        results=LatestResults(),
        resolver=resolver,
        probe=probe,
        clock=vt.clock,
        wall=vt.wall,
        sleep=sleep if sleep is not None else vt.sleep,
        rng=random.Random(seed),
    )


def by_name(config: Config, name: str) -> TargetConfig:
    return next(t for t in config.targets if t.name == name)


def snapshot_keys(scheduler: Scheduler) -> set[tuple[str, ...]]:
    return {s.label_values for s in scheduler.results.snapshot()}


# --- timing -----------------------------------------------------------------------------


async def test_first_probe_comes_within_a_tenth_of_the_interval_at_most_10s(
    ca_file: Path,
) -> None:
    short = [target(f"s{i}", f"127.0.1.{i}", interval="60s") for i in range(15)]
    long = [target(f"l{i}", f"127.0.2.{i}", interval="1h") for i in range(15)]
    config = make_config([*short, *long], ca_file)
    vt = VirtualTime()
    probe = FakeProbe(vt)
    scheduler = make_scheduler(config, probe, vt=vt)
    scheduler.start()
    await vt.run_until(30.0, idle=30)
    await scheduler.stop()

    firsts = {name: probe.times(name)[0] for name in (t["name"] for t in [*short, *long])}
    short_firsts = [firsts[t["name"]] for t in short]
    long_firsts = [firsts[t["name"]] for t in long]
    assert all(0 <= t <= 6.0 for t in short_firsts)
    assert all(0 <= t <= 10.0 for t in long_firsts)  # 10% of an hour, capped at 10 s
    # Spread out, not all at once: the starts are jittered over the window.
    assert len(set(long_firsts)) == len(long_firsts)
    assert max(long_firsts) > 6.0
    assert max(short_firsts) - min(short_firsts) > 3.0


async def test_cycle_starts_stay_within_interval_plus_minus_ten_percent(ca_file: Path) -> None:
    config = make_config([target("relay", "127.0.0.1")], ca_file, interval="100s")
    vt = VirtualTime()

    class SlowProbe(FakeProbe):
        async def __call__(self, *args: Any, **kwargs: Any) -> ProbeResult:
            result = await super().__call__(*args, **kwargs)
            await vt.sleep(7.0)  # a probe takes time; the next start must not drift by it
            return result

    probe = SlowProbe(vt)
    scheduler = make_scheduler(config, probe, vt=vt, seed=7)
    scheduler.start()
    await vt.run_until(100.0 * 40, idle=1)
    await scheduler.stop()

    starts = probe.times("relay")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 35
    assert all(90.0 <= gap <= 110.0 for gap in gaps), gaps
    assert min(gaps) < 97.0
    assert max(gaps) > 103.0


# --- concurrency and politeness ---------------------------------------------------------


async def test_global_concurrency_limit_is_never_exceeded(ca_file: Path) -> None:
    config = make_config(
        [target(f"t{i}", f"127.0.3.{i}") for i in range(12)], ca_file, concurrency=3
    )
    probe = FakeProbe()
    probe.hold = asyncio.Event()
    scheduler = make_scheduler(config, probe)
    cycles = asyncio.gather(*(scheduler.run_cycle(t) for t in config.targets))
    await until(lambda: scheduler.in_flight == 3)
    for _ in range(50):
        await asyncio.sleep(0)  # every chance for a fourth probe to slip through
    assert len(probe.calls) == 3
    probe.hold.set()
    await cycles
    assert scheduler.max_in_flight == 3
    assert scheduler.in_flight == 0
    assert len(probe.calls) == 12
    assert len(scheduler.results) == 12


async def test_one_connection_at_a_time_per_address(ca_file: Path) -> None:
    shared = "127.0.0.5"
    config = make_config(
        [target("a", shared), target("b", shared), target("c", "127.0.0.6")], ca_file
    )
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    overlap = 0

    async def probe(
        endpoint: Endpoint, policy: Policy, trust: TrustStore, *, timeout: float
    ) -> ProbeResult:
        nonlocal overlap
        address = endpoint.address or ""
        active[address] = active.get(address, 0) + 1
        peak[address] = max(peak.get(address, 0), active[address])
        overlap = max(overlap, sum(active.values()))
        for _ in range(5):
            await asyncio.sleep(0)
        active[address] -= 1
        return canned(endpoint)

    scheduler = make_scheduler(config, probe)  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.gather(*(scheduler.run_cycle(t) for t in config.targets))
    assert peak == {shared: 1, "127.0.0.6": 1}
    assert overlap == 2, "different addresses are probed concurrently"


async def test_waiting_for_a_busy_address_does_not_hold_a_concurrency_slot(
    ca_file: Path,
) -> None:
    busy = "127.0.0.7"
    config = make_config(
        [target("x1", busy), target("x2", busy), target("x3", busy), target("y", "127.0.0.8")],
        ca_file,
        concurrency=2,
    )
    gate = asyncio.Event()

    async def probe(
        endpoint: Endpoint, policy: Policy, trust: TrustStore, *, timeout: float
    ) -> ProbeResult:
        if endpoint.address == busy:
            await gate.wait()
        return canned(endpoint)

    scheduler = make_scheduler(config, probe)  # type: ignore[arg-type]
    cycles = asyncio.gather(*(scheduler.run_cycle(t) for t in config.targets))
    # Probes queued behind x1 on the same server must not starve another server.
    await until(lambda: any(s.target == "y" for s in scheduler.results.snapshot()))
    gate.set()
    await cycles
    assert len(scheduler.results) == 4


# --- retries ----------------------------------------------------------------------------


class Sleeps(list[float]):
    async def __call__(self, delay: float) -> None:
        self.append(delay)


async def _retried(
    ca_file: Path, answers: list[Reason | Check], *, retries: int = 2
) -> tuple[ProbeResult, FakeProbe, Scheduler, Sleeps]:
    config = make_config([target("relay", "127.0.0.1")], ca_file, retries=retries)
    probe = FakeProbe()
    probe.answers = list(answers)
    sleeps = Sleeps()
    scheduler = make_scheduler(config, probe, sleep=sleeps)
    [job] = await scheduler.jobs(config.targets[0])
    return await scheduler.probe_with_retries(job), probe, scheduler, sleeps


@pytest.mark.parametrize("reason", [Reason.TIMEOUT, Reason.REFUSED, Reason.THROTTLED, Reason.DNS])
async def test_transient_failures_are_retried_up_to_the_bound(
    ca_file: Path, reason: Reason
) -> None:
    result, probe, scheduler, sleeps = await _retried(ca_file, [reason] * 10, retries=2)
    assert len(probe.calls) == 3  # one attempt plus two retries
    assert result.error is not None
    assert result.error.kind is reason
    assert result.status is Status.UNKNOWN
    assert _counted(scheduler.retries) == {reason.value: 2}
    assert len(sleeps) == 2
    assert all(1.0 <= delay <= 31.0 for delay in sleeps)


async def test_a_retry_that_succeeds_returns_the_success(ca_file: Path) -> None:
    result, probe, scheduler, _ = await _retried(ca_file, [Reason.REFUSED])
    assert len(probe.calls) == 2
    assert result.status is Status.OK
    assert result.error is None
    assert _counted(scheduler.retries) == {"refused": 1}


async def test_no_retries_when_configured_off(ca_file: Path) -> None:
    result, probe, scheduler, sleeps = await _retried(ca_file, [Reason.TIMEOUT], retries=0)
    assert len(probe.calls) == 1
    assert result.error is not None
    assert _counted(scheduler.retries) == {}
    assert sleeps == []


EXPIRED = Check(CheckName.NOT_EXPIRED, Status.CRITICAL, "expired 3 days ago")


@pytest.mark.parametrize(
    "answer",
    [Reason.TLS_HANDSHAKE, Reason.NO_STARTTLS, Reason.STARTTLS_REJECTED, Reason.PROTOCOL, EXPIRED],
    ids=lambda a: a.value if isinstance(a, Reason) else a.name,
)
async def test_certificate_verdicts_and_tls_failures_are_not_retried(
    ca_file: Path, answer: Reason | Check
) -> None:
    result, probe, scheduler, sleeps = await _retried(ca_file, [answer] * 3)
    assert len(probe.calls) == 1
    assert result.status is Status.CRITICAL
    assert _counted(scheduler.retries) == {}
    assert sleeps == []


# --- reconfiguration and shutdown -------------------------------------------------------


def _task(scheduler: Scheduler, name: str) -> asyncio.Task[None]:
    [task] = [t for t in scheduler.tasks if t.get_name() == f"target ('', {name!r})"]
    return task


async def test_apply_stops_removed_keeps_unchanged_restarts_changed(ca_file: Path) -> None:
    old = make_config(
        [target("a", "127.0.0.1"), target("b", "127.0.0.2"), target("c", "127.0.0.3")], ca_file
    )
    vt = VirtualTime()
    probe = FakeProbe(vt)
    scheduler = make_scheduler(old, probe, vt=vt)
    scheduler.start()
    await vt.run_until(150.0, idle=3)
    assert {k[1] for k in snapshot_keys(scheduler)} == {"a", "b", "c"}
    kept, removed, changed = (_task(scheduler, n) for n in "abc")
    last_a = probe.times("a")[-1]

    new = make_config(
        [target("a", "127.0.0.1"), target("c", "127.0.0.3", port=2525), target("d", "127.0.0.4")],
        ca_file,
    )
    scheduler.apply(new)
    await asyncio.sleep(0)
    assert {k[1] for k in snapshot_keys(scheduler)} == {"a", "c"}, "b's series are gone at once"
    assert _task(scheduler, "a") is kept
    assert not kept.done()
    assert removed.cancelled()
    assert changed.cancelled()
    assert _task(scheduler, "c") is not changed
    assert ("tlsprobe_targets_configured", (), 3.0) in list(scheduler.samples())

    await vt.run_until(500.0, idle=3)
    await scheduler.stop()
    assert all(t <= 150.0 for t in probe.times("b"))
    # a kept its schedule (a restart would have probed it within 10 s of the apply).
    assert min(t for t in probe.times("a") if t > 150.0) >= last_a + 90.0
    # c and d start afresh on the new settings.
    assert 150.0 <= min(t for t in probe.times("c") if t > 150.0) <= 160.0
    assert 150.0 <= probe.times("d")[0] <= 160.0
    assert {ep.port for t, ep in probe.calls if ep.target == "c" and t > 150.0} == {2525}
    assert snapshot_keys(scheduler) == {
        ("", "a", "a.contoso.test", "127.0.0.1", "25"),
        ("", "c", "c.contoso.test", "127.0.0.3", "2525"),
        ("", "d", "d.contoso.test", "127.0.0.4", "25"),
    }


async def test_a_changed_maintenance_window_keeps_the_targets_schedule(ca_file: Path) -> None:
    """Windows are asked at scrape time; editing them must not restart (re-probe) a target."""
    window = {"days": ["sun"], "start": "02:00", "duration": "2h", "timezone": "UTC"}
    old = make_config([target("a", "127.0.0.1")], ca_file)
    vt = VirtualTime()
    probe = FakeProbe(vt)
    scheduler = make_scheduler(old, probe, vt=vt)
    scheduler.start()
    await vt.run_until(150.0, idle=1)
    kept = _task(scheduler, "a")
    last = probe.times("a")[-1]
    scheduler.apply(make_config([target("a", "127.0.0.1", maintenance=[window])], ca_file))
    await asyncio.sleep(0)
    assert _task(scheduler, "a") is kept and not kept.done()
    await vt.run_until(300.0, idle=1)
    await scheduler.stop()
    assert min(t for t in probe.times("a") if t > 150.0) >= last + 90.0


async def test_stop_cancels_in_flight_probes_promptly(ca_file: Path) -> None:
    config = make_config([target(f"t{i}", f"127.0.4.{i}") for i in range(5)], ca_file)
    vt = VirtualTime()
    probe = FakeProbe(vt)
    probe.hold = asyncio.Event()  # never set: probes hang like a silent server
    scheduler = make_scheduler(config, probe, vt=vt)
    scheduler.start()
    await vt.run_until(20.0, idle=5)
    assert scheduler.in_flight == 5
    tasks = list(scheduler.tasks)

    started = time.monotonic()
    await scheduler.stop()
    assert time.monotonic() - started < 2.0
    assert all(task.done() for task in tasks)
    assert probe.cancelled == 5
    assert scheduler.in_flight == 0
    assert list(scheduler.tasks) == []


# --- discovery through the real resolver ------------------------------------------------


async def test_mx_endpoints_follow_the_zone(ca_file: Path) -> None:
    zone = {
        ("contoso.test", "MX"): ["10 mx1.contoso.test.", "20 mx2.contoso.test."],
        ("mx1.contoso.test", "A"): ["127.0.0.21", "127.0.0.22"],
        ("mx2.contoso.test", "A"): ["127.0.0.23"],
    }
    with DnsTestServer(zone) as server:
        dns = {"nameservers": ["127.0.0.1"], "port": server.port, "timeout": "2s"}
        # Loopback MX answers are probed only inside the target's networks.
        target = {"mx": "contoso.test", "networks": ["127.0.0.0/8"]}
        config = make_config([target], ca_file, dns=dns)
        probe = FakeProbe()
        scheduler = make_scheduler(config, probe, resolver=None)
        mx = config.targets[0]

        await scheduler.run_cycle(mx)
        assert snapshot_keys(scheduler) == {
            ("", "contoso.test", "mx1.contoso.test", "127.0.0.21", "25"),
            ("", "contoso.test", "mx1.contoso.test", "127.0.0.22", "25"),
            ("", "contoso.test", "mx2.contoso.test", "127.0.0.23", "25"),
        }
        # Each MX host is named in its own handshake.
        assert {(ep.host, ep.sni) for _, ep in probe.calls} == {
            ("mx1.contoso.test", "mx1.contoso.test"),
            ("mx2.contoso.test", "mx2.contoso.test"),
        }

        server.zone[("contoso.test", "MX")] = ["10 mx1.contoso.test."]
        server.zone[("mx1.contoso.test", "A")] = ["127.0.0.22"]
        await scheduler.run_cycle(mx)
        assert snapshot_keys(scheduler) == {
            ("", "contoso.test", "mx1.contoso.test", "127.0.0.22", "25"),
        }
        assert len(probe.calls) == 4


def _counted(retries: dict[str, int]) -> dict[str, int]:
    """The reasons that saw a retry (every reason is present from zero, for its series)."""
    return {reason: n for reason, n in retries.items() if n}


async def test_mx_answers_on_loopback_or_link_local_are_skipped_and_reported(
    ca_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zone = {
        ("contoso.test", "MX"): ["10 loop.contoso.test.", "20 mixed.contoso.test."],
        ("loop.contoso.test", "A"): ["127.0.0.21"],
        ("mixed.contoso.test", "A"): ["0.0.0.0", "127.0.0.23"],
        ("mixed.contoso.test", "AAAA"): ["fe80::1", "::ffff:127.0.0.1"],
    }
    with DnsTestServer(zone) as server:
        dns = {"nameservers": ["127.0.0.1"], "port": server.port, "timeout": "2s"}
        config = make_config([{"mx": "contoso.test"}], ca_file, dns=dns)
        probe = FakeProbe()
        scheduler = make_scheduler(config, probe, resolver=None)
        with caplog.at_level(logging.WARNING, logger="tlsprobe"):
            states = await scheduler.run_cycle(config.targets[0])
            await scheduler.run_cycle(config.targets[0])
    assert probe.calls == []  # nothing was probed, not even once
    assert {s.result.error.kind for s in states if s.result.error} == {Reason.DNS}
    assert "resolves only to loopback" in str(states[0].result.error)
    assert scheduler.mx_skipped == {("", "contoso.test"): 5}
    warnings = [r for r in caplog.records if "not probed" in r.getMessage()]
    assert len(warnings) == 2  # one per host, not one per cycle


# --- drift: another intermediate of the same CA ---------------------------------------------

EXCHANGE = (
    "S: 220 relay.contoso.test Microsoft ESMTP MAIL Service ready at Tue, 8 Dec 2026 04:00:00",
    "C: EHLO probe.contoso.test",
    "S: 250-relay.contoso.test Hello [192.0.2.1]",
    "S: 250 STARTTLS",
)
POSTFIX = (
    "S: 220 relay.contoso.test ESMTP Postfix",
    "C: EHLO probe.contoso.test",
    "S: 250 STARTTLS",
)


@pytest.mark.parametrize(
    ("transcript", "setting", "expected"),
    [
        pytest.param(POSTFIX, None, ChangeClass.RENEWAL, id="postfix"),
        pytest.param(EXCHANGE, None, ChangeClass.RISKY, id="exchange"),
        pytest.param(EXCHANGE, False, ChangeClass.RENEWAL, id="exchange-issuer_bound-false"),
        pytest.param(POSTFIX, True, ChangeClass.RISKY, id="postfix-issuer_bound-true"),
    ],
)
def test_a_sibling_intermediate_is_risky_only_where_a_connector_names_the_issuer(
    tmp_path: Path,
    ca: Hierarchy,
    transcript: tuple[str, ...],
    setting: bool | None,
    expected: ChangeClass,
) -> None:
    """R10 then R11 of one CA, both chains trusted: a renewal on Postfix; risky on a server
    whose banner says Exchange (TlsCertificateName names the issuer), unless `issuer_bound`
    says otherwise."""
    (tmp_path / "root.pem").write_bytes(ca.ca_pem)
    extra = {} if setting is None else {"issuer_bound": setting}
    config = make_config([target("relay", "192.0.2.10", **extra)], tmp_path / "root.pem")
    (relay,) = config.targets
    history = HistoryStore(history_path(tmp_path / "state"))
    scheduler = Scheduler(config, results=LatestResults(), history=history)
    trust = TrustStore.from_pem(ca.ca_pem)
    endpoint = Endpoint(relay.host or "", address="192.0.2.10", target="relay")
    year = timedelta(days=365)
    for start, name in ((-80, "R10"), (-1, "R11")):
        intermediate = make_intermediate(
            ca.root, name, not_before=FIXED_NOW - year, not_after=FIXED_NOW + year
        )
        leaf = Hierarchy(ca.root, intermediate).leaf(
            (endpoint.host,), not_before=FIXED_NOW + timedelta(days=start), days=90
        )
        verdict = evaluate_der(
            (leaf.der, intermediate.der),
            host=endpoint.host,
            tls=TLS,
            policy=relay.policy,
            trust=trust,
            now=FIXED_NOW,
        )
        result = replace(canned(endpoint, checks=verdict.checks), transcript=transcript)
        result = replace(result, chain=(certs.facts_from_der(leaf.der),), started_at=EPOCH + start)
        state = scheduler.publish(relay, result)
    history.close()
    assert state.drift is not None and state.drift.change is not None
    change = state.drift.change
    assert change.change is expected
    if expected is ChangeClass.RENEWAL:
        assert change.reasons == (ChangeReason.INTERMEDIATE_ROTATED,)
    else:
        assert change.reasons == (ChangeReason.ISSUER_CHANGED,)
        assert "TlsCertificateName names the issuer" in change.text

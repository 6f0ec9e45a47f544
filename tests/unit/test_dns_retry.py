"""DNS lookups retry like probes: only transient failures, a bounded number of times, and never
past the target's timeout, on the scheduler's own clock (so these tests steer time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.model import ProbeError, ProbeResult, Reason
from tlsprobe.probe.dns import discover


class Clock:
    """Seconds that move only when a lookup takes time or the scheduler sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def scheduler_for(timeout: str, retries: int, clock: Clock) -> tuple[Scheduler, Any]:
    config = parse_config(
        {
            "defaults": {"interval": "10m", "timeout": timeout, "retries": retries},
            "targets": [{"host": "mail.contoso.test"}],
        },
        base_dir=Path("."),
    )

    async def no_probe(*args: Any, **kwargs: Any) -> ProbeResult:
        raise AssertionError("nothing resolved, so nothing may be probed")

    scheduler = Scheduler(
        config,
        results=LatestResults(),
        resolver="unused",
        probe=no_probe,
        clock=clock,
        sleep=clock.sleep,
    )
    return scheduler, config.targets[0]


def failing_lookup(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, *, takes: float, transient: bool
) -> list[float]:
    """Make every address lookup fail after `takes` seconds; returns when each one began."""
    calls: list[float] = []

    async def lookup(
        host: str, resolver: Any, *, which: str, hosts: Any = None
    ) -> discover.AddressResult:
        calls.append(clock.now)
        clock.now += takes
        error = ProbeError(Reason.DNS, f"{host}: A: SERVFAIL")
        return discover.AddressResult(host, (), error=error, transient=transient)

    monkeypatch.setattr(discover, "resolve_addresses", lookup)
    return calls


async def test_transient_failures_retry_up_to_the_retry_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    scheduler, target = scheduler_for("30s", 3, clock)
    calls = failing_lookup(monkeypatch, clock, takes=0.0, transient=True)
    jobs = await scheduler.jobs(target)
    assert len(calls) == 4
    assert clock.sleeps == [0.5, 1.0, 1.5]
    assert scheduler.retries["dns"] == 3
    assert [job.failure.kind if job.failure else None for job in jobs] == [Reason.DNS]


async def test_an_authoritative_answer_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    scheduler, target = scheduler_for("30s", 3, clock)
    calls = failing_lookup(monkeypatch, clock, takes=0.0, transient=False)
    await scheduler.jobs(target)
    assert len(calls) == 1
    assert scheduler.retries["dns"] == 0


async def test_retries_stop_at_the_targets_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Slow lookups (a resolver timing out) and many retries: the old loop kept going for
    # 10 lookups and 27 s of waits; the target's 2 s timeout now bounds the whole.
    clock = Clock()
    scheduler, target = scheduler_for("2s", 10, clock)
    calls = failing_lookup(monkeypatch, clock, takes=0.4, transient=True)
    jobs = await scheduler.jobs(target)
    assert calls == [0.0, 0.9]
    assert clock.sleeps == [0.5]
    assert clock.now <= 2.0
    assert scheduler.retries["dns"] == 1
    assert jobs[0].failure is not None and jobs[0].failure.kind is Reason.DNS

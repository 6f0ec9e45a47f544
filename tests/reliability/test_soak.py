"""Hostile fleet soak: `tlsprobe serve` keeps working, flat, against hundreds of bad servers.

About 200 loopback endpoints (every kind in `tests/reliability/fleet.py`, 14 of each: silent,
drip, 2 MiB lines, resets and garbage in the handshake, 421, 454, injection, accept-then-close,
TLS alerts, refused ports, and healthy controls) are probed by an in-process exporter with a 2 s
interval, 1 s timeout, one retry and 50 probes in flight, for five cycles. Between the second
cycle (warm) and the last, memory, open file descriptors and asyncio tasks must stay flat; in
every cycle each endpoint has a result, the healthy controls are ok and no probe attempt
outlives its deadline; by the end every result has been renewed. `benchmarks/soak.py` runs the
same loop for an hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.fleet import FleetEndpoint, FleetProcess
from tests.reliability.harness import (
    Window,
    exporter_config,
    fleet_targets,
    fresh_bound,
    running,
    sample_window,
    soak_problems,
    write_yaml,
)
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


PER_KIND = 14
INTERVAL = 2.0
TIMEOUT = 1.0
RETRIES = 1
CYCLES = 5


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[FleetEndpoint], Path]]:
    ca = tmp_path_factory.mktemp("fleet") / "ca.pem"
    with FleetProcess(per_kind=PER_KIND, ca_out=ca) as endpoints:
        yield endpoints, ca


async def test_hostile_fleet_soak_stays_flat(
    tmp_path: Path, fleet: tuple[list[FleetEndpoint], Path]
) -> None:
    endpoints, ca = fleet
    assert len(endpoints) >= 200
    data = exporter_config(
        tmp_path / "state",
        ca,
        fleet_targets(endpoints),
        interval=f"{INTERVAL}s",
        timeout=f"{TIMEOUT}s",
        retries=RETRIES,
        concurrency=50,
    )
    path = write_yaml(tmp_path / "tlsprobe.yml", data)
    windows: list[Window] = []
    async with running(path) as (exporter, times):
        await eventually(lambda: len(exporter.results) == len(endpoints), "a first result each")
        for cycle in range(1, CYCLES + 1):
            window = await sample_window(exporter, times, endpoints, cycle=cycle, seconds=INTERVAL)
            print(window.line())
            windows.append(window)
    fresh = fresh_bound(INTERVAL, TIMEOUT, RETRIES)
    problems = soak_problems(windows, endpoints=len(endpoints), timeout=TIMEOUT, fresh=fresh)
    assert problems == [], "\n".join(w.line() for w in windows)

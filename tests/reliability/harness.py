"""Shared pieces of the reliability tests and of `benchmarks/soak.py`.

Configuration files for a fleet, an in-process `Exporter` with a probe-timing wrapper, HTTP
helpers, exposition parsing that notices duplicate series, process figures (RSS, open file
descriptors, asyncio tasks) and the soak loop itself, which samples those figures per probe
cycle so a test and the hour-long benchmark report the same things.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.reliability.fleet import HOST, KINDS, FleetEndpoint
from tests.support.exporter import in_process
from tests.support.servers import unused_port
from tlsprobe.exporter.app import Exporter
from tlsprobe.model import ProbeResult


def fleet_targets(endpoints: Sequence[FleetEndpoint], **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "host": HOST,
            "address": e.address,
            "port": e.port,
            "mode": e.mode,
            **extra,
        }
        for e in endpoints
    ]


def exporter_config(
    state_dir: Path,
    ca_file: Path,
    targets: list[dict[str, Any]],
    *,
    interval: str = "2s",
    timeout: str = "1s",
    retries: int = 1,
    concurrency: int = 50,
    web: dict[str, Any] | None = None,
    dns_port: int | None = None,
) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "web": {"listen": f"127.0.0.1:{unused_port()}", **(web or {})},
        # Only loopback is ever asked; a port nobody answers on when a test needs no DNS.
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port or unused_port(), "timeout": "1s"},
        "defaults": {
            "interval": interval,
            "timeout": timeout,
            "retries": retries,
            "concurrency": concurrency,
            "ca_file": str(ca_file),
            "ehlo_name": "probe.test",
        },
        "targets": targets,
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class ProbeTimes:
    """How many probe attempts the scheduler made, and the slowest since `restart()`.

    A count and a maximum, not a record of every attempt: a list of them grew by about 90
    bytes an attempt, 0.6 MiB a minute under the 200-endpoint soak, and was read as a leak in
    the exporter whose memory the soak measures."""

    attempts: int = 0
    slowest: float = 0.0

    def record(self, seconds: float) -> None:
        self.attempts += 1
        self.slowest = max(self.slowest, seconds)

    def restart(self) -> None:
        self.slowest = 0.0


@contextlib.asynccontextmanager
async def running(config_path: Path) -> AsyncIterator[tuple[Exporter, ProbeTimes]]:
    """An in-process exporter whose every probe attempt is timed from the outside."""
    async with in_process(config_path) as exporter:
        times = ProbeTimes()
        scheduler = exporter.scheduler
        assert scheduler is not None
        # The target loops were created by start() but have not run yet: wrapping the probe now
        # sees every attempt. (Scheduler takes `probe=` but Exporter builds it; hence the
        # attribute.)
        real = scheduler._probe

        async def timed(*args: Any, **kwargs: Any) -> ProbeResult:
            started = time.monotonic()
            try:
                return await real(*args, **kwargs)
            finally:
                times.record(time.monotonic() - started)

        scheduler._probe = timed
        yield exporter, times


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- the exposition --------------------------------------------------------------------------


Series = tuple[str, tuple[tuple[str, str], ...]]


def parse_exposition(text: str) -> dict[Series, float]:
    """Every sample by (name, sorted labels); a series that appears twice is an error."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def values(series: dict[Series, float], name: str, **labels: str) -> list[float]:
    return [
        value
        for (sample_name, sample_labels), value in series.items()
        if sample_name == name and labels.items() <= dict(sample_labels).items()
    ]


def label_values(series: dict[Series, float], name: str, label: str) -> set[str]:
    return {
        dict(labels)[label]
        for (sample_name, labels), _ in series.items()
        if sample_name == name and label in dict(labels)
    }


# --- the history database --------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    fingerprint: str
    since: float
    changes_total: int
    events: tuple[tuple[float, str | None, str], ...]
    served: frozenset[str]


def read_history(db: Path) -> dict[str, Recorded]:
    """Per target name, what the database holds, through a read-only connection."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        events: dict[int, list[tuple[float, str | None, str]]] = defaultdict(list)
        for endpoint_id, at, old, new in conn.execute(
            "SELECT endpoint_id, at, old, new FROM change_event ORDER BY endpoint_id, at"
        ):
            events[endpoint_id].append((at, old, new))
        served: dict[int, set[str]] = defaultdict(set)
        for endpoint_id, fingerprint in conn.execute("SELECT endpoint_id, fingerprint FROM served"):
            served[endpoint_id].add(fingerprint)
        rows = conn.execute("SELECT id, target, fingerprint, since, changes_total FROM endpoint")
        return {
            target: Recorded(fp, since, total, tuple(events[i]), frozenset(served[i]))
            for i, target, fp, since, total in rows
        }
    finally:
        conn.close()


def check_consistent(history: dict[str, Recorded]) -> None:
    for target, rec in history.items():
        assert len(rec.events) == rec.changes_total, target
        assert len(rec.served) <= 2, target  # the server alternates between two leaves
        for (at, _, new), (next_at, next_old, _) in zip(rec.events, rec.events[1:], strict=False):
            assert next_at > at, f"{target}: events out of order or duplicated"
            assert next_old == new, f"{target}: event chain broken (a lost or duplicate change)"
        if rec.events:
            assert rec.events[-1][2] == rec.fingerprint, target
            assert rec.events[-1][0] == rec.since, target


# --- process figures -------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the soak ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Figures over one probe cycle: minimum fds and tasks (the baseline under the in-flight
    probes, which come and go), RSS at the end, results at the end."""

    cycle: int
    rss: int
    fds: int
    tasks: int
    target_loops: int
    oldest_result_age: float
    results: int
    unhealthy_controls: tuple[str, ...]
    slowest_probe: float
    started_at: dict[str, float]

    def line(self) -> str:
        return (
            f"cycle {self.cycle:4d}  rss {self.rss / 2**20:7.1f} MiB  fds {self.fds:5d}"
            f"  tasks {self.tasks:5d}  results {self.results:4d}"
            f"  oldest {self.oldest_result_age:5.1f} s  slowest probe {self.slowest_probe:5.2f} s"
            f"  unhealthy controls {len(self.unhealthy_controls)}"
        )


async def sample_window(
    exporter: Exporter,
    times: ProbeTimes,
    endpoints: Sequence[FleetEndpoint],
    *,
    cycle: int,
    seconds: float,
) -> Window:
    """Watch the exporter for `seconds`, ten times a second."""
    fds, tasks = [], []
    times.restart()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fds.append(open_fds())
        tasks.append(len(asyncio.all_tasks()))
        await asyncio.sleep(0.1)
    states = {s.target: s.result for s in exporter.results.snapshot()}
    now = time.time()
    healthy = {e.name for e in endpoints if KINDS[e.kind].healthy}
    unhealthy = tuple(
        sorted(n for n in healthy if n not in states or states[n].status.label != "ok")
    )
    ages = [now - r.started_at for r in states.values()]
    loops = [t for t in asyncio.all_tasks() if t.get_name().startswith("target ")]
    return Window(
        cycle=cycle,
        rss=rss_bytes(),
        fds=min(fds),
        tasks=min(tasks),
        target_loops=len(loops),
        oldest_result_age=max(ages, default=float("inf")),
        results=len(states),
        unhealthy_controls=unhealthy,
        slowest_probe=times.slowest,
        started_at={name: r.started_at for name, r in states.items()},
    )


MAX_RSS_GROWTH = 10 * 2**20
MAX_FD_GROWTH = 20
DEADLINE_SLACK = 0.5
"""A probe attempt may end this long after its timeout (event loop latency under load)."""


def fresh_bound(interval: float, timeout: float, retries: int) -> float:
    """Oldest acceptable result: interval plus jitter, every attempt, the retry waits, slack."""
    return interval * 1.1 + (1 + retries) * timeout + 2.0 * retries + 1.0


def window_problems(w: Window, *, endpoints: int, timeout: float) -> list[str]:
    """What went wrong within one probe cycle."""
    problems: list[str] = []
    if w.results != endpoints:
        problems.append(f"cycle {w.cycle}: {w.results} results for {endpoints} endpoints")
    if w.unhealthy_controls:
        problems.append(f"cycle {w.cycle}: healthy controls not ok: {w.unhealthy_controls}")
    if w.slowest_probe > timeout + DEADLINE_SLACK:
        problems.append(f"cycle {w.cycle}: a probe took {w.slowest_probe:.2f} s")
    if w.target_loops != endpoints:
        problems.append(f"cycle {w.cycle}: {w.target_loops} target loops")
    # One loop per target, at most one cycle in progress per target, plus the web server.
    if w.tasks > 2 * endpoints + 20:
        problems.append(f"cycle {w.cycle}: {w.tasks} asyncio tasks")
    return problems


def growth_problems(warm: Window, last: Window, *, endpoints: int, fresh: float) -> list[str]:
    """What grew or went stale between the warm cycle and the last one."""
    problems: list[str] = []
    if last.rss - warm.rss >= MAX_RSS_GROWTH:
        problems.append(f"RSS grew {(last.rss - warm.rss) / 2**20:.1f} MiB")
    if last.fds - warm.fds >= MAX_FD_GROWTH:
        problems.append(f"open file descriptors grew by {last.fds - warm.fds}")
    if last.tasks - warm.tasks >= endpoints // 4:
        problems.append(f"asyncio tasks grew by {last.tasks - warm.tasks}")
    if last.oldest_result_age > fresh:
        problems.append(f"oldest result {last.oldest_result_age:.1f} s old (bound {fresh:.1f} s)")
    stale = sorted(n for n, at in last.started_at.items() if at <= warm.started_at.get(n, 0.0))
    if stale:
        problems.append(f"results not renewed since cycle {warm.cycle}: {stale[:10]}")
    return problems


def soak_problems(
    windows: Sequence[Window], *, endpoints: int, timeout: float, fresh: float
) -> list[str]:
    """Every window's problems, then growth from the second window (warm) to the last."""
    problems = [
        p for w in windows for p in window_problems(w, endpoints=endpoints, timeout=timeout)
    ]
    return problems + growth_problems(windows[1], windows[-1], endpoints=endpoints, fresh=fresh)

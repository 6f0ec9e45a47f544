"""The long hostile-fleet soak: tests/reliability/test_soak.py, for as long as you like.

Starts the hostile fleet of tests/reliability/fleet.py in a child process (14 loopback endpoints
of each kind by default, about 200 in all), runs the exporter in this process against it, and
every `--report-every` seconds prints one line of figures for the last probe cycle: RSS, open
file descriptors and asyncio tasks (their minimum over the cycle, under the probes in flight),
results held, the age of the oldest result, the slowest probe attempt and the healthy controls
that were not ok. At the end it prints the growth between the second cycle and the last and the
bounds the test suite applies, and exits 1 if any bound was broken.

    python -m benchmarks.soak --duration 3600          # the hour-long run
    python -m benchmarks.soak --duration 180 --report-every 30
    python -m benchmarks.soak --floods --duration 600  # connection, auth, rotating-cert floods

`--floods` runs tests/reliability/floods.py instead: `tlsprobe serve` as a child with 512
descriptors under 500 idle and slow-header connections, 48 clients guessing passwords and a
server with a new 45 KiB certificate before every /probe, and prints the exporter's descriptors,
RSS, history database size and the scrapes answered, a line every `--report-every` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.fleet import FleetEndpoint, FleetProcess
from tests.reliability.floods import NOFILE, Sample, flood_problems, run_floods
from tests.reliability.harness import (
    MAX_FD_GROWTH,
    MAX_RSS_GROWTH,
    Window,
    exporter_config,
    fleet_targets,
    fresh_bound,
    growth_problems,
    running,
    sample_window,
    window_problems,
    write_yaml,
)
from tests.support.wait import eventually
from tlsprobe.exporter.logfmt import setup_logging


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--per-kind", type=int, default=14, help="endpoints per kind")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between lines")
    parser.add_argument(
        "--floods", action="store_true", help="the flood fleets instead of the hostile fleet"
    )
    return parser.parse_args(argv)


async def soak(args: argparse.Namespace, endpoints: list[FleetEndpoint], ca: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="tlsprobe-soak-") as tmp:
        data = exporter_config(
            Path(tmp) / "state",
            ca,
            fleet_targets(endpoints),
            interval=f"{args.interval}s",
            timeout=f"{args.timeout}s",
            retries=args.retries,
            concurrency=args.concurrency,
        )
        path = write_yaml(Path(tmp) / "tlsprobe.yml", data)
        async with running(path) as (exporter, times):
            await eventually(lambda: len(exporter.results) == len(endpoints), "first results")
            windows, problems = await _cycles(args, exporter, times, endpoints)
            attempts = times.attempts
    return _summary(args, windows, problems, len(endpoints), attempts)


async def _cycles(
    args: argparse.Namespace, exporter: object, times: object, endpoints: list[FleetEndpoint]
) -> tuple[list[Window], list[str]]:
    """Judge every cycle as it ends; keep the first two (the warm baseline) and the latest."""
    kept: list[Window] = []
    problems: list[str] = []
    started = last_report = time.monotonic()
    cycle = 0
    while time.monotonic() - started < args.duration or cycle < 3:
        cycle += 1
        window = await sample_window(
            exporter,  # type: ignore[arg-type]
            times,  # type: ignore[arg-type]
            endpoints,
            cycle=cycle,
            seconds=args.interval,
        )
        kept = [*kept[:2], window] if len(kept) >= 2 else [*kept, window]
        if cycle <= 2 or time.monotonic() - last_report >= args.report_every:
            last_report = time.monotonic()
            print(f"{time.monotonic() - started:7.0f} s  {window.line()}", flush=True)
        found = window_problems(window, endpoints=len(endpoints), timeout=args.timeout)
        for problem in found:
            print(f"          PROBLEM: {problem}", flush=True)
        problems += found
    return kept, problems


def _summary(
    args: argparse.Namespace, windows: list[Window], problems: list[str], count: int, attempts: int
) -> int:
    warm, last = windows[1], windows[-1]
    fresh = fresh_bound(args.interval, args.timeout, args.retries)
    print(f"\nendpoints {count}, cycles {last.cycle}, probe attempts {attempts}")
    print(f"warm   {warm.line()}")
    print(f"last   {last.line()}")
    print(
        f"growth rss {(last.rss - warm.rss) / 2**20:+.1f} MiB (bound {MAX_RSS_GROWTH / 2**20:.0f}),"
        f" fds {last.fds - warm.fds:+d} (bound {MAX_FD_GROWTH}),"
        f" tasks {last.tasks - warm.tasks:+d} (bound {count // 4});"
        f" oldest result {last.oldest_result_age:.1f} s (bound {fresh:.1f})"
    )
    problems = problems + growth_problems(warm, last, endpoints=count, fresh=fresh)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


async def floods(args: argparse.Namespace) -> int:
    last = -args.report_every

    def report(sample: Sample) -> None:
        nonlocal last
        if sample.at - last >= args.report_every:
            last = sample.at
            print(sample.line(), flush=True)

    with tempfile.TemporaryDirectory(prefix="tlsprobe-floods-") as tmp:
        samples, counters = await run_floods(Path(tmp), args.duration, report)
    print(f"last   {samples[-1].line()}")
    print(
        f"max fds {max(s.fds for s in samples)} (limit {NOFILE}),"
        f" max db {max(s.db_bytes for s in samples) / 2**10:.0f} KiB,"
        f" rss {samples[len(samples) // 3].rss / 2**20:.1f} -> {samples[-1].rss / 2**20:.1f} MiB,"
        f" guesses refused {counters.refused_guesses}"
    )
    problems = flood_problems(samples, counters)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floods:
        setup_logging("error")
        return asyncio.run(floods(args))
    setup_logging("error")  # outcome changes of 200 hostile endpoints would drown the figures
    with tempfile.TemporaryDirectory(prefix="tlsprobe-soak-ca-") as tmp:
        ca = Path(tmp) / "ca.pem"
        with FleetProcess(per_kind=args.per_kind, ca_out=ca) as endpoints:
            return asyncio.run(soak(args, endpoints, ca))


if __name__ == "__main__":
    sys.exit(main())

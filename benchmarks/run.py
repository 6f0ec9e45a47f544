"""tlsprobe benchmark harness: one command, loopback only; see benchmarks/README.md.

    python3 benchmarks/run.py [--probes N] [--concurrency C] [--rounds R] [--endpoints E]
                              [--short] [--no-blackbox] [--json FILE]

Part one starts a private Postfix fleet (STARTTLS on C loopback addresses, certificates made at
start) and sweeps it with N probes at concurrency C through three probers, each measured in its
own process: tlsprobe (the scheduler's cycle, evaluation and result store included),
prometheus-blackbox-exporter (when installed) and a bare asyncio STARTTLS handshake loop (the
floor). Each round runs all probers once, in rotating order; the median round is reported.
Part two measures the exporter with E synthetic endpoints: /metrics render time (cold and warm),
resident memory with E targets configured, and /metrics latency idle and during a sweep.
The table goes to stdout, the full results to --json. Needs root (Postfix) on Debian.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python3 benchmarks/run.py` from anywhere

import aiohttp  # noqa: E402

from benchmarks import blackbox  # noqa: E402
from benchmarks.fleet import Fleet, PostfixFleet, fleet_unavailable, free_port  # noqa: E402

TARGETS = {
    "throughput_vs_blackbox": 1.5,
    "cpu_vs_bare": 1.3,
    "render_warm_ms": 250.0,
    "rss_mb": 200.0,
    "scrape_p99_sweep_vs_idle": 2.0,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = fleet_unavailable()
    if problem:
        print(f"benchmarks: cannot start the Postfix fleet: {problem}", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the fleet and blackbox_exporter are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict[str, Any] = {"settings": vars(args) | {"json": None}, "machine": machine()}
    started = time.monotonic()
    with PostfixFleet(args.concurrency) as fleet:
        report["sweep"] = part_one(fleet, args)
        report["scale"] = part_two(fleet, args)
    report["ratios"] = ratios(report)
    report["targets"] = judge_targets(report)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print(render_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, help="probes per sweep (default 2000; short 200)")
    parser.add_argument("--concurrency", type=int, help="concurrent probes (100; short 20)")
    parser.add_argument("--rounds", type=int, help="sweeps per prober (default 3; short 1)")
    parser.add_argument("--endpoints", type=int, help="synthetic endpoints (10000; short 1000)")
    parser.add_argument("--short", action="store_true", help="small run for CI")
    parser.add_argument("--no-blackbox", action="store_true", help="skip blackbox_exporter")
    parser.add_argument("--json", help="write the full results here")
    args = parser.parse_args(argv)
    names = ("probes", "concurrency", "rounds", "endpoints")
    defaults = (200, 20, 1, 1000) if args.short else (2000, 100, 3, 10000)
    for name, default in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.probes < args.concurrency:
        parser.error("--probes must be at least --concurrency")
    return args


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postfix": _version(["postconf", "-h", "mail_version"]),
        "blackbox_exporter": _version([blackbox.BINARY, "--version"]),
        "load_average_at_start": os.getloadavg(),
    }


def _version(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


# --- part one: the sweep -------------------------------------------------------------------


def part_one(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    probers: dict[str, Callable[[], dict[str, Any]]] = {
        "tlsprobe": lambda: sweep_process("tlsprobe", fleet, args),
        "bare": lambda: sweep_process("bare", fleet, args),
    }
    skipped = "--no-blackbox" if args.no_blackbox else blackbox.blackbox_unavailable()
    if not skipped:
        probers["blackbox"] = lambda: blackbox.run(fleet, args.probes, args.concurrency)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in probers}
    names = list(probers)
    for index in range(args.rounds):
        # Rotate the order so no prober always runs first (warm caches, a cooler machine).
        for name in names[index % len(names) :] + names[: index % len(names)]:
            rounds[name].append(_per_probe(probers[name]()))
    results: dict[str, Any] = {name: _median_round(runs) for name, runs in rounds.items()}
    if skipped:
        results["blackbox"] = {"skipped": skipped}
    return results


def sweep_process(prober: str, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.sweep",
        prober,
        *_fleet_args(fleet),
        f"--probes={args.probes}",
        f"--concurrency={args.concurrency}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _fleet_args(fleet: Fleet) -> list[str]:
    return [
        f"--port={fleet.port}",
        f"--addresses={','.join(fleet.addresses)}",
        f"--ca-file={fleet.ca_file}",
    ]


def _per_probe(run: dict[str, Any]) -> dict[str, Any]:
    return run | {
        "probes_per_s": run["probes"] / run["wall_s"],
        "cpu_ms_per_probe": run["cpu_s"] * 1e3 / run["probes"],
    }


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, and the median of each figure over rounds."""
    return {
        "probes_per_s": statistics.median(r["probes_per_s"] for r in runs),
        "cpu_ms_per_probe": statistics.median(r["cpu_ms_per_probe"] for r in runs),
        "ok": min(r["ok"] for r in runs),
        "probes": runs[0]["probes"],
        "rounds": runs,
    }


# --- part two: the exporter at scale -------------------------------------------------------


def part_two(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    common = [*_fleet_args(fleet), f"--host={fleet.name}", f"--endpoints={args.endpoints}"]
    render = _scale_process(["render", *common])
    rss = _scale_process(["rss", *common])
    latency = asyncio.run(scrape_latency(fleet, args, common))
    return {"render": render, "rss": rss, "metrics_latency": latency}


def _scale_process(arguments: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scale", *arguments]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def scrape_latency(
    fleet: Fleet, args: argparse.Namespace, common: list[str]
) -> dict[str, Any]:
    """/metrics latency from this process against a real exporter in another, idle and while
    that exporter sweeps the fleet through its own scheduler."""
    samples = 10 if args.short else 50
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.scale",
        "serve",
        *common,
        f"--probes={args.probes}",
        f"--concurrency={args.concurrency}",
        f"--listen-port={free_port()}",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        url = json.loads(await process.stdout.readline())["url"] + "/metrics"
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            await _scrape(session, url)  # the cold render, not counted
            idle = [await _scrape(session, url) for _ in range(samples)]
            process.stdin.write(b"sweep\n")
            await asyncio.sleep(1.0)  # let the sweep reach full concurrency
            busy = [await _scrape(session, url) for _ in range(samples)]
            process.stdin.write(b"stop\n")
            swept = json.loads(await process.stdout.readline())
        process.stdin.write(b"quit\n")
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return {
        "endpoints": args.endpoints,
        "idle": _summary(idle),
        "sweep": _summary(busy),
        "probes_during_sweep": swept,
    }


# Prometheus asks for gzip; the body is read but not decompressed (that is the client's cost).
_SCRAPE_HEADERS = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"}


async def _scrape(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url, headers=_SCRAPE_HEADERS) as response:
        await response.read()
        response.raise_for_status()
    return (time.perf_counter() - started) * 1e3


def _summary(latencies_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median_ms": statistics.median(ordered), "p99_ms": p99}


# --- report --------------------------------------------------------------------------------


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    sweep = report["sweep"]
    tlsprobe, bare, box = sweep["tlsprobe"], sweep["bare"], sweep.get("blackbox", {})
    has_box = "probes_per_s" in box
    latency = report["scale"]["metrics_latency"]
    return {
        "throughput_tlsprobe_vs_blackbox": (
            tlsprobe["probes_per_s"] / box["probes_per_s"] if has_box else None
        ),
        "throughput_tlsprobe_vs_bare": tlsprobe["probes_per_s"] / bare["probes_per_s"],
        "cpu_tlsprobe_vs_bare": tlsprobe["cpu_ms_per_probe"] / bare["cpu_ms_per_probe"],
        "cpu_blackbox_vs_bare": (
            box["cpu_ms_per_probe"] / bare["cpu_ms_per_probe"] if has_box else None
        ),
        "cpu_tlsprobe_vs_blackbox": (
            tlsprobe["cpu_ms_per_probe"] / box["cpu_ms_per_probe"] if has_box else None
        ),
        "scrape_p99_sweep_vs_idle": latency["sweep"]["p99_ms"] / latency["idle"]["p99_ms"],
        "scrape_median_sweep_vs_idle": (
            latency["sweep"]["median_ms"] / latency["idle"]["median_ms"]
        ),
    }


def judge_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    r, scale = report["ratios"], report["scale"]
    endpoints = scale["render"]["endpoints"]
    rows = [
        ("throughput vs blackbox_exporter", ">=", "throughput_vs_blackbox",
         r["throughput_tlsprobe_vs_blackbox"]),
        ("CPU per probe vs bare handshake", "<=", "cpu_vs_bare", r["cpu_tlsprobe_vs_bare"]),
        (f"/metrics render, {endpoints} endpoints, warm (ms)", "<=", "render_warm_ms",
         scale["render"]["warm_ms"]),
        (f"resident memory, {endpoints} targets (MB)", "<=", "rss_mb", scale["rss"]["rss_mb"]),
        ("/metrics p99 during sweep vs idle", "<=", "scrape_p99_sweep_vs_idle",
         r["scrape_p99_sweep_vs_idle"]),
    ]  # fmt: skip
    out = []
    for label, op, key, value in rows:
        limit = TARGETS[key]
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out.append({"target": label, "limit": f"{op} {limit:g}", "measured": value, "met": met})
    return out


def render_table(report: dict[str, Any]) -> str:
    settings, sweep = report["settings"], report["sweep"]
    lines = [
        f"Sweep: {settings['probes']} probes, concurrency {settings['concurrency']}, "
        f"{settings['rounds']} round(s), Postfix fleet on {settings['concurrency']} "
        "loopback addresses",
        "",
        "| prober | probes/s | CPU ms/probe | ok |",
        "|---|---:|---:|---:|",
    ]
    for name in ("tlsprobe", "blackbox", "bare"):
        row = sweep[name]
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | |")
            continue
        lines.append(
            f"| {name} | {row['probes_per_s']:.0f} | {row['cpu_ms_per_probe']:.2f} "
            f"| {row['ok']}/{row['probes']} |"
        )
    scale = report["scale"]
    render, rss, latency = scale["render"], scale["rss"], scale["metrics_latency"]
    lines += [
        "",
        f"Exporter at scale: {render['endpoints']} endpoints, "
        f"/metrics {render['bytes'] / 2**20:.1f} MiB",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| render, cold (every fragment new) | {render['cold_ms']:.0f} ms |",
        f"| render, warm (steady state) | {render['warm_ms']:.0f} ms |",
        f"| resident memory (peak) | {rss['rss_mb']:.0f} MB ({rss['peak_rss_mb']:.0f} MB) |",
        f"| /metrics median / p99, idle | {latency['idle']['median_ms']:.0f} / "
        f"{latency['idle']['p99_ms']:.0f} ms |",
        f"| /metrics median / p99, during sweep | {latency['sweep']['median_ms']:.0f} / "
        f"{latency['sweep']['p99_ms']:.0f} ms |",
        "",
        "| target | limit | measured | met |",
        "|---|---|---:|---|",
    ]
    for row in report["targets"]:
        value = "n/a" if row["measured"] is None else f"{row['measured']:.2f}"
        met = {True: "yes", False: "NO", None: "n/a"}[row["met"]]
        lines.append(f"| {row['target']} | {row['limit']} | {value} | {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

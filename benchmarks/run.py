"""tlsprobe benchmark harness: one command, loopback only; see benchmarks/README.md.

    python3 benchmarks/run.py [--probes N] [--concurrency C] [--rounds R] [--endpoints E]
                              [--loop auto|asyncio|uvloop] [--short] [--no-blackbox]
                              [--no-rsa] [--json FILE]

Part one starts two private Postfix fleets (STARTTLS on C loopback addresses each, certificates
made at start; the leaf key ECDSA P-256 on one, RSA-2048 on the other) and sweeps each with N
probes at concurrency C through three probers, each measured in its own process: tlsprobe (the
scheduler's cycle, evaluation and result store included), prometheus-blackbox-exporter (when
installed), a bare STARTTLS handshake loop (asyncio streams and `start_tls`: the plain asyncio
floor) and `lean`, tlsprobe's own technique without tlsprobe (its socket driver and pyOpenSSL
context, the same exchange, nothing parsed or judged), the last three on the same event loop
(uvloop when installed, unless --loop says otherwise). The target "CPU vs the bare loop" is
tlsprobe over lean: tlsprobe's own work above the handshake it makes; tlsprobe over the asyncio
bare loop is reported beside it. Each round runs all probers once, in
rotating order; the median round is reported. The fleet's own CPU is measured over each sweep,
and the report says whether the bare loop was held back by the fleet (then throughput ratios
say nothing about the probers and are not reported as met or missed).
Part two measures the exporter with E synthetic endpoints: /metrics render time (cold and warm),
resident memory with E targets configured, and /metrics latency idle and during a sweep; then
render and memory again at 5 E, so the cost per endpoint at 5 E over that at E shows whether
either grows faster than the endpoints (1.0 is linear).
Part three runs `tlsprobe check` as a whole process against the ECDSA fleet, interleaved with
check_ssl_cert (when installed) and `openssl s_client -starttls smtp` (benchmarks/checkproc.py).
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

from benchmarks import blackbox, checkproc  # noqa: E402
from benchmarks.fleet import Fleet, PostfixFleet, fleet_unavailable, free_port  # noqa: E402
from benchmarks.sweep import available_loop  # noqa: E402
from tlsprobe.exporter.eventloop import EventLoop  # noqa: E402

TARGETS = {
    "check_cpu_vs_check_ssl_cert": 0.08,
    "cpu_vs_blackbox": 0.67,
    "cpu_vs_blackbox_rsa": 0.67,
    "cpu_vs_bare": 1.15,
    "rss_per_endpoint_growth": 1.1,
    "render_per_changed_growth": 1.2,
    "render_warm_ms": 100.0,
    "rss_mb": 150.0,
}
GROWTH = 5
"""Part two measures render and memory again at this many times --endpoints."""
CHECK_RUNS = 9
"""Interleaved runs of each command in part three (short: 3)."""
PROBER_BOUND = 0.9
"""Cores the bare loop (one thread) must use for the sweep to show probers, not the fleet."""
FLEETS = ("ecdsa", "rsa")
PROBERS = ("tlsprobe", "blackbox", "bare", "lean")
"""Rows of the sweep tables, in order."""


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
    with PostfixFleet(args.concurrency, key="ecdsa") as fleet:
        report["sweep"] = part_one(fleet, args)
        report["scale"] = part_two(fleet, args)
        report["check"] = part_three(fleet, args)
    if not args.no_rsa:
        with PostfixFleet(args.concurrency, key="rsa") as fleet:
            report["sweep_rsa"] = part_one(fleet, args)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["fleet_check"] = fleet_check(report["sweep"])
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
    parser.add_argument("--no-rsa", action="store_true", help="skip the RSA fleet's sweep")
    parser.add_argument(
        "--loop",
        choices=["auto", *(e.value for e in EventLoop)],
        default="auto",
        help="event loop of tlsprobe and the bare loop (auto: uvloop when installed)",
    )
    parser.add_argument("--json", help="write the full results here")
    args = parser.parse_args(argv)
    if args.loop == "auto":
        args.loop = available_loop()
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
        "lean": lambda: sweep_process("lean", fleet, args),
    }
    skipped = "--no-blackbox" if args.no_blackbox else blackbox.blackbox_unavailable()
    if not skipped:
        probers["blackbox"] = lambda: blackbox.run(fleet, args.probes, args.concurrency)
    order = {name: index for index, name in enumerate(PROBERS)}
    probers = dict(sorted(probers.items(), key=lambda item: order[item[0]]))
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
        f"--fleet-pid={fleet.master_pid}",
        f"--loop={args.loop}",
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
    fleet = run.get("fleet_cpu_s")
    return run | {
        "probes_per_s": run["probes"] / run["wall_s"],
        "cpu_ms_per_probe": run["cpu_s"] * 1e3 / run["probes"],
        "cores": run["cpu_s"] / run["wall_s"],
        "fleet_cores": None if fleet is None else fleet / run["wall_s"],
        "fleet_cpu_ms_per_probe": None if fleet is None else fleet * 1e3 / run["probes"],
    }


_MEDIANS = ("probes_per_s", "cpu_ms_per_probe", "cores", "fleet_cores", "fleet_cpu_ms_per_probe")


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over rounds; every round is kept too."""
    medians = {
        key: statistics.median(values) if (values := [r[key] for r in runs if r[key]]) else None
        for key in _MEDIANS
    }
    return medians | {"ok": min(r["ok"] for r in runs), "probes": runs[0]["probes"], "rounds": runs}


# --- part two: the exporter at scale -------------------------------------------------------


def part_two(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    common = [*_fleet_args(fleet), f"--host={fleet.name}", f"--endpoints={args.endpoints}"]
    render = _scale_process(["render", *common])
    rss = _scale_process(["rss", *common])
    latency = asyncio.run(scrape_latency(fleet, args, common))
    larger = [*common[:-1], f"--endpoints={args.endpoints * GROWTH}"]
    grown = {"render": _scale_process(["render", *larger]), "rss": _scale_process(["rss", *larger])}
    return {
        "render": render,
        "rss": rss,
        "metrics_latency": latency,
        "grown": grown,
        "growth": growth(render, rss, grown["render"], grown["rss"]),
    }


def _rss_per_endpoint(rss: dict[str, Any]) -> float:
    """MB per endpoint: the process's resident memory above what it had before the endpoints."""
    return float(rss["rss_mb"] - rss["baseline_rss_mb"]) / float(rss["endpoints"])


def _render_per_changed(render: dict[str, Any]) -> float:
    """CPU ms per changed endpoint of the scrape after 5 % of the endpoints changed."""
    return float(render["changed_5pct_cpu_ms"]) / len(range(0, render["endpoints"], 20))


def growth(
    render: dict[str, Any], rss: dict[str, Any], render_5: dict[str, Any], rss_5: dict[str, Any]
) -> dict[str, Any]:
    """Cost per endpoint at GROWTH times the endpoints over the cost per endpoint at 1x; render
    costs as CPU time, which moves less with the load of a shared machine than wall time."""
    return {
        "endpoints": [render["endpoints"], render_5["endpoints"]],
        "rss_mb_per_endpoint": [_rss_per_endpoint(rss), _rss_per_endpoint(rss_5)],
        "rss_per_endpoint_ratio": _rss_per_endpoint(rss_5) / _rss_per_endpoint(rss),
        "render_ms_per_changed": [_render_per_changed(render), _render_per_changed(render_5)],
        "render_per_changed_ratio": _render_per_changed(render_5) / _render_per_changed(render),
        **{
            f"{key}_per_endpoint_ratio": (render_5[f"{key}_cpu_ms"] / render_5["endpoints"])
            / (render[f"{key}_cpu_ms"] / render["endpoints"])
            for key in _PER_ENDPOINT
        },
    }


_PER_ENDPOINT = ("cold", "status_page_cold", "status_page_rows_cached")
"""Render figures whose cost per endpoint part two compares between the two sizes."""


# --- part three: the check as a process ----------------------------------------------------


def part_three(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    runs = 3 if args.short else CHECK_RUNS
    return checkproc.measure(fleet.addresses[0], fleet.port, str(fleet.ca_file), fleet.name, runs)


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
    # 200: with 50 the "p99" was the single slowest scrape, one hiccup of a shared machine.
    samples = 20 if args.short else 200
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.scale",
        "serve",
        *common,
        f"--probes={args.probes}",
        f"--concurrency={args.concurrency}",
        f"--listen-port={free_port()}",
        f"--loop={args.loop}",
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


def fleet_check(sweep: dict[str, Any]) -> dict[str, Any]:
    """Whether the bare loop, which does the least a prober can, was its own limit.

    The bare loop is one thread: when it used less than PROBER_BOUND of a core over its sweep,
    it spent the rest waiting for the fleet (or for a CPU the fleet and others held), so the
    sweep measured the fleet and throughput ratios between probers mean nothing.
    """
    bare = sweep["bare"]
    bound = bare["cores"] < PROBER_BOUND
    fleet = bare.get("fleet_cores")
    shown = "n/a" if fleet is None else f"{fleet:.2f}"
    if bound:
        note = (
            f"fleet-bound: the bare loop used {bare['cores']:.2f} of a core (the fleet {shown} "
            f"cores); throughput ratios measure the fleet, not the probers"
        )
    else:
        note = (
            f"prober-bound: the bare loop used {bare['cores']:.2f} of a core (the fleet {shown} "
            "cores), so the fleet was not the ceiling"
        )
    return {"fleet_bound": bound, "bare_cores": bare["cores"], "fleet_cores": fleet, "note": note}


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    sweep = report["sweep"]
    tlsprobe, bare, box = sweep["tlsprobe"], sweep["bare"], sweep.get("blackbox", {})
    lean = sweep["lean"]
    has_box = "probes_per_s" in box
    fleet_bound = report["fleet_check"]["fleet_bound"]
    latency = report["scale"]["metrics_latency"]
    throughput_vs_box = tlsprobe["probes_per_s"] / box["probes_per_s"] if has_box else None
    return {
        "throughput_tlsprobe_vs_blackbox": throughput_vs_box,
        "throughput_tlsprobe_vs_blackbox_judged": None if fleet_bound else throughput_vs_box,
        "throughput_tlsprobe_vs_bare": tlsprobe["probes_per_s"] / bare["probes_per_s"],
        "cpu_tlsprobe_vs_bare": tlsprobe["cpu_ms_per_probe"] / bare["cpu_ms_per_probe"],
        "cpu_tlsprobe_vs_lean": tlsprobe["cpu_ms_per_probe"] / lean["cpu_ms_per_probe"],
        "cpu_lean_vs_bare": lean["cpu_ms_per_probe"] / bare["cpu_ms_per_probe"],
        "cpu_blackbox_vs_bare": (
            box["cpu_ms_per_probe"] / bare["cpu_ms_per_probe"] if has_box else None
        ),
        "cpu_tlsprobe_vs_blackbox": (
            tlsprobe["cpu_ms_per_probe"] / box["cpu_ms_per_probe"] if has_box else None
        ),
        "cpu_tlsprobe_vs_blackbox_rsa": _cpu_vs_blackbox(report.get("sweep_rsa")),
        "scrape_p99_sweep_vs_idle": latency["sweep"]["p99_ms"] / latency["idle"]["p99_ms"],
        "scrape_median_sweep_vs_idle": (
            latency["sweep"]["median_ms"] / latency["idle"]["median_ms"]
        ),
    }


def _cpu_vs_blackbox(sweep: dict[str, Any] | None) -> float | None:
    if sweep is None or "cpu_ms_per_probe" not in sweep.get("blackbox", {}):
        return None
    return float(sweep["tlsprobe"]["cpu_ms_per_probe"] / sweep["blackbox"]["cpu_ms_per_probe"])


def judge_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of this round. Throughput and /metrics p99 during a sweep are measured and
    shown but no longer judged: on two cores shared with the fleet they measure the fleet and
    the saturated machine, not the prober or the renderer."""
    r, scale, check = report["ratios"], report["scale"], report["check"]
    endpoints = scale["render"]["endpoints"]
    small, large = scale["growth"]["endpoints"]
    loop = report["settings"]["loop"]
    judged = check["reference"] == "check_ssl_cert"
    rows = [
        ("`tlsprobe check` whole-process CPU vs check_ssl_cert, same server", "<=",
         "check_cpu_vs_check_ssl_cert", check["ratio"] if judged else None),
        ("CPU per probe vs blackbox_exporter, ECDSA fleet", "<=", "cpu_vs_blackbox",
         r["cpu_tlsprobe_vs_blackbox"]),
        ("CPU per probe vs blackbox_exporter, RSA fleet", "<=", "cpu_vs_blackbox_rsa",
         r["cpu_tlsprobe_vs_blackbox_rsa"]),
        (f"CPU per probe vs the bare loop of its own technique (lean, both on {loop})", "<=",
         "cpu_vs_bare", r["cpu_tlsprobe_vs_lean"]),
        (f"resident memory per endpoint, {large} vs {small} endpoints", "<=",
         "rss_per_endpoint_growth", scale["growth"]["rss_per_endpoint_ratio"]),
        (f"/metrics render per changed endpoint, {large} vs {small}", "<=",
         "render_per_changed_growth", scale["growth"]["render_per_changed_ratio"]),
        (f"/metrics warm render, {endpoints} endpoints (ms)", "<=", "render_warm_ms",
         scale["render"]["warm_ms"]),
        (f"resident memory, {endpoints} targets (MB)", "<=", "rss_mb", scale["rss"]["rss_mb"]),
    ]  # fmt: skip
    out = []
    for label, op, key, value in rows:
        limit = TARGETS[key]
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out.append({"target": label, "limit": f"{op} {limit:g}", "measured": value, "met": met})
    return out


def _sweep_table(sweep: dict[str, Any], title: str) -> list[str]:
    lines = [
        title,
        "",
        "| prober | probes/s | CPU ms/probe | cores used | fleet CPU ms/probe | ok |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in PROBERS:
        row = sweep[name]
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
            continue
        fleet = row.get("fleet_cpu_ms_per_probe")
        lines.append(
            f"| {name} | {row['probes_per_s']:.0f} | {row['cpu_ms_per_probe']:.2f} "
            f"| {row['cores']:.2f} | {'n/a' if fleet is None else f'{fleet:.2f}'} "
            f"| {row['ok']}/{row['probes']} |"
        )
    return lines


def _growth_table(scale: dict[str, Any]) -> list[str]:
    g, grown = scale["growth"], scale["grown"]
    small, large = g["endpoints"]
    return [
        f"Cost growth: {small} and {large} endpoints, each in its own process",
        "",
        f"| measurement | {small} | {large} | per endpoint, {large} vs {small} |",
        "|---|---:|---:|---:|",
        f"| resident memory above the empty process (MB) "
        f"| {scale['rss']['rss_mb'] - scale['rss']['baseline_rss_mb']:.0f} "
        f"| {grown['rss']['rss_mb'] - grown['rss']['baseline_rss_mb']:.0f} "
        f"| {g['rss_per_endpoint_ratio']:.2f} |",
        *(
            f"| {label} (CPU ms) | {scale['render'][f'{key}_cpu_ms']:.1f} "
            f"| {grown['render'][f'{key}_cpu_ms']:.1f} | {ratio:.2f} |"
            for key, label, ratio in (
                (
                    "changed_5pct",
                    "render, 5 % of the endpoints changed",
                    g["render_per_changed_ratio"],
                ),
                ("cold", "render, cold", g["cold_per_endpoint_ratio"]),
                ("status_page_cold", "status page, cold", g["status_page_cold_per_endpoint_ratio"]),
                (
                    "status_page_rows_cached",
                    "status page, rows cached",
                    g["status_page_rows_cached_per_endpoint_ratio"],
                ),
            )
        ),
    ]


def _check_table(check: dict[str, Any]) -> list[str]:
    runs = check["tlsprobe"]["runs"]
    lines = [
        f"Check as a process (what Nagios runs), against the ECDSA fleet: CPU of the whole "
        f"process and its children, median of {runs} interleaved runs",
        "",
        "| command | CPU ms (min-max) | exit codes |",
        "|---|---:|---|",
    ]
    for name in ("tlsprobe", "check_ssl_cert", "s_client", "imports"):
        row = check[name]
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | |")
            continue
        codes = ",".join(str(c) for c in row["exit_codes"])
        lines.append(
            f"| {name} | {row['cpu_ms']:.0f} ({row['min_ms']:.0f}-{row['max_ms']:.0f}) | {codes} |"
        )
    lines += [
        "",
        f"tlsprobe check vs {check['reference']}: {check['ratio']:.3f}; the imports alone "
        f"(interpreter, asyncio, pyOpenSSL, cryptography) are {check['imports_share']:.0%} of it",
    ]
    return lines


def render_table(report: dict[str, Any]) -> str:
    settings, machine_ = report["settings"], report["machine"]
    load = machine_["load_average_at_start"], machine_["load_average_at_end"]
    lines = [
        f"{machine_['cpus']} CPUs, Python {machine_['python']}, event loop {settings['loop']}; "
        f"load average {load[0][0]:.2f} at the start, {load[1][0]:.2f} at the end",
        "",
        *_sweep_table(
            report["sweep"],
            f"Sweep, ECDSA P-256 fleet: {settings['probes']} probes, concurrency "
            f"{settings['concurrency']}, {settings['rounds']} round(s), Postfix on "
            f"{settings['concurrency']} loopback addresses",
        ),
        "",
        f"Fleet check: {report['fleet_check']['note']}",
    ]
    if "sweep_rsa" in report:
        lines += ["", *_sweep_table(report["sweep_rsa"], "Sweep, RSA-2048 fleet (same settings)")]
    scale = report["scale"]
    render, rss, latency = scale["render"], scale["rss"], scale["metrics_latency"]
    lines += [
        "",
        f"Exporter at scale: {render['endpoints']} endpoints, "
        f"/metrics {render['bytes'] / 2**20:.1f} MiB ({render['gzip_bytes'] / 2**20:.1f} MiB "
        "gzipped)",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| render, cold (every endpoint new) | {render['cold_ms']:.0f} ms |",
        f"| render, warm (nothing changed) | {render['warm_ms']:.0f} ms |",
        f"| render, the fleet's 100 endpoints changed | {render['changed_fleet_ms']:.0f} ms |",
        f"| render, 5 % of the endpoints changed | {render['changed_5pct_ms']:.0f} ms |",
        f"| render, plain text (client without gzip) | {render['plain_text_ms']:.0f} ms |",
        f"| resident memory (peak) | {rss['rss_mb']:.0f} MB ({rss['peak_rss_mb']:.0f} MB) |",
        f"| /metrics median / p99, idle | {latency['idle']['median_ms']:.0f} / "
        f"{latency['idle']['p99_ms']:.0f} ms |",
        f"| /metrics median / p99, during sweep | {latency['sweep']['median_ms']:.0f} / "
        f"{latency['sweep']['p99_ms']:.0f} ms |",
        "",
        *_growth_table(scale),
        "",
        *_check_table(report["check"]),
        "",
        "| target | limit | measured | met |",
        "|---|---|---:|---|",
    ]
    for row in report["targets"]:
        value = "n/a" if row["measured"] is None else f"{row['measured']:.2f}"
        met = {True: "yes", False: "NO", None: "n/a"}[row["met"]]
        lines.append(f"| {row['target']} | {row['limit']} | {value} | {met} |")
    r = report["ratios"]
    lines += [
        "",
        f"CPU per probe, tlsprobe vs the asyncio bare loop (streams, start_tls): "
        f"{r['cpu_tlsprobe_vs_bare']:.2f}; lean vs the same loop: {r['cpu_lean_vs_bare']:.2f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Part two: the exporter at scale, with synthetic results.

One real probe of the fleet gives a template `ProbeResult`; copies of it with distinct labels
(tenant, target, host, address) and a distinct leaf (fresh DER-sized bytes, fingerprint and
serial, so no two endpoints share their leaf's memory; the intermediate is shared, as it is in
real fleets) stand for N endpoints. Three measurements, each in its own process:

- `render`: the /metrics body for N endpoints as a scrape makes it (`SnapshotRenderer`, gzip),
  cold (every endpoint new), warm (nothing changed), after some endpoints changed, and as plain
  text; `TextRenderer` (the same text without the cache of compressed blocks) cold and warm
  beside it.
- `rss`: resident memory of a process holding N configured targets: the parsed `Config`, a
  `Scheduler` with its N target loops started (parked in their first sleep, so nothing is
  probed), `LatestResults` and the SQLite drift history filled with N results, and one rendered
  scrape (gzip, as Prometheus asks) held, with the renderer's cache it filled.
- `serve`: a real `Exporter` (aiohttp) with N endpoints in its results and the fleet's targets;
  on "sweep" on stdin it runs the benchmark sweep through its own scheduler, so /metrics latency
  can be measured idle and during a sweep by a client in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gzip
import hashlib
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.sweep import fleet_config, run_on, run_workers, tlsprobe_prober
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.exchange import attribution
from tlsprobe.exporter.exposition import collector
from tlsprobe.exporter.exposition.metrics import TextRenderer
from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
from tlsprobe.exporter.history.store import HistoryStore, history_path
from tlsprobe.exporter.pages.status import PAGE_TTL, StatusPage, View
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.exporter.state import EndpointState
from tlsprobe.exporter.web.authgate import AuthGate
from tlsprobe.exporter.web.connections import ConnectionGuard
from tlsprobe.exporter.web.probelimit import ProbeLimiter
from tlsprobe.model import CertFacts, Endpoint, ProbeResult
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.x509.evaluate import TrustStore


async def template_result(address: str, port: int, ca_file: str, host: str) -> ProbeResult:
    endpoint = Endpoint(host=host, port=port, address=address, sni=host, ehlo_name="bench.test")
    trust = TrustStore.from_pem_file(ca_file)
    config = fleet_config([address], port, ca_file, tempfile.gettempdir(), 1)
    result = await probe_endpoint(endpoint, config.targets[0].policy, trust, timeout=10)
    if not result.success:
        raise RuntimeError(f"template probe failed: {result.error}")
    return result


def synthetic_states(template: ProbeResult, count: int) -> list[EndpointState]:
    return [_synthetic(template, i) for i in range(count)]


def _synthetic(template: ProbeResult, index: int) -> EndpointState:
    leaf = template.chain[0]
    host = f"mx{index}.tenant{index // 10}.bench.test"
    der = index.to_bytes(4, "big") + leaf.der[4:]  # same size, its own memory and fingerprint
    fake_leaf: CertFacts = dataclasses.replace(
        leaf,
        der=der,
        sha256=hashlib.sha256(der).hexdigest(),
        serial=f"{index:040X}",
        subject=f"CN={host},O=tlsprobe test server",
        dns_names=(host,),
        common_names=(host,),
    )
    endpoint = dataclasses.replace(
        template.endpoint, host=host, address=_address(index), target=f"node{index}"
    )
    result = dataclasses.replace(
        template,
        endpoint=endpoint,
        address=endpoint.address,
        chain=(fake_leaf, *template.chain[1:]),
        started_at=template.started_at + index * 1e-3,
    )
    return EndpointState(f"tenant{index // 10}", f"node{index}", result, interval=300.0)


def _address(index: int) -> str:
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def measure_render(states: Sequence[EndpointState], repeats: int) -> dict[str, Any]:
    """/metrics as a scrape renders it (`SnapshotRenderer`: the gzip body Prometheus asks for):
    cold, warm (nothing changed), after a sweep of the fleet (the last 100 endpoints changed)
    and after 5 % of all endpoints changed (one 15 s scrape interval of 300 s probes); the plain
    text for clients without gzip; and `TextRenderer` (what /metrics used before) beside it.
    Each render includes the exporter registry's part: the web side's own numbers and the
    process, platform and GC series (held up to `STANDARD_MAX_AGE`, as a scrape sees them;
    `warm_collecting_ms` collects them at every render)."""
    renderer = SnapshotRenderer()
    scrape = functools.partial(_scrape, renderer, _registry())
    collecting = functools.partial(_scrape, renderer, _registry(collect_every_time=True))
    cold_cpu = time.process_time()
    cold, body = _timed(lambda: scrape(states))
    cold_cpu = time.process_time() - cold_cpu
    warm = [_timed(lambda: scrape(states))[0] for _ in range(repeats)]
    warm_collecting = [_timed(lambda: collecting(states))[0] for _ in range(repeats)]
    openmetrics = [
        _timed(lambda: scrape(states, openmetrics=True))[0] for _ in range(max(repeats // 4, 3))
    ]
    text = gzip.decompress(body)
    plain = [_timed(lambda: gzip.decompress(scrape(states)))[0] for _ in range(3)]
    return {
        "endpoints": len(states),
        "bytes": len(text),
        "gzip_bytes": len(body),
        "cold_ms": cold * 1e3,
        "cold_cpu_ms": cold_cpu * 1e3,
        "warm_ms": statistics.median(warm) * 1e3,
        "warm_max_ms": max(warm) * 1e3,
        "warm_collecting_ms": statistics.median(warm_collecting) * 1e3,
        "warm_openmetrics_ms": statistics.median(openmetrics) * 1e3,
        "plain_text_ms": statistics.median(plain) * 1e3,
        **_changed(scrape, states, range(len(states) - 100, len(states)), "changed_fleet"),
        **_changed(scrape, states, range(0, len(states), 20), "changed_5pct"),
        **measure_text_renderer(states, repeats),
        **measure_status_page(states, repeats),
        **measure_attribution(states, repeats),
    }


def _timed(work: Callable[[], bytes]) -> tuple[float, bytes]:
    started = time.perf_counter()
    out = work()
    return time.perf_counter() - started, out


def _registry(*, collect_every_time: bool = False) -> collector.ExporterRegistry:
    """The exporter registry with the web side's parts, at zero."""
    clock = (
        itertools.count(step=collector.STANDARD_MAX_AGE).__next__ if collect_every_time else None
    )
    registry = collector.ExporterRegistry(clock=clock) if clock else collector.ExporterRegistry()
    for part in (ConnectionGuard(512, 5.0), AuthGate(), ProbeLimiter[object](0.0)):
        registry.add_part(part.samples)
    return registry


def _scrape(
    renderer: SnapshotRenderer,
    registry: collector.ExporterRegistry,
    states: Sequence[EndpointState],
    *,
    openmetrics: bool = False,
) -> bytes:
    """The gzip body of one /metrics scrape, as `Scrape` renders it."""
    tail = registry.exposition(openmetrics=openmetrics)
    return renderer.gzip(states, tail=tail, openmetrics=openmetrics)


def _changed(
    scrape: Callable[[Sequence[EndpointState]], bytes],
    states: Sequence[EndpointState],
    which: range,
    name: str,
) -> dict[str, float]:
    """Milliseconds of the scrape after the endpoints `which` got a new result (median of 3),
    as wall time (`NAME_ms`) and as the process's CPU time (`NAME_cpu_ms`, what a comparison
    between sizes uses: it moves less with the load of a shared machine)."""
    timings, cpu = [], []
    for round_ in range(1, 4):
        newer = list(states)
        for index in which:
            result = newer[index].result
            newer[index] = dataclasses.replace(
                newer[index],
                result=dataclasses.replace(result, started_at=result.started_at + round_),
            )
        started = time.process_time()
        timings.append(_timed(functools.partial(scrape, newer))[0])
        cpu.append(time.process_time() - started)
    scrape(states)
    return {
        f"{name}_ms": statistics.median(timings) * 1e3,
        f"{name}_cpu_ms": statistics.median(cpu) * 1e3,
    }


def measure_text_renderer(states: Sequence[EndpointState], repeats: int) -> dict[str, float]:
    """The text renderer (the same text without the compressed blocks): cold, and warm."""
    renderer = TextRenderer()
    cold = _timed(lambda: renderer.render(states))[0]
    warm = [_timed(lambda: renderer.render(states))[0] for _ in range(max(repeats // 4, 3))]
    return {
        "text_renderer_cold_ms": cold * 1e3,
        "text_renderer_warm_ms": statistics.median(warm) * 1e3,
    }


def measure_status_page(states: Sequence[EndpointState], repeats: int) -> dict[str, float]:
    """GET / rendered from scratch, rebuilt from cached rows, and served within its TTL; then,
    from that snapshot, one tenant's view and a search (wall time, and CPU time as
    `..._cpu_ms`)."""
    now = time.time()
    timings: dict[str, list[float]] = {}
    tenant, search = View(tenant="tenant7"), View(q="mx77")
    for _ in range(max(repeats // 4, 3)):
        page = StatusPage()
        for kind, moment, view in (
            ("cold", now, View()),
            ("rows_cached", now + PAGE_TTL, View()),
            ("within_ttl", now + PAGE_TTL, View()),
            ("tenant_view", now + PAGE_TTL, tenant),
            ("search", now + PAGE_TTL, search),
        ):
            started, cpu = time.perf_counter(), time.process_time()
            page.render(lambda: states, moment, started_at=0.0, view=view)
            timings.setdefault(f"{kind}_ms", []).append(time.perf_counter() - started)
            timings.setdefault(f"{kind}_cpu_ms", []).append(time.process_time() - cpu)
    return {f"status_page_{k}": statistics.median(v) * 1e3 for k, v in timings.items()}


def measure_attribution(states: Sequence[EndpointState], repeats: int) -> dict[str, float]:
    """Cross-tenant findings over the fleet with 10 leaves each shared by two tenants (20
    endpoints named): the scrape's snapshot with the named states marked (`cross_tenant`)
    beside the plain snapshot, the findings' check when nothing changed, and a recomputation."""
    fleet = list(states)
    for k in range(min(10, len(fleet) // 20)):  # node 20k+10 (another tenant) serves 20k's leaf
        shared = fleet[20 * k + 10]
        chain = fleet[20 * k].result.chain
        fleet[20 * k + 10] = dataclasses.replace(
            shared, result=dataclasses.replace(shared.result, chain=chain)
        )
    results = LatestResults()
    for state in fleet:
        results.put(state)
    marks = attribution.Attribution()
    recompute = []
    for _ in range(3):
        started = time.perf_counter()
        attribution.Attribution().current(fleet, (), {})
        recompute.append(time.perf_counter() - started)
    found = marks.current(fleet, (), {})
    timings: dict[str, list[float]] = {}
    for _ in range(repeats):
        for kind, work in (
            ("snapshot", results.snapshot),
            ("snapshot_marked", lambda: results.snapshot_marked(marks.endpoints, marks.mark)),
            ("unchanged", lambda: marks.current(results.snapshot(), (), {})),
        ):
            started = time.perf_counter()
            work()
            timings.setdefault(kind, []).append(time.perf_counter() - started)
    out = {f"attribution_{k}_ms": statistics.median(v) * 1e3 for k, v in timings.items()}
    return {
        **out,
        "attribution_findings": float(len(found)),
        "attribution_named": float(len(marks.endpoints)),
        "attribution_recompute_ms": statistics.median(recompute) * 1e3,
        "attribution_marked_ratio": out["attribution_snapshot_marked_ms"]
        / out["attribution_snapshot_ms"],
    }


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    current = int(fields["VmRSS"].split()[0]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return current, peak


async def measure_rss(template: ProbeResult, count: int, ca_file: str) -> dict[str, Any]:
    baseline = rss_bytes()[0]
    states = synthetic_states(template, count)
    with tempfile.TemporaryDirectory(prefix="tlsprobe-bench-rss-") as state_dir:
        targets = [
            {"name": s.target, "host": s.result.endpoint.host, "address": s.result.address}
            for s in states
        ]
        data = {
            "state_dir": state_dir,
            "defaults": {"ca_file": ca_file},
            "tenants": {"bench": {"accepted_domains": ["bench.test"], "targets": targets}},
        }
        config = parse_config(data, base_dir=Path(state_dir))
        parked = asyncio.Event()

        async def park(_: float) -> None:
            await parked.wait()

        results = LatestResults()
        history = HistoryStore(history_path(Path(state_dir)))
        scheduler = Scheduler(config, results=results, history=history, sleep=park)
        scheduler.start()
        await asyncio.sleep(0)
        for target, state in zip(config.targets, states, strict=True):
            scheduler.publish(target, state.result)
        # One scrape as Prometheus asks for it (gzip), the renderer's cache filled by it.
        body = SnapshotRenderer().gzip(results.snapshot())
        current, peak = rss_bytes()
        await scheduler.stop()
        history.close()
    return {
        "endpoints": count,
        "targets": len(config.targets),
        "rss_mb": current / 2**20,
        "peak_rss_mb": peak / 2**20,
        "baseline_rss_mb": baseline / 2**20,
        "scrape_gzip_bytes": len(body),
    }


# --- the exporter under test, for /metrics latency ------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    template = await template_result(args.addresses[0], args.port, args.ca_file, args.host)
    with tempfile.TemporaryDirectory(prefix="tlsprobe-bench-serve-") as state_dir:
        fleet = fleet_config(
            args.addresses,
            args.port,
            args.ca_file,
            state_dir,
            args.concurrency,
            listen=f"127.0.0.1:{args.listen_port}",
        )
        exporter = Exporter(dataclasses.replace(fleet, targets=()))
        for state in synthetic_states(template, args.endpoints):
            exporter.results.put(state)
        await exporter.start()
        _say({"url": exporter.url})
        try:
            await _obey(exporter, fleet.targets, args)
        finally:
            await exporter.stop()


async def _obey(exporter: Any, targets: Sequence[Any], args: argparse.Namespace) -> None:
    """stdin commands: `sweep` starts sweeping the fleet through the exporter's own scheduler,
    round after round; `stop` ends that and reports the probes finished meanwhile (counted one
    by one: a sweep often stops mid-round), wall and CPU; `quit` (or EOF) ends."""
    sweeping: asyncio.Task[None] | None = None
    totals = {"probes": 0, "ok": 0}
    probe = tlsprobe_prober(exporter.scheduler, targets)

    async def counted(worker: int) -> bool:
        ok = await probe(worker)
        totals["probes"] += 1
        totals["ok"] += ok
        return ok

    async def sweep_forever() -> None:
        while True:
            await run_workers(counted, args.probes, args.concurrency)

    started = (0.0, 0.0)
    while command := (await asyncio.to_thread(sys.stdin.readline)).strip():
        if command == "sweep" and sweeping is None:
            totals.update(probes=0, ok=0)
            started = (time.perf_counter(), time.process_time())
            sweeping = asyncio.create_task(sweep_forever())
        elif command == "stop" and sweeping is not None:
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)
            sweeping = None
            wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
            _say({**totals, "wall_s": wall, "cpu_s": cpu})
        elif command == "quit":
            break


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["render", "rss", "serve"])
    parser.add_argument("--endpoints", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--addresses", type=lambda s: s.split(","), required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--loop", default="asyncio", help="event loop of the served exporter")
    args = parser.parse_args(argv)
    if args.what == "serve":
        run_on(args.loop, serve(args))
        return 0
    template = asyncio.run(template_result(args.addresses[0], args.port, args.ca_file, args.host))
    if args.what == "render":
        _say(measure_render(synthetic_states(template, args.endpoints), args.repeats))
    else:
        _say(asyncio.run(measure_rss(template, args.endpoints, args.ca_file)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

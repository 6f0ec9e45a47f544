"""A/B of the /metrics render between two checkouts, in interleaved rounds of one run.

    python3 benchmarks/render_ab.py [--rounds R] [--endpoints N] OTHER_CHECKOUT

Each round renders, in one process per variant (this checkout and OTHER_CHECKOUT, the order
alternating), N synthetic endpoints (`benchmarks.scale.synthetic_states` over a result judged
from a generated chain: no fleet, no root) with the variant's own self-metrics, and reports the
median of 60 warm renders (nothing changed) and of 5 renders after 5 % of the endpoints got a
new result. The report gives each variant's medians and the per-round ratios (this checkout
over the other) with their spread: load that lasts a round cancels out of a ratio. A checkout
from before issue 20 renders `ExporterStats`; a later one its `ExporterRegistry` with the real
parts (exporter, scheduler, DNS policies, connection guard, auth gate, probe limiter), and also
reports the warm render when the process, platform and GC series are collected afresh
(`warm_collecting_ms`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHANGED_ROUNDS = 5
WARM_RENDERS = 60


def measure(endpoints: int) -> dict[str, Any]:
    """This process's checkout (first on sys.path) rendering `endpoints` endpoints."""
    from benchmarks.scale import synthetic_states
    from tests.support.pki import make_hierarchy
    from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
    from tlsprobe.model import Capture, Endpoint, Policy, TlsInfo
    from tlsprobe.probe.prober import judge
    from tlsprobe.probe.x509.evaluate import TrustStore

    now = datetime.now(UTC)
    pki = make_hierarchy("Contoso Test")
    trust = TrustStore.from_pem(pki.ca_pem, source="test root")
    endpoint = Endpoint(host="mail.contoso.test", address="127.0.0.1", target="relay")
    capture = Capture(
        address=endpoint.address,
        chain_der=(pki.leaf(("mail.contoso.test",)).der, pki.intermediate.der),
        tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        phases={"connect": 0.01, "banner": 0.02, "ehlo": 0.01, "handshake": 0.03, "total": 0.08},
    )
    policy = Policy(certificate_domain="*.bench.test", accepted_domains=("bench.test",))
    template = judge(endpoint, capture, policy, trust, started_at=now.timestamp(), now=now)
    states = synthetic_states(template, endpoints)
    renderer = SnapshotRenderer()
    scrape, collecting = _variant(renderer)

    def timed(work: Callable[[], object]) -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    scrape(states)  # cold
    out: dict[str, Any] = {
        "warm_ms": statistics.median(timed(lambda: scrape(states)) for _ in range(WARM_RENDERS))
        * 1e3
    }
    timings = []
    for round_ in range(1, CHANGED_ROUNDS + 1):
        newer = list(states)
        for index in range(0, len(states), 20):
            result = newer[index].result
            newer[index] = dataclasses.replace(
                newer[index],
                result=dataclasses.replace(result, started_at=result.started_at + round_),
            )
        timings.append(timed(lambda: scrape(newer)))  # noqa: B023 (called at once)
    scrape(states)
    out["changed_5pct_ms"] = statistics.median(timings) * 1e3
    if collecting is not None:
        runs = [timed(lambda: collecting(states)) for _ in range(WARM_RENDERS)]
        out["warm_collecting_ms"] = statistics.median(runs) * 1e3
    return out


Render = Callable[[Sequence[Any]], bytes]


def _variant(renderer: Any) -> tuple[Render, Render | None]:
    """The scrape of this checkout, and (after issue 20) one that collects the process series
    at every render."""
    try:
        from tlsprobe.exporter.exposition import collector
    except ImportError:
        from tlsprobe.exporter.exposition.metrics import (  # type: ignore[attr-defined]
            ExporterStats,
        )

        stats = ExporterStats(external_url="http://localhost:9464", targets_configured=1)
        return lambda states: renderer.gzip(states, stats.snapshot()), None
    from tlsprobe.exporter.app import Exporter
    from tlsprobe.exporter.config import parse_config
    from tlsprobe.exporter.dnspolicies import DnsPolicies
    from tlsprobe.exporter.results import LatestResults
    from tlsprobe.exporter.scheduler import Scheduler
    from tlsprobe.exporter.web.authgate import AuthGate
    from tlsprobe.exporter.web.connections import ConnectionGuard
    from tlsprobe.exporter.web.probelimit import ProbeLimiter

    state_dir = Path(tempfile.mkdtemp(prefix="render-ab-"))
    target = {"name": "mx", "host": "mx.contoso.test", "address": "127.0.0.1"}
    tenants = {"contoso": {"accepted_domains": ["contoso.test"], "targets": [target]}}
    config = parse_config({"state_dir": str(state_dir), "tenants": tenants}, base_dir=state_dir)
    exporter = Exporter(config)
    exporter.bound = [("127.0.0.1", 9464)]
    parts = [
        exporter.samples,
        Scheduler(config, results=LatestResults(), resolver="unused").samples,
        DnsPolicies(config).samples,
        ConnectionGuard(512, 5.0).samples,
        AuthGate().samples,
        ProbeLimiter[object](0.0).samples,
    ]
    held = collector.exporter_registry(parts)
    always = collector.ExporterRegistry(
        clock=itertools.count(step=collector.STANDARD_MAX_AGE).__next__
    )
    for part in parts:
        always.add_part(part)

    def scrape(registry: collector.ExporterRegistry) -> Render:
        return lambda states: renderer.gzip(states, tail=registry.exposition(openmetrics=False))

    return scrape(held), scrape(always)


def run(checkout: Path, endpoints: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", str(checkout), "--endpoints", str(endpoints)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=checkout)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        sys.path.insert(0, str(args.one.resolve()))
        print(json.dumps(measure(args.endpoints)))
        return 0
    if args.other is None:
        parser.error("OTHER_CHECKOUT is required")
    variants = {"this": REPO, "other": args.other.resolve()}
    rounds: list[dict[str, dict[str, Any]]] = []
    for index in range(args.rounds):
        order = list(variants) if index % 2 == 0 else list(reversed(variants))
        rounds.append({label: run(variants[label], args.endpoints) for label in order})
    report: dict[str, Any] = {"endpoints": args.endpoints, "rounds": args.rounds}
    for key in ("warm_ms", "changed_5pct_ms"):
        ratios = [r["this"][key] / r["other"][key] for r in rounds]
        report[key] = {
            "this": statistics.median(r["this"][key] for r in rounds),
            "other": statistics.median(r["other"][key] for r in rounds),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    collecting = [
        r["this"]["warm_collecting_ms"] for r in rounds if "warm_collecting_ms" in r["this"]
    ]
    if collecting:
        report["this_warm_collecting_ms"] = statistics.median(collecting)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

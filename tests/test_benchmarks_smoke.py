"""The benchmark harness in its short mode, so it cannot rot; and the evaluation cache it motivated.

The harness run asserts that every figure and ratio is there and that every probe succeeded,
never how fast anything was: timings belong to benchmarks/README.md, not to a test. It needs a
Postfix it may start (root, Debian's postfix package) and skips without one, unless
TLSPROBE_REQUIRE_POSTFIX=1 says this run must have it (CI).

The cache tests compare `evaluate_der` with a from-scratch evaluation (caches cleared) at times
that step across every validity boundary of the chain: cached and fresh verdicts must be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fleet import fleet_unavailable
from tests.support.gates import Gate, prometheus_tool_or_none, unavailable
from tests.support.pki import Hierarchy, make_hierarchy
from tlsprobe.model import Policy, TlsInfo
from tlsprobe.probe.x509.evaluate import TrustStore, Verdict, clear_caches, evaluate_der

REPO = Path(__file__).resolve().parent.parent
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
HOST = "relay.contoso.test"
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


# --- the harness ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    problem = fleet_unavailable()
    if problem:
        unavailable(Gate.POSTFIX, problem)
    out = tmp_path_factory.mktemp("bench") / "short.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--short", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| tlsprobe |" in done.stdout
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.postfix
@pytest.mark.slow
def test_every_prober_swept_both_fleets_without_a_failed_probe(short_run: dict[str, Any]) -> None:
    probers = ["tlsprobe", "bare", "lean"]
    if prometheus_tool_or_none("blackbox_exporter"):
        probers.append("blackbox")
    else:
        assert "skipped" in short_run["sweep"]["blackbox"]
    for fleet in ("sweep", "sweep_rsa"):  # ECDSA P-256 leaf, then RSA-2048
        for name in probers:
            row = short_run[fleet][name]
            assert row["ok"] == row["probes"] == 200, (fleet, name)
            assert row["probes_per_s"] > 0 and row["cpu_ms_per_probe"] > 0, (fleet, name)
            assert row["cores"] > 0 and row["fleet_cpu_ms_per_probe"] > 0, (fleet, name)


@pytest.mark.postfix
@pytest.mark.slow
def test_ratios_and_targets_are_computed(short_run: dict[str, Any]) -> None:
    ratios = short_run["ratios"]
    assert ratios["cpu_tlsprobe_vs_bare"] > 0
    assert ratios["cpu_tlsprobe_vs_lean"] > 0
    assert ratios["scrape_p99_sweep_vs_idle"] > 0
    if prometheus_tool_or_none("blackbox_exporter"):
        assert ratios["throughput_tlsprobe_vs_blackbox"] > 0
    targets = short_run["targets"]
    assert len(targets) == 8
    for row in targets:
        assert row["met"] is None or row["met"] == _holds(row["limit"], row["measured"])


@pytest.mark.postfix
@pytest.mark.slow
def test_a_fleet_bound_sweep_judges_no_throughput(short_run: dict[str, Any]) -> None:
    check = short_run["fleet_check"]
    bare_cores = short_run["sweep"]["bare"]["cores"]
    assert check["fleet_bound"] == (bare_cores < 0.9)
    assert check["note"].startswith("fleet-bound" if check["fleet_bound"] else "prober-bound")
    if check["fleet_bound"]:
        assert short_run["ratios"]["throughput_tlsprobe_vs_blackbox_judged"] is None


def _holds(limit: str, measured: float) -> bool:
    op, value = limit.split()
    return measured >= float(value) if op == ">=" else measured <= float(value)


@pytest.mark.postfix
@pytest.mark.slow
def test_exporter_scale_figures_are_present(short_run: dict[str, Any]) -> None:
    scale = short_run["scale"]
    assert scale["render"]["endpoints"] == 1000
    assert scale["render"]["bytes"] > 1000 * 1000  # every endpoint contributed its samples
    assert scale["rss"]["targets"] == 1000
    assert scale["rss"]["rss_mb"] > 0
    latency = scale["metrics_latency"]
    for phase in ("idle", "sweep"):
        assert latency[phase]["n"] == 20
        assert 0 < latency[phase]["median_ms"] <= latency[phase]["p99_ms"]
    swept = latency["probes_during_sweep"]
    assert 0 < swept["ok"] == swept["probes"]


@pytest.mark.postfix
@pytest.mark.slow
def test_cost_growth_compares_five_times_the_endpoints(short_run: dict[str, Any]) -> None:
    scale = short_run["scale"]
    assert scale["growth"]["endpoints"] == [1000, 5000]
    assert scale["grown"]["rss"]["targets"] == 5000
    assert scale["grown"]["render"]["bytes"] > 5 * scale["render"]["bytes"] * 0.9
    for key in ("rss_per_endpoint_ratio", "render_per_changed_ratio", "cold_per_endpoint_ratio"):
        assert scale["growth"][key] > 0, key


@pytest.mark.postfix
@pytest.mark.slow
def test_the_check_process_ran_beside_its_references(short_run: dict[str, Any]) -> None:
    check = short_run["check"]
    assert check["tlsprobe"]["exit_codes"] == [0]  # the fleet's certificate judged OK each run
    assert check["s_client"]["exit_codes"] == [0]
    assert check["tlsprobe"]["runs"] == 3
    if "skipped" not in check["check_ssl_cert"]:
        assert check["reference"] == "check_ssl_cert"
        assert check["check_ssl_cert"]["exit_codes"] == [0]
    else:
        assert check["reference"] == "s_client"
    assert check["ratio"] > 0 and check["imports_share"] > 0


# --- the evaluation cache ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="bench root")


def _fresh(chain: tuple[bytes, ...], store: TrustStore, now: datetime, **kw: object) -> Verdict:
    clear_caches()
    return _cached(chain, store, now, **kw)


def _cached(chain: tuple[bytes, ...], store: TrustStore, now: datetime, **kw: object) -> Verdict:
    args: dict[str, Any] = {"host": HOST, "tls": TLS, "policy": POLICY} | kw
    return evaluate_der(chain, trust=store, now=now, **args)


def _moments(*bounds: datetime) -> list[datetime]:
    """Times on, just before and just after every boundary, and well between them."""
    out = [NOW]
    for bound in bounds:
        for delta in (-3600, -2, -1, -0.5, 0, 0.5, 1, 2, 3600):
            out.append(bound + timedelta(seconds=delta))
    return sorted(out)


def test_cached_verdicts_equal_fresh_ones_across_leaf_expiry(
    ca: Hierarchy, store: TrustStore
) -> None:
    leaf = ca.leaf((HOST,), not_before=NOW - timedelta(days=80), not_after=NOW + timedelta(days=10))
    chain = (leaf.der, ca.intermediate.der)
    bounds = (NOW - timedelta(days=80), NOW + timedelta(days=3), NOW + timedelta(days=10))
    clear_caches()
    cached = [_cached(chain, store, t) for t in _moments(*bounds)]
    fresh = [_fresh(chain, store, t) for t in _moments(*bounds)]
    assert cached == fresh
    statuses = {v.checks[2].status.name for v in fresh}
    assert statuses == {"OK", "CRITICAL"}  # the walk did cross the leaf's expiry


def test_cached_verdicts_equal_fresh_ones_across_intermediate_expiry(store: TrustStore) -> None:
    short = make_hierarchy("Bench Short Intermediate")
    anchor = TrustStore.from_pem(short.ca_pem, source="short root")
    expiry = short.intermediate.cert.not_valid_after_utc
    leaf = short.leaf((HOST,), not_after=expiry + timedelta(days=100))
    chain = (leaf.der, short.intermediate.der)
    moments = _moments(expiry, leaf.cert.not_valid_before_utc)
    clear_caches()
    cached = [_cached(chain, anchor, t) for t in moments]
    fresh = [_fresh(chain, anchor, t) for t in moments]
    assert cached == fresh
    assert {v.checks[2].reason for v in fresh} >= {None, "intermediate_expired"}


def test_cache_keys_on_host_policy_tls_and_trust_store(ca: Hierarchy, store: TrustStore) -> None:
    leaf = ca.leaf((HOST,), not_after=NOW + timedelta(days=90))
    chain = (leaf.der, ca.intermediate.der)
    other_store = TrustStore.from_pem(make_hierarchy("Bench Other").ca_pem, source="other")
    variants: list[dict[str, Any]] = [
        {},
        {"host": "other.contoso.test"},
        {"policy": Policy(certificate_domain="mail.fabrikam.test")},
        {"tls": TlsInfo("TLSv1", "AES128-SHA")},
        {"policy": Policy(expected=("00" * 32,))},
    ]
    clear_caches()
    cached = [_cached(chain, store, NOW, **kw) for kw in variants]
    cached.append(_cached(chain, other_store, NOW))
    fresh = [_fresh(chain, store, NOW, **kw) for kw in variants]
    fresh.append(_fresh(chain, other_store, NOW))
    assert cached == fresh
    assert len({v.checks for v in fresh}) == len(fresh)  # every variant changed the verdict


def test_the_render_ab_reports_every_figure(tmp_path: Path) -> None:
    """benchmarks/render_ab.py, one round of this checkout against itself at 40 endpoints
    (each side in its own process, from another directory): every figure is there, none is
    judged."""
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "render_ab.py"),
        "--rounds",
        "1",
        "--endpoints",
        "40",
        str(REPO),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path)
    report = json.loads(done.stdout)
    assert report["endpoints"] == 40
    for key in ("warm_ms", "changed_5pct_ms"):
        assert set(report[key]) == {"this", "other", "ratio", "ratio_min", "ratio_max"}
        assert report[key]["this"] > 0 and report[key]["other"] > 0
    assert report["this_warm_collecting_ms"] > 0


@pytest.mark.slow
def test_the_receiver_flood_benchmark_reports_both_phases(tmp_path: Path) -> None:
    """Figures only, never a timing: both phases probed without a failure, ratios computed."""
    out = tmp_path / "flood.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.receiver_flood", "--seconds", "0.5", "--json", out],
        cwd=REPO,
        check=True,
        timeout=120,
        capture_output=True,
    )
    figures = json.loads(out.read_text())
    assert figures["quiet"]["probes"] > 0 and figures["flood"]["probes"] > 0
    assert set(figures["ratios"]) == {"median", "max"}

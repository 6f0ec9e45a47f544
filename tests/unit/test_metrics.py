"""The metrics contract: what the collector and the fast text renderer expose for each result.

Results are built from hand-made captures (DER chains from the test PKI, judged by the real
`probe.judge`), so every series is derived exactly as in production but without a socket.
Values are read through a fresh `CollectorRegistry`; the text renderer is proved equivalent by
parsing its output and comparing samples with `generate_latest` for the same states.
"""

from __future__ import annotations

import gzip
import math
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.collector import TlsprobeCollector
from tests.support.pki import Hierarchy, Issued, make_intermediate, make_leaf
from tests.support.renders import count_renders
from tlsprobe import __version__
from tlsprobe.exporter.exposition import metrics, scrape
from tlsprobe.exporter.exposition.metrics import (
    ENDPOINT_LABELS,
    METRIC_NAMES,
    SEND_SIDE_METRICS,
    ExporterStats,
    MtaStsSample,
    TextRenderer,
)
from tlsprobe.exporter.exposition.scrape import Scrape
from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
from tlsprobe.exporter.history.store import Drift, StoredCert
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import (
    Capture,
    ChangeClass,
    ChangeReason,
    DaneFindings,
    DnssecStatus,
    Endpoint,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe.change import Change
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
STARTED = NOW.timestamp()
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
PHASES = MappingProxyType(
    {
        "connect": 0.01,
        "banner": 0.02,
        "ehlo": 0.01,
        "starttls": 0.01,
        "handshake": 0.03,
        "total": 0.08,
    }
)

POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))

SampleSet = set[tuple[str, frozenset[tuple[str, str]], float]]


def endpoint(
    host: str = "mail.contoso.test", address: str = "127.0.0.1", target: str = "relay"
) -> Endpoint:
    return Endpoint(host=host, address=address, target=target)


def judged(
    trust: TrustStore,
    chain: Sequence[Issued],
    *,
    ep: Endpoint | None = None,
    error: ProbeError | None = None,
) -> ProbeResult:
    ep = ep or endpoint()
    capture = Capture(
        address=ep.address,
        chain_der=tuple(c.der for c in chain),
        tls=None if error else TLS,
        error=error,
        phases=PHASES,
    )
    return judge(ep, capture, POLICY, trust, started_at=STARTED, now=NOW)


def state(
    result: ProbeResult, *, tenant: str = "contoso", drift: Drift | None = None
) -> EndpointState:
    return EndpointState(tenant, result.endpoint.name, result, drift=drift, interval=300.0)


def labels(s: EndpointState, **extra: str) -> dict[str, str]:
    return dict(zip(ENDPOINT_LABELS, s.label_values, strict=True)) | extra


def registry_for(
    states: Sequence[EndpointState], stats: ExporterStats | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(TlsprobeCollector(lambda: states, stats))
    return registry


def parsed(text: str) -> SampleSet:
    return {
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> set[tuple[str, str, str]]:
    return {(f.name, f.type, f.documentation) for f in text_string_to_metric_families(text)}


def names_in(text: str) -> set[str]:
    return {name for name, _, _ in parsed(text)}


@pytest.fixture(scope="module")
def good(pki: Hierarchy, trust: TrustStore) -> EndpointState:
    leaf = pki.leaf(("mail.contoso.test",))
    return state(judged(trust, [leaf, pki.intermediate]))


@pytest.fixture(scope="module")
def expired(pki: Hierarchy, trust: TrustStore) -> EndpointState:
    leaf = pki.leaf(
        ("old.contoso.test",),
        not_before=NOW - timedelta(days=100),
        not_after=NOW - timedelta(days=1),
    )
    ep = endpoint("old.contoso.test", "127.0.0.2", "old")
    return state(judged(trust, [leaf, pki.intermediate], ep=ep))


@pytest.fixture(scope="module")
def untrusted(trust: TrustStore) -> EndpointState:
    leaf = make_leaf(None, ("self.contoso.test",))
    return state(judged(trust, [leaf], ep=endpoint("self.contoso.test", "127.0.0.3", "self")))


@pytest.fixture(scope="module")
def failed(trust: TrustStore) -> EndpointState:
    error = ProbeError(Reason.REFUSED, "connection refused")
    return state(
        judged(trust, [], ep=endpoint("down.contoso.test", "127.0.0.4", "down"), error=error)
    )


@pytest.fixture(scope="module")
def stats() -> ExporterStats:
    s = ExporterStats(reload_successful=False, reload_success_at=1_700_000_000.0)
    s.probes["ok"] = 7
    s.probes["critical"] = 2
    s.retries = {"timeout": 3, "refused": 1}
    s.state_writable = False
    s.state_write_errors = 4
    s.targets_configured = 5
    s.external_url = "https://tlsprobe.contoso.test/mon"
    s.mta_sts = {"contoso.test": MtaStsSample(True, "enforce", 86400.0, 1_700_000_500.0)}
    s.mx_skipped = {("contoso", "mx"): 2}
    return s


# --- per-endpoint series through the collector ------------------------------------------


def test_good_endpoint(good: EndpointState) -> None:
    reg = registry_for([good])
    lab = labels(good)
    assert lab == {
        "tenant": "contoso",
        "target": "relay",
        "host": "mail.contoso.test",
        "address": "127.0.0.1",
        "port": "25",
    }
    leaf = good.result.leaf
    assert leaf is not None
    assert reg.get_sample_value("tlsprobe_probe_success", lab) == 1.0
    assert reg.get_sample_value("tlsprobe_status", lab) == float(Status.OK)
    assert reg.get_sample_value("tlsprobe_o365_ready", lab) == 1.0
    assert reg.get_sample_value("tlsprobe_last_probe_timestamp_seconds", lab) == STARTED
    assert reg.get_sample_value("tlsprobe_probe_interval_seconds", lab) == 300.0
    assert reg.get_sample_value("tlsprobe_check_status", lab | {"check": "chain_trusted"}) == 0.0
    assert reg.get_sample_value("tlsprobe_check_status", lab | {"check": "not_expired"}) == 0.0
    for phase, seconds in PHASES.items():
        assert reg.get_sample_value("tlsprobe_probe_duration_seconds", lab | {"phase": phase}) == (
            seconds
        )
    tls = lab | {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
    assert reg.get_sample_value("tlsprobe_tls_info", tls) == 1.0
    assert reg.get_sample_value("tlsprobe_cert_not_after_timestamp_seconds", lab) == (
        leaf.not_after.timestamp()
    )
    assert reg.get_sample_value("tlsprobe_cert_not_before_timestamp_seconds", lab) == (
        leaf.not_before.timestamp()
    )
    # The leaf (90 days) expires before the intermediate (5 years).
    assert reg.get_sample_value("tlsprobe_chain_earliest_not_after_timestamp_seconds", lab) == (
        leaf.not_after.timestamp()
    )
    info = lab | {
        "fingerprint_sha256": leaf.sha256,
        "subject": leaf.subject,
        "issuer": leaf.issuer,
        "serial": leaf.serial,
        "names": "mail.contoso.test",
    }
    assert reg.get_sample_value("tlsprobe_cert_info", info) == 1.0
    assert reg.get_sample_value("tlsprobe_probe_error_info", lab | {"reason": "refused"}) is None
    assert not _family_samples(reg, "tlsprobe_probe_error_info")
    assert not _family_samples(reg, "tlsprobe_chain_untrusted_info")
    # No drift history given: no drift series rather than a made-up zero.
    assert reg.get_sample_value("tlsprobe_cert_changes_total", lab) is None


def test_earliest_expiry_is_taken_over_the_whole_chain(pki: Hierarchy, trust: TrustStore) -> None:
    short = make_intermediate(
        pki.root, "Short-lived Intermediate", not_after=NOW + timedelta(days=5)
    )
    leaf = make_leaf(short, ("mail.contoso.test",), days=90)
    s = state(judged(trust, [leaf, short]))
    reg = registry_for([s])
    lab = labels(s)
    assert reg.get_sample_value("tlsprobe_chain_earliest_not_after_timestamp_seconds", lab) == (
        short.cert.not_valid_after_utc.timestamp()
    )
    assert reg.get_sample_value("tlsprobe_cert_not_after_timestamp_seconds", lab) == (
        leaf.cert.not_valid_after_utc.timestamp()
    )


def test_expired_endpoint(expired: EndpointState) -> None:
    reg = registry_for([expired])
    lab = labels(expired)
    assert reg.get_sample_value("tlsprobe_probe_success", lab) == 1.0
    assert reg.get_sample_value("tlsprobe_status", lab) == float(Status.CRITICAL)
    assert reg.get_sample_value("tlsprobe_check_status", lab | {"check": "not_expired"}) == 2.0
    assert reg.get_sample_value("tlsprobe_o365_ready", lab) == 0.0
    not_after = reg.get_sample_value("tlsprobe_cert_not_after_timestamp_seconds", lab)
    assert not_after is not None
    assert not_after < STARTED


def test_untrusted_endpoint_reports_reason_and_chain(untrusted: EndpointState) -> None:
    reg = registry_for([untrusted])
    lab = labels(untrusted)
    assert reg.get_sample_value("tlsprobe_probe_success", lab) == 1.0
    assert reg.get_sample_value("tlsprobe_check_status", lab | {"check": "chain_trusted"}) == 2.0
    assert reg.get_sample_value(
        "tlsprobe_chain_untrusted_info", lab | {"reason": "self_signed"}
    ) == (1.0)
    assert len(_family_samples(reg, "tlsprobe_chain_untrusted_info")) == 1
    # The chain is reported whatever the verdict.
    assert reg.get_sample_value("tlsprobe_cert_not_after_timestamp_seconds", lab) is not None
    assert len(_family_samples(reg, "tlsprobe_cert_info")) == 1


def test_failed_endpoint_has_reason_and_no_certificate_series(failed: EndpointState) -> None:
    reg = registry_for([failed])
    lab = labels(failed)
    assert reg.get_sample_value("tlsprobe_probe_success", lab) == 0.0
    assert reg.get_sample_value("tlsprobe_status", lab) == float(Status.UNKNOWN)
    assert reg.get_sample_value("tlsprobe_probe_error_info", lab | {"reason": "refused"}) == 1.0
    assert reg.get_sample_value("tlsprobe_o365_ready", lab) == 0.0
    assert reg.get_sample_value("tlsprobe_last_probe_timestamp_seconds", lab) == STARTED
    for family in (
        "tlsprobe_cert_info",
        "tlsprobe_cert_not_after_timestamp_seconds",
        "tlsprobe_cert_not_before_timestamp_seconds",
        "tlsprobe_chain_earliest_not_after_timestamp_seconds",
        "tlsprobe_tls_info",
        "tlsprobe_check_status",
    ):
        assert not _family_samples(reg, family), family
    # The target still shows up, with zero certificates seen.
    target = {"tenant": "contoso", "target": "down"}
    assert reg.get_sample_value("tlsprobe_target_distinct_certificates", target) == 0.0


def test_drift_series(good: EndpointState) -> None:
    leaf = good.result.leaf
    assert leaf is not None
    drifting = replace(good, drift=Drift(leaf.sha256, since=1_700_000_123.5, changes_total=3))
    reg = registry_for([drifting])
    lab = labels(drifting)
    assert reg.get_sample_value("tlsprobe_cert_changes_total", lab) == 3.0
    assert reg.get_sample_value("tlsprobe_cert_last_change_timestamp_seconds", lab) == (
        1_700_000_123.5
    )


def _two_addresses(pki: Hierarchy, trust: TrustStore, *, same: bool) -> list[EndpointState]:
    first = pki.leaf(("mx.contoso.test",))
    second = first if same else pki.leaf(("mx.contoso.test",))
    return [
        state(judged(trust, [leaf, pki.intermediate], ep=endpoint("mx.contoso.test", addr, "mx")))
        for leaf, addr in ((first, "127.0.0.10"), (second, "127.0.0.11"))
    ]


@pytest.mark.parametrize(("same", "expected"), [(False, 2.0), (True, 1.0)])
def test_target_distinct_certificates(
    pki: Hierarchy, trust: TrustStore, same: bool, expected: float
) -> None:
    states = _two_addresses(pki, trust, same=same)
    reg = registry_for(states)
    target = {"tenant": "contoso", "target": "mx"}
    assert reg.get_sample_value("tlsprobe_target_distinct_certificates", target) == expected
    assert len(_family_samples(reg, "tlsprobe_cert_info")) == 2


def test_exporter_stats(good: EndpointState, stats: ExporterStats) -> None:
    reg = registry_for([good], stats)
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "ok"}) == 7.0
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "critical"}) == 2.0
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "unknown"}) == 0.0
    assert reg.get_sample_value("tlsprobe_retries_total", {"reason": "timeout"}) == 3.0
    assert reg.get_sample_value("tlsprobe_retries_total", {"reason": "refused"}) == 1.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_successful") == 0.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_success_timestamp_seconds") == (
        1_700_000_000.0
    )
    assert reg.get_sample_value("tlsprobe_state_writable") == 0.0
    assert reg.get_sample_value("tlsprobe_state_write_errors_total") == 4.0
    assert reg.get_sample_value("tlsprobe_targets_configured") == 5.0
    assert reg.get_sample_value("tlsprobe_endpoints") == 1.0
    python = ".".join(map(str, sys.version_info[:3]))
    build = {"version": __version__, "python": python, "event_loop": "asyncio"}
    assert reg.get_sample_value("tlsprobe_build_info", build) == 1.0


def test_collector_on_an_empty_snapshot() -> None:
    # Registration itself calls collect(); it must not fail on an empty store.
    assert generate_latest(registry_for([])) == b""
    reg = registry_for([], ExporterStats())
    assert reg.get_sample_value("tlsprobe_endpoints") == 0.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_successful") == 1.0
    assert not _family_samples(reg, "tlsprobe_target_distinct_certificates")
    assert TextRenderer().render([], None) == b""


def test_labelled_self_metrics_exist_at_zero_before_anything_happens() -> None:
    # A dashboard's rate() and an alert on increase() need the series before the first event.
    reg = registry_for([], ExporterStats())
    transient = {"refused", "timeout", "dns", "throttled"}
    retries = _series(reg, "tlsprobe_retries_total")
    assert {s.labels["reason"]: s.value for s in retries} == dict.fromkeys(transient, 0.0)
    expected = {
        "tlsprobe_probes_total": ("result", {"ok", "warning", "critical", "unknown"}),
        "tlsprobe_http_connections_closed_total": ("reason", {"limit", "header_timeout"}),
        "tlsprobe_http_auth_attempts_total": ("outcome", {"ok", "failed", "throttled"}),
    }
    for name, (label, wanted) in expected.items():
        found = {s.labels[label]: s.value for s in _series(reg, name)}
        assert found == dict.fromkeys(wanted, 0.0), name
    for metric in metrics.METRICS:
        # Every labelled self-counter: info gauges carry configuration, not events.
        if metric.scope == "" and metric.labels and metric.kind == "counter":
            assert _series(reg, metric.sample_name), f"{metric.name} has no series"


def _series(reg: CollectorRegistry, sample_name: str) -> list[Any]:
    return [s for f in reg.collect() for s in f.samples if s.name == sample_name]


# --- the text renderer agrees with the collector ------------------------------------------


@pytest.fixture(scope="module")
def everything(
    pki: Hierarchy,
    trust: TrustStore,
    good: EndpointState,
    expired: EndpointState,
    untrusted: EndpointState,
    failed: EndpointState,
) -> list[EndpointState]:
    leaf = good.result.leaf
    assert leaf is not None
    old = StoredCert("ab" * 32, "CN=old", "CN=Issuing CA", ("old.contoso.test",), 1_700_500_000.0)
    drifting = replace(
        good,
        drift=Drift(
            leaf.sha256,
            since=1_700_000_123.5,
            changes_total=2,
            previous=old,
            change=Change(
                ChangeClass.RISKY,
                (ChangeReason.ISSUER_CHANGED, ChangeReason.EKU_LOST),
                ("issuer changed: R11 → E6", "clientAuth EKU dropped"),
            ),
        ),
    )
    findings = DaneFindings("_25._tcp.mail.contoso.test", DnssecStatus.SECURE, None, ())
    dane = replace(expired, result=replace(expired.result, dane=findings))
    return [drifting, dane, untrusted, failed, *_two_addresses(pki, trust, same=False)]


def test_renderer_and_collector_expose_the_same_samples(
    everything: list[EndpointState], stats: ExporterStats
) -> None:
    text = TextRenderer().render(everything, stats).decode()
    reference = generate_latest(registry_for(everything, stats)).decode()
    assert parsed(text) == parsed(reference)
    assert families(text) == families(reference)
    assert len(parsed(text)) > 80


def test_renderer_without_stats_leaves_out_exporter_metrics(good: EndpointState) -> None:
    text = TextRenderer().render([good], None).decode()
    assert parsed(text) == parsed(generate_latest(registry_for([good])).decode())
    assert "tlsprobe_build_info" not in names_in(text)


def test_every_contract_name_is_emitted(
    everything: list[EndpointState], stats: ExporterStats
) -> None:
    text = TextRenderer().render(everything, stats).decode()
    # The send side's series are proven in tests/unit/test_sendmetrics.py, the cross-tenant
    # ones (computed over every tenant by the server) in tests/exporter/test_exchange_online.py.
    send_side = {m.sample_name for m in SEND_SIDE_METRICS}
    cross_tenant = {"tlsprobe_cross_tenant_attribution"}
    assert names_in(text) == set(METRIC_NAMES) - send_side - cross_tenant


def test_renderer_cache_reused_refreshed_and_evicted(
    monkeypatch: pytest.MonkeyPatch, good: EndpointState, expired: EndpointState
) -> None:
    calls = count_renders(monkeypatch)
    renderer = TextRenderer()
    first = renderer.render([good, expired], None)
    assert len(calls) == 2
    assert renderer.render([good, expired], None) == first
    assert len(calls) == 2, "unchanged states must be served from the cache"

    newer = replace(good, result=replace(good.result, started_at=STARTED + 300))
    text = renderer.render([newer, expired], None).decode()
    assert calls[2:] == [newer], "only the changed endpoint is rendered again"
    stamp = "tlsprobe_last_probe_timestamp_seconds"
    assert (stamp, frozenset(labels(newer).items()), STARTED + 300) in parsed(text)
    assert (stamp, frozenset(labels(good).items()), STARTED) not in parsed(text)

    text = renderer.render([newer], None).decode()
    assert all(dict(lab).get("target") != "old" for _, lab, _ in parsed(text))
    assert len(calls) == 3
    # The evicted endpoint's text was dropped: showing it again renders it afresh.
    renderer.render([newer, expired], None)
    assert calls[3:] == [expired]


WEIRD = 'a "quoted" \\ back\nslash'


def test_label_values_are_escaped(good: EndpointState) -> None:
    result = good.result
    weird_result = replace(result, endpoint=replace(result.endpoint, target=WEIRD, host=WEIRD))
    weird = EndpointState(WEIRD, WEIRD, weird_result, interval=60.0)
    text = TextRenderer().render([weird], None).decode()
    samples = parsed(text)
    lab = labels(weird)
    assert lab["target"] == WEIRD
    assert lab["host"] == WEIRD
    assert ("tlsprobe_probe_success", frozenset(lab.items()), 1.0) in samples
    assert samples == parsed(generate_latest(registry_for([weird])).decode())
    # Every sample line stays one line: the newline was escaped.
    assert all(line.startswith(("#", "tlsprobe_")) for line in text.splitlines())


def _family_samples(reg: CollectorRegistry, name: str) -> list[object]:
    return [s for f in reg.collect() if f.name == name for s in f.samples]


# --- /metrics off the loop (scrape.py) -----------------------------------------------------


async def test_scrape_renders_many_new_results_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch, everything: list[EndpointState], stats: ExporterStats
) -> None:
    threads: list[int] = []
    real = metrics.render_endpoint

    def noting(s: EndpointState) -> dict[str, bytes]:
        threads.append(threading.get_ident())
        return real(s)

    monkeypatch.setattr(metrics, "render_endpoint", noting)
    monkeypatch.setattr(scrape, "INLINE_CHANGES", len(everything) - 1)
    body, gzipped = await Scrape().body(everything, stats.snapshot(), gzip_ok=True)
    assert threads and threading.get_ident() not in threads
    assert gzipped and gzip.decompress(body) == TextRenderer().render(everything, stats)
    threads.clear()
    # Few new results: rendered where the scrape is handled, without a thread hop.
    plain, gzipped = await Scrape().body(everything[:1], stats, gzip_ok=False)
    assert threads == [threading.get_ident()]
    assert not gzipped and plain == TextRenderer().render(everything[:1], stats)


async def test_a_scrape_compares_the_states_once(
    monkeypatch: pytest.MonkeyPatch, everything: list[EndpointState], stats: ExporterStats
) -> None:
    """Deciding where to render and rendering share one comparison of the states (a pass over
    every endpoint's state: it was made twice per scrape)."""
    compared: list[int] = []
    real = SnapshotRenderer._moved

    def counting(self: SnapshotRenderer, states: Sequence[EndpointState]) -> list[int] | None:
        compared.append(len(states))
        return real(self, states)

    monkeypatch.setattr(SnapshotRenderer, "_moved", counting)
    scraper = Scrape()
    await scraper.body(everything, stats, gzip_ok=True)
    compared.clear()
    for later in (1.0, 2.0, 3.0):  # a new result for the last endpoint before each scrape
        last = everything[-1]
        newer = replace(
            last, result=replace(last.result, started_at=last.result.started_at + later)
        )
        states = [*everything[:-1], newer]
        await scraper.body(states, stats, gzip_ok=True)
    assert compared == [len(everything)] * 3
    compared.clear()
    body, _ = await scraper.body(list(states), stats, gzip_ok=True)  # nothing new
    assert compared == []  # decided by one list comparison in C
    assert gzip.decompress(body) == TextRenderer().render(states, stats)


def test_stats_snapshot_does_not_follow_later_counts() -> None:
    live = ExporterStats()
    live.probes["ok"] = 3
    live.retries["dns"] = 1
    copy = live.snapshot()
    live.probes["ok"] += 1
    live.retries["dns"] += 1
    assert copy.probes["ok"] == 3 and copy.retries["dns"] == 1
    assert copy.event_loop is live.event_loop


def test_renderer_target_lines_follow_a_changed_leaf(
    pki: Hierarchy, trust: TrustStore, good: EndpointState
) -> None:
    renderer = TextRenderer()
    other = state(
        judged(trust, [pki.leaf(("mail.contoso.test", "x.contoso.test")), pki.intermediate])
    )
    second = replace(other, result=replace(other.result, address="127.0.0.9"))
    distinct = "tlsprobe_target_distinct_certificates"
    key = frozenset({"tenant": good.tenant, "target": good.target}.items())
    assert (distinct, key, 1.0) in parsed(renderer.render([good], None).decode())
    assert (distinct, key, 2.0) in parsed(renderer.render([good, second], None).decode())
    assert (distinct, key, 1.0) in parsed(renderer.render([good], None).decode())


def _check_number(value: float) -> None:
    """What the exposition's number format promises: it reads back as the same value, whole
    numbers below 1e15 are written out with ".0" (not 1e+16 or 5.0e-324 style), infinities
    and NaN are Prometheus' tokens, and everything else is Python's shortest repr."""
    text = metrics._number(value)
    if math.isnan(value):
        assert text == "NaN"
        return
    assert float(text) == value
    if math.isinf(value):
        assert text == ("+Inf" if value > 0 else "-Inf")
    elif value == int(value) and abs(value) < 1e15:
        assert re.fullmatch(r"-?[0-9]+\.0", text), text
    else:
        assert text == repr(float(value))


@settings(max_examples=500, deadline=None)
@given(st.floats() | st.integers(min_value=-(10**20), max_value=10**20).map(float))
def test_number_format(value: float) -> None:
    _check_number(value)


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 1e15, -1e15, 1e15 - 1, 0.1, 1795764298.6, 2.0**53, 1e300, 5e-324],
)
def test_number_format_edges(value: float) -> None:
    _check_number(value)


def test_extra_label_pairs_are_escaped_as_the_endpoint_labels_are() -> None:
    names, values = ("subject", "issuer"), ('CN="x"\\y', "line\nbreak")
    assert metrics._extra_pairs(names, values) == metrics._pairs(names, values)
    assert metrics._extra_pairs(names, values) == 'subject="CN=\\"x\\"\\\\y",issuer="line\\nbreak"'

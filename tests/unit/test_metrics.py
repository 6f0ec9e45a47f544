"""The metrics contract: what the collector and the fast text renderer expose for each result.

Results are built from hand-made captures (DER chains from the test PKI, judged by the real
`probe.judge`), so every series is derived exactly as in production but without a socket.
Values are read through a fresh `CollectorRegistry`; the text renderer is proved equivalent by
parsing its output and comparing samples with `generate_latest` for the same states.
"""

from __future__ import annotations

import gc
import gzip
import math
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support.expected import PROCESS_SERIES
from tests.support.pki import Hierarchy, Issued, make_intermediate, make_leaf
from tests.support.renders import count_renders
from tlsprobe import __version__
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.config import schema as config_schema
from tlsprobe.exporter.dnspolicies import DnsPolicies, MtaStsSample
from tlsprobe.exporter.exposition import collector, metrics, scrape
from tlsprobe.exporter.exposition.metrics import (
    ENDPOINT_LABELS,
    METRIC_NAMES,
    SEND_SIDE_METRICS,
    TextRenderer,
)
from tlsprobe.exporter.exposition.scrape import Scrape
from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
from tlsprobe.exporter.history.store import Drift, StoredCert
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.exporter.state import EndpointState
from tlsprobe.exporter.web.authgate import AuthGate
from tlsprobe.exporter.web.connections import ConnectionGuard
from tlsprobe.exporter.web.probelimit import ProbeLimiter
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


def registry_for(states: Sequence[EndpointState]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector.TableCollector(lambda: states))
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


class Parts:
    """The exporter's parts that own numbers, as the exporter registers them."""

    def __init__(self, tmp_path: Path) -> None:
        target = {"name": "mx", "host": "mx.contoso.test", "address": "127.0.0.1"}
        data = {
            "state_dir": str(tmp_path),
            "web": {"external_url": "https://tlsprobe.contoso.test/mon"},
            "tenants": {"contoso": {"accepted_domains": ["contoso.test"], "targets": [target]}},
        }
        config = parse_config(data, base_dir=tmp_path)
        self.exporter = Exporter(config)
        self.scheduler = Scheduler(config, results=LatestResults(), resolver="unused")
        self.policies = DnsPolicies(config)
        self.guard = ConnectionGuard(8, 5.0)
        self.auth = AuthGate()
        self.limiter: ProbeLimiter[object] = ProbeLimiter(0.0)
        self.registry = collector.exporter_registry(
            [
                self.exporter.samples,
                self.scheduler.samples,
                self.policies.samples,
                self.guard.samples,
                self.auth.samples,
                self.limiter.samples,
            ]
        )


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    return Parts(tmp_path)


@pytest.fixture
def busy(parts: Parts) -> Parts:
    """Parts that have counted something."""
    parts.exporter.reload_successful = False
    parts.exporter.reload_success_at = 1_700_000_000.0
    parts.exporter.bound = [("127.0.0.1", 9464)]
    parts.scheduler.probes["ok"] = 7
    parts.scheduler.probes["critical"] = 2
    parts.scheduler.retries["timeout"] = 3
    parts.scheduler.retries["refused"] = 1
    parts.scheduler.mx_skipped = {("contoso", "mx"): 2}
    parts.policies.published["contoso.test"] = MtaStsSample(
        True, "enforce", 86400.0, 1_700_000_500.0
    )
    parts.guard.closed["limit"] = 5
    parts.auth.outcomes["failed"] = 6
    parts.limiter.shared = 4
    return parts


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


def test_target_info_carries_the_configured_labels_once_per_target(
    good: EndpointState, expired: EndpointState
) -> None:
    labelled = replace(good, labels=(("customer", "Contoso Ltd"), ("env", "prod")))
    other = replace(expired, tenant="fabrikam")
    text = TextRenderer().render([labelled, other]).decode()
    info = [s for s in parsed(text) if s[0] == "tlsprobe_target_info"]
    assert sorted(info, key=str) == sorted(
        [
            (
                "tlsprobe_target_info",
                frozenset(
                    {"tenant": "contoso", "target": good.target, "customer": "Contoso Ltd"}.items()
                    | {"env": "prod"}.items()
                ),
                1.0,
            ),
            # A target without labels has its series too: a join keeps its alerts.
            (
                "tlsprobe_target_info",
                frozenset({"tenant": "fabrikam", "target": expired.target}.items()),
                1.0,
            ),
        ],
        key=str,
    )
    # The labels are on the info series only: no other series multiplies by them.
    assert all("customer" not in dict(lab) for name, lab, _ in parsed(text) if name != info[0][0])
    snapshot = gzip.decompress(SnapshotRenderer().gzip([labelled, other])).decode()
    assert parsed(snapshot) == parsed(text)
    # /probe renders through prometheus_client: the same series.
    reference = generate_latest(registry_for([labelled, other])).decode()
    assert parsed(reference) == parsed(text)


def test_reserved_label_names_cover_every_label_tlsprobe_exposes() -> None:
    exposed = {label for m in metrics.METRICS for label in m.all_labels}
    assert exposed <= config_schema.RESERVED_LABELS, exposed - config_schema.RESERVED_LABELS


def test_each_part_owns_its_numbers(busy: Parts) -> None:
    reg = busy.registry
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "ok"}) == 7.0
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "critical"}) == 2.0
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "unknown"}) == 0.0
    assert reg.get_sample_value("tlsprobe_retries_total", {"reason": "timeout"}) == 3.0
    assert reg.get_sample_value("tlsprobe_retries_total", {"reason": "refused"}) == 1.0
    skipped = {"tenant": "contoso", "target": "mx"}
    assert reg.get_sample_value("tlsprobe_mx_addresses_skipped", skipped) == 2.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_successful") == 0.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_success_timestamp_seconds") == (
        1_700_000_000.0
    )
    assert reg.get_sample_value("tlsprobe_state_writable") == 1.0
    assert reg.get_sample_value("tlsprobe_state_write_errors_total") == 0.0
    assert reg.get_sample_value("tlsprobe_targets_configured") == 0.0  # not started
    assert reg.get_sample_value("tlsprobe_endpoints") == 0.0
    python = ".".join(map(str, sys.version_info[:3]))
    build = {"version": __version__, "python": python, "event_loop": "asyncio"}
    assert reg.get_sample_value("tlsprobe_build_info", build) == 1.0
    url = {"url": "https://tlsprobe.contoso.test/mon"}
    assert reg.get_sample_value("tlsprobe_external_url_info", url) == 1.0
    domain = {"domain": "contoso.test"}
    assert reg.get_sample_value("tlsprobe_mta_sts_max_age_seconds", domain) == 86400.0
    assert reg.get_sample_value("tlsprobe_http_connections_closed_total", {"reason": "limit"}) == 5
    assert reg.get_sample_value("tlsprobe_http_connection_limit") == 8.0
    assert reg.get_sample_value("tlsprobe_http_auth_attempts_total", {"outcome": "failed"}) == 6
    assert reg.get_sample_value("tlsprobe_probe_requests_shared_total") == 4.0
    # Read at scrape time: a later count shows in the next collection, no copy in between.
    busy.scheduler.probes["ok"] += 1
    busy.guard.closed["header_timeout"] += 1
    assert reg.get_sample_value("tlsprobe_probes_total", {"result": "ok"}) == 8.0
    closed = {"reason": "header_timeout"}
    assert reg.get_sample_value("tlsprobe_http_connections_closed_total", closed) == 1.0


def test_the_registry_has_the_process_and_gc_series(parts: Parts) -> None:
    reg = parts.registry
    for name in PROCESS_SERIES:
        value = reg.get_sample_value(name)
        assert value is not None and value > 0, name
    generation = {"generation": "0"}
    assert reg.get_sample_value("python_gc_collections_total", generation) is not None
    assert reg.get_sample_value("python_gc_objects_collected_total", generation) is not None
    assert _series(reg, "python_info")


def test_the_fast_exposition_is_prometheus_clients(busy: Parts) -> None:
    """`ExporterRegistry.exposition` (the parts' lines by hand, the standard collectors' text
    held up to STANDARD_MAX_AGE) reads back as generate_latest of the same registry, in both
    formats; only the process and GC values may have moved in between."""
    reg = busy.registry

    def steady(samples: SampleSet) -> SampleSet:
        return {s for s in samples if not s[0].startswith(("process_", "python_gc_"))}

    text = reg.exposition(openmetrics=False).decode()
    reference = generate_latest(reg).decode()
    assert steady(parsed(text)) == steady(parsed(reference)) and len(steady(parsed(text))) > 25
    assert families(text) == families(reference)
    om = (reg.exposition(openmetrics=True) + collector.EOF).decode()
    om_reference = openmetrics_exposition.generate_latest(reg).decode()  # type: ignore[no-untyped-call]
    assert steady(om_parsed(om)) == steady(om_parsed(om_reference))


def test_the_standard_series_are_held_at_most_a_second(busy: Parts) -> None:
    now = [100.0]
    reg = collector.ExporterRegistry(clock=lambda: now[0])
    probes = {"ok": 1.0}
    reg.add_part(lambda: [("tlsprobe_probes", ("ok",), probes["ok"])])
    first = reg.exposition(openmetrics=False)
    probes["ok"] = 2.0
    now[0] += collector.STANDARD_MAX_AGE / 2
    second = reg.exposition(openmetrics=False)
    # The parts' numbers are read at every scrape; the process and GC text is the one held.
    assert b'tlsprobe_probes_total{result="ok"} 2.0' in second
    assert first.split(b"# HELP tlsprobe_")[0] == second.split(b"# HELP tlsprobe_")[0]
    gc_before = [line for line in first.splitlines() if line.startswith(b"python_gc_objects_coll")]
    # A cycle to collect: a collection that finds no garbage leaves the counts as they were.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    gc.collect()
    now[0] += collector.STANDARD_MAX_AGE
    third = reg.exposition(openmetrics=False)
    gc_after = [line for line in third.splitlines() if line.startswith(b"python_gc_objects_coll")]
    assert gc_after != gc_before, "collected afresh once the held text is older than the limit"


def om_parsed(text: str) -> SampleSet:
    return {
        (s.name, frozenset(s.labels.items()), s.value)
        for family in om_families(text)  # type: ignore[no-untyped-call]
        for s in family.samples
    }


def test_collector_on_an_empty_snapshot(parts: Parts) -> None:
    # Registration itself calls collect(); it must not fail on an empty store.
    assert generate_latest(registry_for([])) == b""
    reg = parts.registry
    assert reg.get_sample_value("tlsprobe_endpoints") == 0.0
    assert reg.get_sample_value("tlsprobe_config_last_reload_successful") == 1.0
    assert not _family_samples(reg, "tlsprobe_target_distinct_certificates")
    assert TextRenderer().render([]) == b""


def test_labelled_self_metrics_exist_at_zero_before_anything_happens(parts: Parts) -> None:
    # A dashboard's rate() and an alert on increase() need the series before the first event.
    reg = parts.registry
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
    labelled = replace(untrusted, labels=(("customer", WEIRD), ("team", "mail")))
    return [drifting, dane, labelled, failed, *_two_addresses(pki, trust, same=False)]


def test_renderer_and_collector_expose_the_same_samples(everything: list[EndpointState]) -> None:
    text = TextRenderer().render(everything).decode()
    reference = generate_latest(registry_for(everything)).decode()
    assert parsed(text) == parsed(reference)
    assert families(text) == families(reference)
    assert len(parsed(text)) > 60


def test_every_contract_name_is_emitted(everything: list[EndpointState], busy: Parts) -> None:
    own = busy.registry.exposition(openmetrics=False)
    text = (TextRenderer().render(everything) + own).decode()
    # The send side's series are proven in tests/unit/test_sendmetrics.py, the cross-tenant
    # ones (computed over every tenant by the server) in tests/exporter/test_exchange_online.py.
    send_side = {m.sample_name for m in SEND_SIDE_METRICS}
    cross_tenant = {"tlsprobe_cross_tenant_attribution"}
    # The maintenance series (asked of the configuration at each scrape) in test_maintenance.
    maintenance = {
        "tlsprobe_maintenance_active",
        "tlsprobe_maintenance_window_end_timestamp_seconds",
    }
    ours = {name for name in names_in(text) if not name.startswith(("process_", "python_"))}
    assert ours == set(METRIC_NAMES) - send_side - cross_tenant - maintenance


def test_renderer_cache_reused_refreshed_and_evicted(
    monkeypatch: pytest.MonkeyPatch, good: EndpointState, expired: EndpointState
) -> None:
    calls = count_renders(monkeypatch)
    renderer = TextRenderer()
    first = renderer.render([good, expired])
    assert len(calls) == 2
    assert renderer.render([good, expired]) == first
    assert len(calls) == 2, "unchanged states must be served from the cache"

    newer = replace(good, result=replace(good.result, started_at=STARTED + 300))
    text = renderer.render([newer, expired]).decode()
    assert calls[2:] == [newer], "only the changed endpoint is rendered again"
    stamp = "tlsprobe_last_probe_timestamp_seconds"
    assert (stamp, frozenset(labels(newer).items()), STARTED + 300) in parsed(text)
    assert (stamp, frozenset(labels(good).items()), STARTED) not in parsed(text)

    text = renderer.render([newer]).decode()
    assert all(dict(lab).get("target") != "old" for _, lab, _ in parsed(text))
    assert len(calls) == 3
    # The evicted endpoint's text was dropped: showing it again renders it afresh.
    renderer.render([newer, expired])
    assert calls[3:] == [expired]


WEIRD = 'a "quoted" \\ back\nslash'


def test_label_values_are_escaped(good: EndpointState) -> None:
    result = good.result
    weird_result = replace(result, endpoint=replace(result.endpoint, target=WEIRD, host=WEIRD))
    weird = EndpointState(WEIRD, WEIRD, weird_result, interval=60.0)
    text = TextRenderer().render([weird]).decode()
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
    monkeypatch: pytest.MonkeyPatch, everything: list[EndpointState]
) -> None:
    threads: list[int] = []
    real = metrics.render_endpoint

    def noting(s: EndpointState) -> dict[str, bytes]:
        threads.append(threading.get_ident())
        return real(s)

    monkeypatch.setattr(metrics, "render_endpoint", noting)
    monkeypatch.setattr(scrape, "INLINE_CHANGES", len(everything) - 1)
    body, gzipped = await Scrape().body(everything, None, gzip_ok=True)
    assert threads and threading.get_ident() not in threads
    assert gzipped and gzip.decompress(body) == TextRenderer().render(everything)
    threads.clear()
    # Few new results: rendered where the scrape is handled, without a thread hop.
    plain, gzipped = await Scrape().body(everything[:1], None, gzip_ok=False)
    assert threads == [threading.get_ident()]
    assert not gzipped and plain == TextRenderer().render(everything[:1])


async def test_a_scrape_compares_the_states_once(
    monkeypatch: pytest.MonkeyPatch, everything: list[EndpointState]
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
    await scraper.body(everything, None, gzip_ok=True)
    compared.clear()
    for later in (1.0, 2.0, 3.0):  # a new result for the last endpoint before each scrape
        last = everything[-1]
        newer = replace(
            last, result=replace(last.result, started_at=last.result.started_at + later)
        )
        states = [*everything[:-1], newer]
        await scraper.body(states, None, gzip_ok=True)
    assert compared == [len(everything)] * 3
    compared.clear()
    body, _ = await scraper.body(list(states), None, gzip_ok=True)  # nothing new
    assert compared == []  # decided by one list comparison in C
    assert gzip.decompress(body) == TextRenderer().render(states)


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
    assert (distinct, key, 1.0) in parsed(renderer.render([good]).decode())
    assert (distinct, key, 2.0) in parsed(renderer.render([good, second]).decode())
    assert (distinct, key, 1.0) in parsed(renderer.render([good]).decode())


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


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; version=1.0.0", True),
        # Prometheus 2.x
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        # Prometheus 3.x
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
            "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
            "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
            True,
        ),
        # scrape_protocols: [PrometheusText0.0.4]
        ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", False),
        ("text/plain;q=0.9,application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=nonsense", False),
        ("application/openmetrics-text;q=0.5,text/plain;q=0.5", True),
    ],
)
def test_openmetrics_when_the_accept_header_prefers_it(accept: str, openmetrics: bool) -> None:
    assert collector.wants_openmetrics(accept) is openmetrics

"""The shipped alert rules, Alertmanager and Prometheus examples and Grafana dashboard.

promtool and amtool validate the files and run the rule unit tests in deploy/prometheus/tests;
a loopback Alertmanager proves the inhibit rules; plain parsing proves that every metric the
files mention is one the exporter emits and that every alert is tested and documented. A missing
binary skips its tests on a workstation but fails them under TLSPROBE_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from tests.support.gates import prometheus_tool
from tests.support.servers import unused_port
from tlsprobe.alerting.generate import DEFAULT_RUNBOOK_BASE, render
from tlsprobe.exporter.config.schema import RESERVED_LABELS
from tlsprobe.exporter.exposition.metrics import METRIC_NAMES, METRICS, TARGET_INFO

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tlsprobe.rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "tlsprobe.json"
DASHBOARD_PROVIDER = ROOT / "grafana" / "provisioning" / "dashboards" / "tlsprobe.yml"
DATASOURCE = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS_DOC = ROOT / "README.md"

ENDPOINT_LABELS = ("tenant", "target", "host", "address", "port")
RUNBOOK_PREFIX = DEFAULT_RUNBOOK_BASE + "#"

# Grafana variables replaced by plausible values before promtool parses a dashboard query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "2m",
    "$__interval": "1m",
    "$__range": "1h",
    "$tenant": "contoso|fabrikam",
    "$target": ".*",
}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alerts()}


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def alert_rule_tests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in RULE_TESTS:
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                yield path, case


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels() -> list[dict[str, Any]]:
    """The dashboard's panels, those inside collapsed rows (the per-tenant row's) included."""
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def panel_queries() -> list[str]:
    """The PromQL of the dashboard's panels and annotations."""
    queries = [t["expr"] for panel in all_panels() for t in panel.get("targets", [])]
    return queries + [a["expr"] for a in dashboard()["annotations"]["list"] if "expr" in a]


def titled(title: str, kind: str = "table") -> dict[str, Any]:
    (panel,) = [p for p in all_panels() if p["title"] == title and p["type"] == kind]
    return panel


def dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard: panels, annotations, variable selectors."""
    queries = panel_queries()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(SELECTOR, label) is Grafana's; the selector inside is PromQL.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
            assert match, f"unexpected variable query {variable['query']!r}"
            queries.append(match.group(1))
    return queries


def substitute(query: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        query = query.replace(name, GRAFANA_VARIABLES[name])
    return query


# --- promtool -------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_rules_file_passes_promtool_check() -> None:
    result = run(prometheus_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_rule_unit_tests_pass(path: Path) -> None:
    result = run(prometheus_tool("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_prometheus_example_config_is_valid() -> None:
    result = run(prometheus_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_yaml(PROMETHEUS_CONFIG)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tlsprobe")
    assert job["static_configs"][0]["targets"] == ["localhost:9825"]
    assert config["rule_files"] == [RULES.name]


@pytest.mark.prometheus
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) > 10
    wrapped = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(wrapped), encoding="utf-8")
    result = run(prometheus_tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- rule conventions and coverage ----------------------------------------------------------


# The exporter's own alerts; every other alert is about an endpoint (or a target).
EXPORTER_ALERTS = {
    "TlsprobeExporterDown",
    "TlsprobeExporterFlapping",
    "TlsprobeExporterAbsent",
    "TlsprobeConfigReloadFailed",
    "TlsprobeStateNotWritable",
}


# Pages nobody: the source of the maintenance inhibition (deploy/alertmanager/alertmanager.yml).
MAINTENANCE = "TlsprobeMaintenance"


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    severities = {"info"} if rule["alert"] == MAINTENANCE else {"page", "warning"}
    assert rule["labels"]["severity"] in severities
    annotations = rule["annotations"]
    expected = {"summary", "description", "runbook_url"}
    if rule["alert"] not in EXPORTER_ALERTS:
        expected.add("detail_url")
    assert set(annotations) == expected
    assert annotations["runbook_url"].startswith(RUNBOOK_PREFIX)


def test_committed_rules_are_the_generators_output() -> None:
    assert RULES.read_text(encoding="utf-8") == render(), (
        "deploy/prometheus/tlsprobe.rules.yml is stale: "
        "tlsprobe rules > deploy/prometheus/tlsprobe.rules.yml"
    )


def test_runbook_base_is_a_parameter() -> None:
    custom = yaml.safe_load(render("https://wiki.example.net/ops/tlsprobe"))
    urls = [
        rule["annotations"]["runbook_url"]
        for group in custom["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert urls and all(u.startswith("https://wiki.example.net/ops/tlsprobe#") for u in urls)
    assert render("https://wiki.example.net/ops/tlsprobe") != render()


@pytest.mark.parametrize(
    "rule",
    [r for r in alerts() if r["alert"] not in EXPORTER_ALERTS | {MAINTENANCE}],
    ids=lambda r: r["alert"],
)
def test_endpoint_alerts_survive_a_missed_evaluation(rule: dict[str, Any]) -> None:
    """One failed scrape (an exporter restart) must not send `resolved` for a true page."""
    assert rule["keep_firing_for"] == "10m"


def test_certificate_change_pages_once_per_event() -> None:
    """A risky change fires at once, one alert per tenant, target and new leaf (no socket in
    its identity), grouped with the send side's change to the same leaf; a clean renewal goes
    to the chat."""
    rules = {r["alert"]: r for r in alerts()}
    for name in ("TlsprobeCertificateChanged", "TlsprobeCertificateRenewed"):
        rule = rules[name]
        assert "for" not in rule
        assert rule["expr"].startswith(
            "max by (tenant, target, fingerprint_sha256, job, instance) ("
        )
    assert rules["TlsprobeCertificateChanged"]["labels"]["severity"] == "page"
    assert rules["TlsprobeCertificateRenewed"]["labels"]["severity"] == "warning"
    routes = {tuple(r["matchers"]): r for r in load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]}
    change = routes[('alertname=~"TlsprobeCertificateChanged|TlsprobeSenderCertificateChanged"',)]
    assert change["group_by"] == ["tenant", "fingerprint_sha256"]
    assert change["receiver"] == "pager"
    # A side joining the event later must not page it again while the alert fires (an hour).
    assert _seconds(change["group_interval"]) > 3600
    renewed = routes[('alertname="TlsprobeCertificateRenewed"',)]
    assert renewed["receiver"] == "chat"


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(duration[:-1]) * units[duration[-1]]


def test_every_endpoint_alert_holds_while_its_exporter_is_not_scraped() -> None:
    """No endpoint alert resolves (or restarts its `for:`) while the exporter is down."""
    # The exporter's own alerts are about up itself. A maintenance window ends at its end,
    # scraped or not (its rule bridges failed scrapes by the window's known end instead).
    held = [
        rule
        for group in load_yaml(RULES)["groups"]
        if group["name"] not in ("tlsprobe.exporter", "tlsprobe.maintenance")
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(held) > 20
    for rule in held:
        name = rule["alert"]
        assert rule["expr"].endswith(
            f' or (max without (alertname, alertstate, severity) (ALERTS{{alertname="{name}"}})'
            ' and on (instance) (up{job=~".*tlsprobe.*"} == 0))'
        ), name


def test_maintenance_fires_at_once_and_stops_with_its_window() -> None:
    """The inhibition's source must fire before what it holds back and stop when the window
    closes (deploy/prometheus/tests/maintenance.yml shows how it bridges failed scrapes)."""
    rule = next(r for r in alerts() if r["alert"] == MAINTENANCE)
    assert "for" not in rule and "keep_firing_for" not in rule
    inhibitions = [
        r
        for r in load_yaml(ALERTMANAGER_CONFIG)["inhibit_rules"]
        if r["source_matchers"] == [f'alertname="{MAINTENANCE}"']
    ]
    assert [r["equal"] for r in inhibitions] == [["tenant", "target"]]


def test_endpoint_alerts_say_where() -> None:
    """Every expected endpoint alert's description names tenant, target, host and address:port.

    promtool proves the rendered text equals the expectation; this proves the expectation says
    where the problem is.
    """
    checked = 0
    for _, case in alert_rule_tests():
        for expected in case.get("exp_alerts") or []:
            labels = expected["exp_labels"]
            if not set(ENDPOINT_LABELS) <= set(labels):
                continue
            description = expected["exp_annotations"]["description"]
            assert f"tenant {labels['tenant']}, target {labels['target']}" in description
            assert labels["host"] in description
            assert f"{labels['address']}:{labels['port']}" in description
            checked += 1
    assert checked >= 20


def test_every_alert_fires_in_a_unit_test_with_its_severity() -> None:
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    fired: dict[str, set[str]] = {}
    for _, case in alert_rule_tests():
        for expected in case.get("exp_alerts") or []:
            fired.setdefault(case["alertname"], set()).add(expected["exp_labels"]["severity"])
    assert set(fired) == set(severities)
    for name, severity in severities.items():
        assert fired[name] == {severity}, name


def test_every_alert_stays_silent_on_a_healthy_endpoint() -> None:
    healthy = [
        case["alertname"]
        for path, case in alert_rule_tests()
        if path.name == "healthy.yml" and not case.get("exp_alerts")
    ]
    assert sorted(healthy) == sorted(alert_names())


def test_every_alert_is_documented() -> None:
    text = ALERTS_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(Tlsprobe\w+)`", text))
    assert documented == alert_names()


# --- metric names ---------------------------------------------------------------------------


def referenced_metric_names() -> dict[str, set[str]]:
    """tlsprobe_* names per file, from the rules, their tests, the dashboard and Alertmanager."""
    files = [RULES, *RULE_TESTS, DASHBOARD, ALERTMANAGER_CONFIG]
    return {
        path.name: set(re.findall(r"\btlsprobe_[a-z0-9_]+", path.read_text(encoding="utf-8")))
        for path in files
    }


def test_referenced_metrics_are_exported() -> None:
    known = set(METRIC_NAMES)
    # Counters are exposed with _total whether or not the table spells the suffix.
    known |= {f"{name}_total" for name in METRIC_NAMES}
    unknown = {
        name: sorted(found - known)
        for name, found in referenced_metric_names().items()
        if found - known
    }
    assert not unknown, f"metrics the exporter does not emit: {unknown}"


def runtime_series() -> set[str]:
    """Sample names of prometheus-client's process, GC and platform collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_exporter_process_panels_name_prometheus_client_series() -> None:
    """The exporter process panels read the series of prometheus-client's own collectors (the
    exporter's registry has them; tests/e2e proves their panels return data)."""
    text = DASHBOARD.read_text(encoding="utf-8")
    named = set(re.findall(r"\b(?:process|python)_[a-z0-9_]+", text))
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= named
    assert "python_gc_collections_total" in named
    assert named <= runtime_series(), sorted(named - runtime_series())


def test_selector_labels_are_exported() -> None:
    """A selector on a label the metric does not carry silently matches nothing."""
    scrape_labels = {"job", "instance"}
    allowed = {m.sample_name: set(m.all_labels) | scrape_labels for m in METRICS}
    files = [RULES, *RULE_TESTS, DASHBOARD]
    wrong = []
    for path in files:
        text = path.read_text(encoding="utf-8").replace('\\"', '"')
        for name, selector in re.findall(r"\b(tlsprobe_[a-z0-9_]+)\{([^}]*)\}", text):
            used = set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"[^"]*"', selector))
            if name == TARGET_INFO:
                # Configured labels: any name the configuration accepts, none it refuses.
                used &= RESERVED_LABELS
            if name in allowed and not used <= allowed[name]:
                wrong.append(f"{path.name}: {name} {sorted(used - allowed[name])}")
    assert not wrong


def test_recording_rules_used_are_defined() -> None:
    defined = recorded_names()
    texts = [RULES.read_text(encoding="utf-8"), DASHBOARD.read_text(encoding="utf-8")]
    used = {name for text in texts for name in re.findall(r"\btlsprobe:[a-z0-9_:]+", text)}
    assert used, "the dashboard should use the recording rules"
    assert used <= defined


# --- Alertmanager ---------------------------------------------------------------------------


@pytest.mark.prometheus
def test_alertmanager_config_is_valid() -> None:
    result = run(prometheus_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@pytest.mark.parametrize(("severity", "receiver"), [("page", "pager"), ("warning", "chat")])
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    result = run(
        prometheus_tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        "alertname=TlsprobeCertificateExpired",
        "tenant=contoso",
        f"severity={severity}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


@pytest.mark.prometheus
def test_the_commented_customer_route_works_once_uncommented(tmp_path: Path) -> None:
    text = ALERTMANAGER_CONFIG.read_text()
    assert "#~ " in text
    config = tmp_path / "alertmanager.yml"
    config.write_text(text.replace("#~ ", ""))
    amtool = prometheus_tool("amtool")
    checked = run(amtool, "check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routes = ["config", "routes", "test", f"--config.file={config}", "tenant=contoso"]
    alert = ["alertname=TlsprobeCertificateExpired", "severity=page"]
    routed = run(amtool, *routes, *alert, "customer=contoso")
    assert routed.stdout.split() == ["contoso-oncall,pager"], routed.stdout + routed.stderr
    other = run(amtool, *routes, *alert, "customer=fabrikam")
    assert other.stdout.split() == ["pager"]


def test_alertmanager_groups_by_tenant_and_target() -> None:
    assert load_yaml(ALERTMANAGER_CONFIG)["route"]["group_by"] == ["alertname", "tenant", "target"]


def test_inhibit_rules_name_existing_alerts() -> None:
    names = alert_names()
    for rule in load_yaml(ALERTMANAGER_CONFIG)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname(=~|=)"(.+)"', matcher)
            if match is None:
                continue
            op, value = match.groups()
            alternatives = value.split("|") if op == "=~" else [value]
            for alternative in alternatives:
                pattern = alternative if op == "=~" else re.escape(alternative)
                assert any(re.fullmatch(pattern, n) for n in names), alternative


# No proxy: the test Alertmanager is on loopback and nothing else may be contacted.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _LOOPBACK.open(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith(("[", "{")) else text


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The example configuration, receivers pointed at a closed loopback port, on loopback."""
    binary = prometheus_tool("alertmanager")
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = "http://127.0.0.1:9/discard"
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = unused_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                http(f"{base}/-/ready")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def endpoint(address: str) -> dict[str, str]:
    return {
        "tenant": "fabrikam",
        "target": "smarthost",
        "host": "mail.fabrikam.com",
        "address": address,
        "port": "25",
    }


def posted(alertname: str, address: str, severity: str, **extra: str) -> dict[str, Any]:
    labels = {"alertname": alertname, "severity": severity, **endpoint(address), **extra}
    return {"labels": labels, "annotations": {"summary": alertname}}


def changed(target: str, fingerprint: str) -> dict[str, Any]:
    """The drift page as the rules make it: tenant, target and new leaf, no socket."""
    labels = {
        "alertname": "TlsprobeCertificateChanged",
        "severity": "page",
        "tenant": "fabrikam",
        "target": target,
        "fingerprint_sha256": fingerprint,
    }
    return {"labels": labels, "annotations": {"summary": "changed"}}


# (alert, inhibited?) pairs; each block's sources and targets share an address.
INHIBITION_CASES = [
    # Unreachable endpoint: its certificate alerts are silenced, another address's are not.
    (posted("TlsprobeEndpointUnreachable", "198.51.100.7", "warning", reason="timeout"), False),
    (posted("TlsprobeCertificateExpiringSoon", "198.51.100.7", "warning"), True),
    (posted("TlsprobeCertificateExpiringSoon", "198.51.100.8", "warning"), False),
    # A specific alert silences the O365 summary for its endpoint only.
    (posted("TlsprobeCertificateDomainMismatch", "198.51.100.8", "page"), False),
    (posted("TlsprobeNotO365Ready", "198.51.100.8", "warning"), True),
    (posted("TlsprobeNotO365Ready", "198.51.100.12", "warning"), False),
    # No STARTTLS: the check's alert wins over the probe error's.
    (posted("TlsprobeStarttlsUnavailable", "198.51.100.9", "page"), False),
    (posted("TlsprobeEndpointTlsBroken", "198.51.100.9", "page", reason="no_starttls"), True),
    (posted("TlsprobeEndpointTlsBroken", "198.51.100.13", "page", reason="tls_handshake"), False),
    # A new certificate failing a check: the drift page (one per target and new leaf: no
    # host, address or port) carries the verdict, so the check pages of the target's endpoints
    # wait; the same check on another target still pages.
    (changed("relay2", "ab"), False),
    (posted("TlsprobeCertificateDomainMismatch", "198.51.100.14", "page", target="relay2"), True),
    (posted("TlsprobeCertificateDomainMismatch", "198.51.100.16", "page", target="relay2"), True),
    (posted("TlsprobeCertificateDomainMismatch", "198.51.100.15", "page"), False),
    # An expired leaf: the untrusted-chain alert for the same cause is silenced, others not.
    (posted("TlsprobeCertificateExpired", "198.51.100.10", "page"), False),
    (posted("TlsprobeCertificateUntrusted", "198.51.100.10", "page", reason="leaf_expired"), True),
    (posted("TlsprobeCertificateUntrusted", "198.51.100.11", "page", reason="self_signed"), False),
]


@pytest.mark.prometheus
def test_inhibit_rules_silence_the_right_alerts(alertmanager: str) -> None:
    http(f"{alertmanager}/api/v2/alerts", [alert for alert, _ in INHIBITION_CASES])

    def key(labels: dict[str, str]) -> tuple[str, ...]:
        return (labels["alertname"], labels.get("address", ""))

    expected = {key(a["labels"]): inhibited for a, inhibited in INHIBITION_CASES}
    assert inhibitions(alertmanager, key, expected) == expected


@pytest.mark.prometheus
def test_a_cross_tenant_page_holds_back_the_senders_page_for_the_same_cause(
    alertmanager: str,
) -> None:
    """A sender critical for its `cross_tenant` check pages once, through
    TlsprobeCrossTenantAttribution of its tenant and leaf; its other failing check, or the same
    check of another leaf, still pages."""

    def alert(name: str, fingerprint: str, **labels: str) -> dict[str, Any]:
        every = {"alertname": name, "severity": "page", "tenant": "contoso", **labels}
        return {"labels": {**every, "fingerprint_sha256": fingerprint}, "annotations": {}}

    cases = [
        (alert("TlsprobeCrossTenantAttribution", "aa", other_tenant="fabrikam"), False),
        (alert("TlsprobeSenderNotO365Ready", "aa", sender="relay", check="cross_tenant"), True),
        (alert("TlsprobeSenderNotO365Ready", "aa", sender="relay", check="not_expired"), False),
        (alert("TlsprobeSenderNotO365Ready", "bb", sender="relay2", check="cross_tenant"), False),
    ]
    http(f"{alertmanager}/api/v2/alerts", [a for a, _ in cases])

    def key(labels: dict[str, str]) -> tuple[str, ...]:
        return (labels["alertname"], labels.get("sender", ""), labels.get("check", ""))

    expected = {key(a["labels"]): inhibited for a, inhibited in cases}
    assert inhibitions(alertmanager, key, expected) == expected


def inhibitions(
    alertmanager: str,
    key: Callable[[dict[str, str]], tuple[str, ...]],
    expected: dict[tuple[str, ...], bool],
) -> dict[tuple[str, ...], bool]:
    """Whether each alert Alertmanager holds is inhibited, by `key` of its labels, once that
    equals `expected` or after 10 s: the inhibitor learns of new alerts asynchronously."""
    deadline = time.monotonic() + 10
    while True:
        seen = {
            key(a["labels"]): bool(a["status"]["inhibitedBy"])
            for a in http(f"{alertmanager}/api/v2/alerts")
        }
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def alert(alertname: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": alertname, "severity": severity, **labels}}


RELAY = {"host": "relay.contoso.com", "address": "192.0.2.10", "port": "25"}
# (alert, held back?) while contoso/relay is in a maintenance window.
MAINTENANCE_CASES = [
    (alert(MAINTENANCE, "info", tenant="contoso", target="relay"), False),
    (alert("TlsprobeCertificateExpired", "page", tenant="contoso", target="relay", **RELAY), True),
    (alert("TlsprobeResultsStale", "warning", tenant="contoso", target="relay", **RELAY), True),
    # Another target of the tenant, the same target name in another tenant, the tenant's
    # sender and the exporter itself are not in the window.
    (alert("TlsprobeCertificateExpired", "page", tenant="contoso", target="smtps", **RELAY), False),
    (alert("TlsprobeCertificateExpired", "page", tenant="fabrikam", target="relay"), False),
    (alert("TlsprobeSenderCertificateChanged", "page", tenant="contoso", sender="relay"), False),
    (alert("TlsprobeConfigReloadFailed", "warning"), False),
]


def maintenance_key(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(k, "") for k in ("alertname", "tenant", "target", "sender"))


@pytest.mark.prometheus
def test_a_maintenance_window_holds_back_its_targets_alerts_only(alertmanager: str) -> None:
    http(f"{alertmanager}/api/v2/alerts", [alert for alert, _ in MAINTENANCE_CASES])
    expected = {maintenance_key(a["labels"]): held for a, held in MAINTENANCE_CASES}
    assert inhibitions(alertmanager, maintenance_key, expected) == expected


# --- Grafana --------------------------------------------------------------------------------


def test_dashboard_identity_and_variables() -> None:
    board = dashboard()
    assert board["uid"] == "tlsprobe-overview"
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["tenant"]["query"].startswith("label_values(")
    assert variables["target"]["query"].startswith("label_values(")
    assert "$tenant" in variables["target"]["query"]


def test_dashboard_panels_use_the_datasource_variable() -> None:
    board = dashboard()
    sources = [panel["datasource"] for panel in all_panels() if panel["type"] != "row"]
    sources += [t["datasource"] for panel in all_panels() for t in panel.get("targets", [])]
    sources += [a["datasource"] for a in board["annotations"]["list"] if "expr" in a]
    assert sources
    assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)


def test_dashboard_endpoint_queries_honour_the_variables() -> None:
    # Endpoint series carry tenant and target; a query on them that ignores the variables would
    # show other tenants' endpoints to someone who picked one.
    endpoint_metrics = re.compile(
        r"tlsprobe_(status|check_status|o365_ready|tls_info|cert_info|probe_error_info|"
        r"probe_duration_seconds|cert_changes_total|chain_untrusted_info|"
        r"cert_last_change_timestamp_seconds|target_distinct_certificates)\{|tlsprobe:\w+\{"
    )
    for query in panel_queries():
        if endpoint_metrics.search(query):
            selectors = re.findall(r"(?:tlsprobe_\w+|tlsprobe:\w+)\{([^}]*)\}", query)
            for selector in selectors:
                assert 'tenant=~"$tenant"' in selector and 'target=~"$target"' in selector, query


def test_dashboard_panels_without_endpoint_labels_say_so() -> None:
    """The probe and retry counters carry no tenant or target: their panels cannot honour the
    variables, so they must not look as if they did."""
    unfiltered = [
        panel
        for panel in all_panels()
        if any(
            re.search(r"tlsprobe_(probes|retries)_total", target.get("expr", ""))
            for target in panel.get("targets", [])
        )
    ]
    assert len(unfiltered) == 2
    for panel in unfiltered:
        assert panel["title"].endswith("(all tenants)")
        assert "Tenant and Target selections do not apply" in panel["description"]


def test_dashboard_overview_table_merges_instant_queries() -> None:
    table = next(
        p for p in dashboard()["panels"] if p["type"] == "table" and p["title"] == "Endpoints"
    )
    assert all(t.get("instant") and t.get("format") == "table" for t in table["targets"])
    assert table["transformations"][0]["id"] == "merge"
    renamed = table["transformations"][1]["options"]["renameByName"]
    assert {"Status", "Days left", "O365 ready", "TLS", "Issuer", "Leaf first seen"} <= set(
        renamed.values()
    )


def test_dashboard_marks_certificate_changes() -> None:
    annotations = [a for a in dashboard()["annotations"]["list"] if "expr" in a]
    assert any("tlsprobe_cert_changes_total" in a["expr"] and a["enable"] for a in annotations)


def test_grafana_provisioning_loads_the_dashboard() -> None:
    provider = load_yaml(DASHBOARD_PROVIDER)["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    source = load_yaml(DATASOURCE)["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True


# The operator's tables, evaluated by promtool on three endpoints: contoso/relay expires in 10
# days, contoso/mx (100 days) changed leaf at t=200s, fabrikam/edge is critical and not ready.
_AT = 300  # promtool's eval_time below, so time() is 300
_DAY = 86400
_ENDPOINTS = {
    "relay": ("contoso", "relay.contoso.test", 0, 1, _AT + 10 * _DAY),
    "mx": ("contoso", "mx.contoso.test", 0, 1, _AT + 100 * _DAY),
    "edge": ("fabrikam", "edge.fabrikam.test", 2, 0, _AT + 200 * _DAY),
}


def _labels(target: str, **extra: str) -> dict[str, str]:
    tenant, host, *_ = _ENDPOINTS[target]
    return {"tenant": tenant, "target": target, "host": host, "address": "192.0.2.1"} | {
        "port": "25",
        **extra,
    }


def _series(name: str, labels: dict[str, str], value: float) -> dict[str, str]:
    scraped = labels | {"job": "tlsprobe", "instance": "localhost:9825"}
    pairs = ",".join(f'{k}="{v}"' for k, v in scraped.items())
    return {"series": f"{name}{{{pairs}}}", "values": f"{value:.0f}+0x10"}


def _leaf(target: str, prefix: str = "") -> dict[str, str]:
    host = _ENDPOINTS[target][1]
    fingerprint = ("aa" if prefix else "bb") if target == "mx" else target
    return {
        f"{prefix}fingerprint_sha256": fingerprint,
        f"{prefix}subject": f"CN={host}" + (" (old)" if prefix else ""),
        f"{prefix}issuer": "CN=Old CA" if prefix else "CN=Contoso CA",
        f"{prefix}names": host,
    }


_CHANGE = {"change": "risky", "reasons": "issuer_changed", "detail": "issuer changed: Old CA → CA"}


def _operator_series() -> list[dict[str, str]]:
    series = []
    for target, (_, _, status, ready, not_after) in _ENDPOINTS.items():
        series += [
            _series("tlsprobe_status", _labels(target), status),
            _series("tlsprobe_o365_ready", _labels(target), ready),
            _series("tlsprobe_cert_not_after_timestamp_seconds", _labels(target), not_after),
            _series("tlsprobe_cert_info", _labels(target, **_leaf(target), serial="01"), 1),
        ]
    previous = {k.removeprefix("old_"): v for k, v in _leaf("mx", "old_").items()}
    series += [
        _series("tlsprobe_cert_previous_info", _labels("mx", **previous), 1),
        _series("tlsprobe_cert_previous_not_after_timestamp_seconds", _labels("mx"), 1000),
        _series("tlsprobe_cert_last_change_timestamp_seconds", _labels("mx"), 200),
        _series("tlsprobe_cert_last_change_timestamp_seconds", _labels("relay"), 0),
        _series("tlsprobe_cert_change_info", _labels("mx", **_CHANGE, previous_failing=""), 1),
    ]
    sender = {"tenant": "contoso", "sender": "relay-1", "job": "tlsprobe", "instance": "x"}
    pairs = ",".join(f'{k}="{v}"' for k, v in sender.items())
    return [*series, {"series": f"tlsprobe_sender_status{{{pairs}}}", "values": "1+0x10"}]


def _query(title: str, ref: str) -> str:
    (expr,) = [t["expr"] for t in titled(title)["targets"] if t["refId"] == ref]
    return substitute(expr)


def _expect(title: str, ref: str, *rows: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "expr": _query(title, ref),
        "eval_time": f"{_AT}s",
        "exp_samples": [{"labels": _text(labels), "value": value} for labels, value in rows],
    }


def _text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@pytest.mark.prometheus
def test_dashboard_operator_tables_compute_the_right_rows(tmp_path: Path) -> None:
    """The tenant summary, the expiring table and the change table (old -> new), exactly."""
    tenants = {"contoso": {"tenant": "contoso"}, "fabrikam": {"tenant": "fabrikam"}}
    relay, mx = _labels("relay"), _labels("mx")
    cases = [
        _expect("Tenants", "A", (tenants["contoso"], 2), (tenants["fabrikam"], 1)),
        _expect("Tenants", "B", (tenants["contoso"], 2), (tenants["fabrikam"], 0)),
        _expect("Tenants", "D", (tenants["contoso"], 0), (tenants["fabrikam"], 1)),
        _expect("Tenants", "G", (tenants["contoso"], 0), (tenants["fabrikam"], 1)),
        _expect("Tenants", "H", (tenants["contoso"], 10), (tenants["fabrikam"], 200)),
        _expect("Tenants", "I", (tenants["contoso"], 1)),
        # Only relay expires within 30 days; its owner, names, subject and issuer come along.
        _expect(
            "Expires within 30 days",
            "A",
            ({k: v for k, v in (relay | _leaf("relay")).items() if k != "fingerprint_sha256"}, 10),
        ),
        _expect("Expires within 30 days", "B", (relay, (_AT + 10 * _DAY) * 1000)),
        # Only mx changed: the new leaf's labels, the old one's as old_*, the change time in ms.
        _expect("Certificate changes", "A", (mx | _leaf("mx") | _leaf("mx", "old_"), 200_000)),
        _expect("Certificate changes", "B", (mx, 1_000_000)),
        _expect("Certificate changes", "C", (mx, (_AT + 100 * _DAY) * 1000)),
        _expect("Certificate changes", "D", (mx | _CHANGE, 1)),
    ]
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": _operator_series(), "promql_expr_test": cases}
        ],
    }
    path = tmp_path / "operator.yml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = run(prometheus_tool("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_a_row_per_tenant_and_the_operator_tables() -> None:
    (repeated,) = [p for p in dashboard()["panels"] if p.get("repeat")]
    assert repeated["type"] == "row" and repeated["repeat"] == "tenant"
    assert repeated["collapsed"] is True  # hundreds of tenants: expand the one you want
    assert {p["title"] for p in repeated["panels"]} >= {"Critical", "Not O365 ready"}
    assert all('tenant=~"$tenant"' in t["expr"] for p in repeated["panels"] for t in p["targets"])
    columns = {
        "Tenants": {"Tenant", "OK", "Warning", "Critical", "Unknown", "O365 ready"},
        "Expires within 30 days": {"Tenant", "Target", "Days left", "Names", "Issuer"},
        "Certificate changes": {
            "Changed at",
            "Change",
            "Differences",
            "Old SHA-256",
            "New SHA-256",
            "Old issuer",
        },
        "Senders": {"Tenant", "Sender", "Status", "O365 ready", "Days left", "Canary"},
        "Sender checks": {"Sender", "Check", "Status"},
    }
    for title, expected in columns.items():
        organize = titled(title)["transformations"][-1]
        assert organize["id"] == "organize"
        assert expected <= set(organize["options"]["renameByName"].values()), title
    assert titled("Expires within 30 days")["options"]["sortBy"] == [
        {"displayName": "Days left", "desc": False}
    ]
    for title in ("Canary round trip", "Canary failures by reason", "Exporter CPU"):
        assert titled(title, "timeseries")["targets"]

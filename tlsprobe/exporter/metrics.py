"""The metric table, and the two ways of exposing it: a fast text renderer and a Collector.

`METRICS` is the single list of names, help texts and labels; alert rules and dashboards may use
only names in `METRIC_NAMES` (a test checks that). Each endpoint's samples are derived by one
function, `endpoint_samples`, from an immutable `EndpointState`; `/metrics` renders each
endpoint's text once per new result and reuses it until the next, so a scrape of 10,000
endpoints is string joins, not 200,000 formatting calls. `TlsprobeCollector` yields the same
samples as prometheus_client families, for registries and for `/probe`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tlsprobe import __version__
from tlsprobe.exporter.authgate import Verdict
from tlsprobe.exporter.connections import Closed
from tlsprobe.exporter.eventloop import EventLoop
from tlsprobe.exporter.store import Drift
from tlsprobe.model import PHASES, TRANSIENT_REASONS, CertPart, CheckName, ProbeResult, Status

ENDPOINT_LABELS = ("tenant", "target", "host", "address", "port")
TARGET_LABELS = ("tenant", "target")
SENDER_LABELS = ("tenant", "sender")
_SCOPE_LABELS = {"endpoint": ENDPOINT_LABELS, "target": TARGET_LABELS, "sender": SENDER_LABELS}


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    """Full family name; counters are exposed with a `_total` suffix on top of it."""
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    """Labels beyond the scope's own (endpoint labels, target labels or none)."""
    scope: str = "endpoint"

    @property
    def sample_name(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name

    @property
    def all_labels(self) -> tuple[str, ...]:
        base = _SCOPE_LABELS.get(self.scope, ())
        return (*base, *self.labels)


def _g(name: str, help_: str, *labels: str, scope: str = "endpoint") -> MetricDef:
    return MetricDef(f"tlsprobe_{name}", "gauge", help_, labels, scope)


def _c(name: str, help_: str, *labels: str, scope: str = "endpoint") -> MetricDef:
    return MetricDef(f"tlsprobe_{name}", "counter", help_, labels, scope)


def _s(name: str, help_: str, *labels: str, kind: str = "gauge") -> MetricDef:
    """A send-side series: labelled by tenant and sender (a configured relay node)."""
    return MetricDef(f"tlsprobe_{name}", kind, help_, labels, "sender")


SEND_SIDE_METRICS: tuple[MetricDef, ...] = (
    _s(
        "sender_status",
        "Sender's client certificate, overall: 0 ok, 1 warning, 2 critical, 3 unknown.",
    ),
    _s("sender_check_status", "Sender status per check, same scale.", "check"),
    _s("sender_o365_ready", "1 when the sender's client certificate meets every connector rule."),
    _s(
        "sender_chain_untrusted_info",
        "1 with the reason the client chain is not trusted.",
        "reason",
    ),
    _s("sender_session_error_info", "1 for the failure reason of the last session.", "reason"),
    _s(
        "sender_tls_info",
        "TLS version and cipher of the sender's last session.",
        "version",
        "cipher",
    ),
    _s("sender_cert_not_after_timestamp_seconds", "Sender's client leaf notAfter."),
    _s(
        "sender_cert_info",
        "Sender's client leaf identity; names are the SAN dNSNames, comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "serial",
        "names",
    ),
    _s(
        "sender_cert_changes",
        "Client leaf changes seen; persisted across restarts.",
        kind="counter",
    ),
    _s("sender_last_session_timestamp_seconds", "Unix time of the sender's last session."),
    _s("sender_sessions", "Sessions received from the sender since start.", kind="counter"),
    _s("canary_success", "1 when the sender's last canary arrived, 0 when it failed."),
    _s("canary_round_trip_seconds", "Submission to arrival of the last canary that arrived."),
    _s("canary_last_success_timestamp_seconds", "Unix time the last canary arrived."),
    _s(
        "canary_failure_info",
        "1 for the reason the last canary failed; absent on success.",
        "reason",
    ),
    _s("canary_failures", "Canary failures since start, by reason.", "reason", kind="counter"),
    MetricDef(
        "tlsprobe_receiver_unknown_peer_sessions",
        "counter",
        "Receiver sessions from peers that are no configured sender (refused at RCPT).",
        scope="",
    ),
    MetricDef(
        "tlsprobe_receiver_refused_sessions",
        "counter",
        "Receiver connections answered 421 (session cap or per-peer rate).",
        scope="",
    ),
    MetricDef(
        "tlsprobe_receiver_active_sessions", "gauge", "Receiver sessions open now.", scope=""
    ),
    MetricDef("tlsprobe_senders_configured", "gauge", "Senders in the configuration.", scope=""),
)

METRICS: tuple[MetricDef, ...] = (
    _g("probe_success", "1 when a TLS session was established and the chain captured."),
    _g("probe_error_info", "1 for the current failure reason; absent on success.", "reason"),
    _g("probe_duration_seconds", "Duration of each phase of the last probe.", "phase"),
    _g("last_probe_timestamp_seconds", "Unix time the shown result was taken."),
    _g("probe_interval_seconds", "Configured probe interval of the endpoint."),
    _g("status", "Overall status: 0 ok, 1 warning, 2 critical, 3 unknown."),
    _g("check_status", "Status per check: 0 ok, 1 warning, 2 critical, 3 unknown.", "check"),
    _g("chain_untrusted_info", "1 with the reason when the chain is not trusted.", "reason"),
    _g("o365_ready", "1 when every Exchange Online connector rule holds and no check is critical."),
    _g("tls_info", "Negotiated TLS version and cipher.", "version", "cipher"),
    _g("cert_not_after_timestamp_seconds", "Leaf certificate notAfter."),
    _g("cert_not_before_timestamp_seconds", "Leaf certificate notBefore."),
    _g(
        "chain_earliest_not_after_timestamp_seconds",
        "Earliest notAfter among the certificates the server sent.",
    ),
    _g(
        "cert_info",
        "Leaf certificate identity; names are the SAN dNSNames, comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "serial",
        "names",
    ),
    _g(
        "cert_previous_info",
        "The leaf served before the current one (after a change); names comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "names",
    ),
    _g("cert_previous_not_after_timestamp_seconds", "notAfter of the leaf served before."),
    _c("cert_changes", "Leaf certificate changes seen; persisted across restarts."),
    _g("cert_last_change_timestamp_seconds", "When the current leaf was first seen."),
    _g(
        "target_distinct_certificates",
        "Distinct leaf certificates served now across a target's endpoints.",
        scope="target",
    ),
    _g(
        "connector_info",
        "The target's connector policy: certificate domain and accepted domains (comma-joined).",
        "certificate_domain",
        "accepted_domains",
        scope="target",
    ),
    _g(
        "dane_tlsa_records",
        "TLSA records found for the endpoint (0: DANE not applicable), by the DNSSEC status of "
        "the answer: secure, insecure, bogus, failed.",
        "dnssec",
    ),
    _g(
        "mta_sts_fetch_success",
        "1 when the domain's MTA-STS TXT record and policy were read and parsed; 0 when a "
        "policy is announced but unusable.",
        "domain",
        scope="",
    ),
    _g(
        "mta_sts_policy_info", "1 with the mode of the domain's policy.", "domain", "mode", scope=""
    ),
    _g("mta_sts_max_age_seconds", "max_age of the domain's MTA-STS policy.", "domain", scope=""),
    _g(
        "mta_sts_id_change_timestamp_seconds",
        "When the domain's MTA-STS policy id was first seen with its current value.",
        "domain",
        scope="",
    ),
    _g("config_last_reload_successful", "1 when the last configuration load worked.", scope=""),
    _g(
        "config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        scope="",
    ),
    _c(
        "probes",
        "Probes completed, by overall result: ok, warning, critical, unknown.",
        "result",
        scope="",
    ),
    _c("retries", "Retries of transient probe failures, by reason.", "reason", scope=""),
    _g("http_connections", "Open HTTP connections to the exporter.", scope=""),
    _g(
        "http_connection_limit",
        "Open HTTP connections allowed (web.max_connections, fitted to the descriptor limit).",
        scope="",
    ),
    _c(
        "http_connections_closed",
        "HTTP connections the exporter closed itself, by reason: limit, header_timeout.",
        "reason",
        scope="",
    ),
    _c(
        "http_auth_attempts",
        "Basic-auth checks by outcome: ok, failed, throttled (client over its failure budget).",
        "outcome",
        scope="",
    ),
    _c(
        "probe_requests_shared",
        "/probe requests answered with the probe of another request within the interval.",
        scope="",
    ),
    _g("state_writable", "1 while the certificate history can be written.", scope=""),
    _c("state_write_errors", "Failed writes to the certificate history.", scope=""),
    _g("targets_configured", "Targets in the configuration in force.", scope=""),
    _g("endpoints", "Endpoints (host, address, port) currently probed.", scope=""),
    _g(
        "build_info",
        "Build information; event_loop is uvloop or asyncio.",
        "version",
        "python",
        "event_loop",
        scope="",
    ),
    _g("external_url_info", "Where users reach this exporter (web.external_url).", "url", scope=""),
    *SEND_SIDE_METRICS,
)

BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in METRICS}
METRIC_NAMES: frozenset[str] = frozenset(m.sample_name for m in METRICS)


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What is known of one endpoint right now: its latest result and its drift history."""

    tenant: str
    target: str
    result: ProbeResult
    drift: Drift | None = None
    interval: float = 0.0
    connector: tuple[str, str] = ("", "")
    """The target's certificate domain and accepted domains (comma-joined); "" when unset."""

    @property
    def label_values(self) -> tuple[str, ...]:
        endpoint = self.result.endpoint
        address = self.result.address or endpoint.address or ""
        return (self.tenant, self.target, endpoint.host, address, str(endpoint.port))


@dataclass
class ExporterStats:
    """Exporter self-metrics. Mutated only on the event loop thread."""

    reload_successful: bool = True
    reload_success_at: float = 0.0
    probes: dict[str, int] = field(default_factory=lambda: {s.label: 0 for s in Status})
    retries: dict[str, int] = field(
        default_factory=lambda: {r.value: 0 for r in sorted(TRANSIENT_REASONS)}
    )
    """Every reason a retry can have, from zero: the series exist before the first retry."""
    state_writable: bool = True
    state_write_errors: int = 0
    targets_configured: int = 0
    external_url: str = ""
    http_connections: int = 0
    http_connection_limit: int = 0
    http_closed: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in Closed})
    auth_outcomes: dict[str, int] = field(default_factory=lambda: {v.value: 0 for v in Verdict})
    probe_requests_shared: int = 0
    event_loop: EventLoop = EventLoop.ASYNCIO
    mta_sts: dict[str, MtaStsSample] = field(default_factory=dict)
    """Per MTA-STS policy domain of the configuration (bounded by it)."""

    def snapshot(self) -> ExporterStats:
        """A copy another thread may read while the loop goes on counting (each dict copied)."""
        copy = replace(self)
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, dict):
                setattr(copy, item.name, dict(value))
        return copy


@dataclass(frozen=True, slots=True)
class MtaStsSample:
    """What `/metrics` shows of one policy domain that announces a policy."""

    fetched: bool
    mode: str | None
    max_age: float | None
    id_changed_at: float


Sample = tuple[str, tuple[str, ...], float]
"""(family name, extra label values, value)."""


def endpoint_samples(state: EndpointState) -> Iterator[Sample]:
    """Every sample one endpoint contributes. The one place that maps results to metrics."""
    result = state.result
    yield "tlsprobe_probe_success", (), 1.0 if result.success else 0.0
    if result.error is not None:
        yield "tlsprobe_probe_error_info", (result.error.kind.value,), 1.0
    for phase in PHASES:
        if phase in result.phases:
            yield "tlsprobe_probe_duration_seconds", (phase,), result.phases[phase]
    yield "tlsprobe_last_probe_timestamp_seconds", (), result.started_at
    if state.interval:
        yield "tlsprobe_probe_interval_seconds", (), state.interval
    yield "tlsprobe_status", (), float(result.status)
    for check in result.checks:
        yield "tlsprobe_check_status", (check.name,), float(check.status)
        if check.name is CheckName.CHAIN_TRUSTED and check.reason is not None:
            yield "tlsprobe_chain_untrusted_info", (check.reason,), 1.0
    yield "tlsprobe_o365_ready", (), 1.0 if result.o365_ready else 0.0
    if result.tls is not None:
        yield "tlsprobe_tls_info", (result.tls.version, result.tls.cipher), 1.0
    leaf = result.leaf
    if leaf is not None:
        # Dates that could not be read are not exported as the epoch (an "expired in 1970").
        if not leaf.unreadable(CertPart.VALIDITY):
            yield "tlsprobe_cert_not_after_timestamp_seconds", (), leaf.not_after.timestamp()
            yield "tlsprobe_cert_not_before_timestamp_seconds", (), leaf.not_before.timestamp()
        if not any(c.unreadable(CertPart.VALIDITY) for c in result.chain):
            earliest = min(c.not_after for c in result.chain).timestamp()
            yield "tlsprobe_chain_earliest_not_after_timestamp_seconds", (), earliest
        names = ",".join(leaf.dns_names)
        info = (leaf.sha256, *map(_clip, (leaf.subject, leaf.issuer, leaf.serial, names)))
        yield "tlsprobe_cert_info", info, 1.0
    yield from _dane_samples(result)
    if state.drift is not None:
        previous = state.drift.previous
        if previous is not None:
            names = ",".join(previous.names)
            old = (previous.fingerprint, previous.subject, previous.issuer, names)
            yield "tlsprobe_cert_previous_info", old, 1.0
            yield "tlsprobe_cert_previous_not_after_timestamp_seconds", (), previous.not_after
        yield "tlsprobe_cert_changes", (), float(state.drift.changes_total)
        yield "tlsprobe_cert_last_change_timestamp_seconds", (), state.drift.since


def _dane_samples(result: ProbeResult) -> Iterator[Sample]:
    """TLSA records found, by DNSSEC status; nothing when DANE was not asked for."""
    if result.dane is not None:
        dane = result.dane
        yield "tlsprobe_dane_tlsa_records", (dane.status.value,), float(len(dane.records))


TargetFacts = tuple[frozenset[str], tuple[str, str]]
"""A target's distinct leaf fingerprints and its connector: all its own samples depend on."""


def target_facts(states: Iterable[EndpointState]) -> dict[tuple[str, str], TargetFacts]:
    """Per (tenant, target): the leaves its endpoints show, and its connector."""
    leaves: dict[tuple[str, str], set[str]] = {}
    connectors: dict[tuple[str, str], tuple[str, str]] = {}
    for state in states:
        key = (state.tenant, state.target)
        seen = leaves.setdefault(key, set())
        connectors[key] = state.connector
        leaf = state.result.leaf
        if leaf is not None:
            seen.add(leaf.sha256)
    return {key: (frozenset(seen), connectors[key]) for key, seen in leaves.items()}


def facts_samples(key: tuple[str, str], facts: TargetFacts) -> Iterator[Sample]:
    yield "tlsprobe_target_distinct_certificates", key, float(len(facts[0]))
    yield "tlsprobe_connector_info", (*key, *facts[1]), 1.0


def target_samples(states: Iterable[EndpointState]) -> Iterator[Sample]:
    """Per target: distinct leaves across its endpoints that show one, and its connector."""
    for key, facts in target_facts(states).items():
        yield from facts_samples(key, facts)


def exporter_samples(stats: ExporterStats, endpoints: int) -> Iterator[Sample]:
    yield "tlsprobe_config_last_reload_successful", (), 1.0 if stats.reload_successful else 0.0
    yield "tlsprobe_config_last_reload_success_timestamp_seconds", (), stats.reload_success_at
    for status, count in stats.probes.items():
        yield "tlsprobe_probes", (status,), float(count)
    for reason, count in sorted(stats.retries.items()):
        yield "tlsprobe_retries", (reason,), float(count)
    yield "tlsprobe_http_connections", (), float(stats.http_connections)
    yield "tlsprobe_http_connection_limit", (), float(stats.http_connection_limit)
    for reason, count in stats.http_closed.items():
        yield "tlsprobe_http_connections_closed", (reason,), float(count)
    for outcome, count in stats.auth_outcomes.items():
        yield "tlsprobe_http_auth_attempts", (outcome,), float(count)
    yield "tlsprobe_probe_requests_shared", (), float(stats.probe_requests_shared)
    yield "tlsprobe_state_writable", (), 1.0 if stats.state_writable else 0.0
    yield "tlsprobe_state_write_errors", (), float(stats.state_write_errors)
    yield "tlsprobe_targets_configured", (), float(stats.targets_configured)
    yield from _mta_sts_samples(stats.mta_sts)
    yield "tlsprobe_endpoints", (), float(endpoints)
    python = ".".join(map(str, sys.version_info[:3]))
    yield "tlsprobe_build_info", (__version__, python, stats.event_loop.value), 1.0
    if stats.external_url:
        yield "tlsprobe_external_url_info", (stats.external_url,), 1.0


def _mta_sts_samples(domains: Mapping[str, MtaStsSample]) -> Iterator[Sample]:
    for domain, sample in sorted(domains.items()):
        yield "tlsprobe_mta_sts_fetch_success", (domain,), 1.0 if sample.fetched else 0.0
        if sample.mode is not None:
            yield "tlsprobe_mta_sts_policy_info", (domain, sample.mode), 1.0
        if sample.max_age is not None:
            yield "tlsprobe_mta_sts_max_age_seconds", (domain,), sample.max_age
        if sample.id_changed_at:
            yield "tlsprobe_mta_sts_id_change_timestamp_seconds", (domain,), sample.id_changed_at


# --- text exposition -----------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _line(metric: MetricDef, values: Sequence[str], value: float) -> str:
    pairs = ",".join(
        f'{name}="{_escape(v)}"' for name, v in zip(metric.all_labels, values, strict=True)
    )
    return (
        f"{metric.sample_name}{{{pairs}}} {_number(value)}\n"
        if pairs
        else (f"{metric.sample_name} {_number(value)}\n")
    )


def render_endpoint(state: EndpointState) -> dict[str, bytes]:
    """One endpoint's exposition lines, grouped by family, encoded once."""
    base = state.label_values
    out: dict[str, list[str]] = {}
    for name, extra, value in endpoint_samples(state):
        out.setdefault(name, []).append(_line(BY_NAME[name], (*base, *extra), value))
    return {name: "".join(lines).encode() for name, lines in out.items()}


class TextRenderer:
    """Renders /metrics, caching each endpoint's text until its state object changes.

    Each endpoint's lines are kept as one row of bytes per family (in `METRICS` order), so a
    scrape transposes the rows and joins each column in C instead of appending 200,000
    fragments one by one; a target's own lines are kept until its distinct leaves or its
    connector change. Both caches hold only what the latest render used. Not thread-safe: one
    render at a time (the server serialises them).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[EndpointState, tuple[bytes, ...]]] = {}
        self._targets: dict[tuple[tuple[str, str], TargetFacts], list[tuple[int, bytes]]] = {}
        self._headers = [
            f"# HELP {m.sample_name} {m.help}\n# TYPE {m.sample_name} {m.kind}\n".encode()
            for m in METRICS
        ]

    def render(
        self,
        states: Sequence[EndpointState],
        stats: ExporterStats | None,
        extra: Iterable[Sample] = (),
    ) -> bytes:
        """The exposition text; `stats` None leaves out the exporter's self-metrics. `extra`
        samples carry all their label values (the send side's)."""
        columns: list[tuple[bytes, ...]] = list(zip(*self._rows(states), strict=True)) or [
            () for _ in METRICS
        ]
        tails: list[list[bytes]] = [[] for _ in METRICS]
        for index, line in self._target_lines(states):
            tails[index].append(line)
        if stats is not None:
            for name, values, value in exporter_samples(stats, len(states)):
                tails[_INDEX[name]].append(_line(BY_NAME[name], values, value).encode())
        for name, values, value in extra:
            tails[_INDEX[name]].append(_line(BY_NAME[name], values, value).encode())
        out: list[bytes] = []
        for index, column in enumerate(columns):
            lines = tails[index]
            if lines or any(column):
                out.append(self._headers[index])
                out.extend(column)
                out.extend(lines)
        # Joining bytes: the cached fragments are never decoded or encoded again per scrape.
        return b"".join(out)

    def _rows(self, states: Sequence[EndpointState]) -> list[tuple[bytes, ...]]:
        # Keyed by identity: the entry holds the state, so its id cannot be reused meanwhile.
        cache, fresh = self._cache, {}
        rows = []
        for state in states:
            entry = cache.get(id(state))
            if entry is None or entry[0] is not state:
                parts = render_endpoint(state)
                entry = (state, tuple(parts.get(m.name, b"") for m in METRICS))
            fresh[id(state)] = entry
            rows.append(entry[1])
        self._cache = fresh
        return rows

    def _target_lines(self, states: Sequence[EndpointState]) -> Iterator[tuple[int, bytes]]:
        cache, fresh = self._targets, {}
        for key, facts in target_facts(states).items():
            lines = cache.get((key, facts))
            if lines is None:
                lines = [
                    (_INDEX[name], _line(BY_NAME[name], values, value).encode())
                    for name, values, value in facts_samples(key, facts)
                ]
            fresh[key, facts] = lines
            yield from lines
        self._targets = fresh


_INDEX: Mapping[str, int] = {m.name: index for index, m in enumerate(METRICS)}


# --- prometheus_client collector -----------------------------------------------------------


class TlsprobeCollector(Collector):
    """Yields the same samples as `TextRenderer`, as prometheus_client metric families.

    `snapshot` returns the current endpoint states; `stats` the exporter counters (None for a
    one-result registry such as `/probe`). `collect()` never raises and works on an empty store.
    """

    def __init__(
        self,
        snapshot: Callable[[], Sequence[EndpointState]],
        stats: ExporterStats | None = None,
        extra: Callable[[], Iterable[Sample]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._stats = stats
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        states = self._snapshot()
        families = {m.name: _family(m) for m in METRICS}
        for state in states:
            base = state.label_values
            for name, extra, value in endpoint_samples(state):
                families[name].add_metric([*base, *extra], value)
        for name, values, value in target_samples(states):
            families[name].add_metric(list(values), value)
        if self._stats is not None:
            for name, extra, value in exporter_samples(self._stats, len(states)):
                families[name].add_metric(list(extra), value)
        for name, values, value in self._extra() if self._extra else ():
            families[name].add_metric(list(values), value)
        yield from (f for f in families.values() if f.samples)


def _family(metric: MetricDef) -> GaugeMetricFamily | CounterMetricFamily:
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=metric.all_labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.all_labels)


_MAX_LABEL = 256
"""Characters of a label value taken from a certificate: a 60 KB subject must not become a
60 KB label on every scrape."""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 3] + "..."

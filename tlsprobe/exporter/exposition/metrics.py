"""The samples of the metric table's endpoint and target families, and their text by hand.

Each endpoint's samples are derived by one function, `endpoint_samples`, from an immutable
`EndpointState`; `/metrics` renders each endpoint's lines once per new result and reuses them
until the next (`snapshot`), so a scrape of 10,000 endpoints is joins of cached bytes, not
200,000 formatting calls. `/probe` renders the same samples through prometheus_client
(`collector.TableCollector`), and the tests hold the hand-written text equal to it.
`TextRenderer` is the plain-text form of the same rendering, which those tests compare
`snapshot` with. The exporter's own series (process, GC, the parts' counters) are
prometheus_client's (`collector.exporter_registry`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from tlsprobe.exporter.exposition.table import (
    BY_NAME,
    ENDPOINT_LABELS,
    METRIC_NAMES,
    METRICS,
    SEND_SIDE_METRICS,
    SENDER_LABELS,
    TARGET_LABELS,
    MetricDef,
    Sample,
)
from tlsprobe.exporter.history.store import Drift
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import PHASES, CertPart, CheckName, ProbeResult

__all__ = [
    "BY_NAME",
    "ENDPOINT_LABELS",
    "FAMILY_INDEX",
    "METRICS",
    "METRIC_NAMES",
    "SENDER_LABELS",
    "SEND_SIDE_METRICS",
    "TARGET_INFO",
    "TARGET_LABELS",
    "MetricDef",
    "Sample",
    "TextRenderer",
    "clip",
    "endpoint_samples",
    "facts_lines",
    "facts_samples",
    "family_header",
    "maintenance_samples",
    "render_endpoint",
    "sample_line",
    "target_facts",
    "target_info_pairs",
    "target_samples",
]


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
    yield from _connector_samples(result)
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
        yield from _drift_samples(state.drift)


def _drift_samples(drift: Drift) -> Iterator[Sample]:
    """The leaf changes of one endpoint: the one before, how the latest was classified."""
    previous = drift.previous
    if previous is not None:
        names = ",".join(previous.names)
        old = (previous.fingerprint, previous.subject, previous.issuer, names)
        yield "tlsprobe_cert_previous_info", old, 1.0
        yield "tlsprobe_cert_previous_not_after_timestamp_seconds", (), previous.not_after
    change = drift.change
    if change is not None:
        labels = (
            change.change,
            ",".join(change.reasons),
            _clip(change.text),
            ",".join(change.previous_failing),
        )
        yield "tlsprobe_cert_change_info", labels, 1.0
    yield "tlsprobe_cert_changes", (), float(drift.changes_total)
    yield "tlsprobe_cert_last_change_timestamp_seconds", (), drift.since


def _connector_samples(result: ProbeResult) -> Iterator[Sample]:
    """The connector `o365_ready` speaks for, where the result says."""
    ref = result.connector
    if ref is not None:
        yield "tlsprobe_o365_connector_info", (ref.direction, _clip(ref.name), ref.rule), 1.0


def _dane_samples(result: ProbeResult) -> Iterator[Sample]:
    """TLSA records found, by DNSSEC status; nothing when DANE was not asked for."""
    if result.dane is not None:
        dane = result.dane
        yield "tlsprobe_dane_tlsa_records", (dane.status.value,), float(len(dane.records))


TargetFacts = tuple[frozenset[str], tuple[str, str], tuple[tuple[str, str], ...]]
"""A target's distinct leaf fingerprints, its connector and its configured labels: all its own
samples depend on."""

TARGET_INFO = "tlsprobe_target_info"
"""The one family whose label names vary: tenant, target and the target's configured labels.
Its line comes from `target_info_line`, not from a `Sample`."""


def target_facts(states: Iterable[EndpointState]) -> dict[tuple[str, str], TargetFacts]:
    """Per (tenant, target): the leaves its endpoints show, its connector and its labels."""
    leaves: dict[tuple[str, str], set[str]] = {}
    last: dict[tuple[str, str], EndpointState] = {}
    for state in states:
        key = (state.tenant, state.target)
        seen = leaves.setdefault(key, set())
        last[key] = state
        leaf = state.result.leaf
        if leaf is not None:
            seen.add(leaf.sha256)
    return {
        key: (frozenset(seen), last[key].connector, last[key].labels)
        for key, seen in leaves.items()
    }


def facts_samples(key: tuple[str, str], facts: TargetFacts) -> Iterator[Sample]:
    """A target's samples of fixed label names (`target_info_pairs` gives the other one)."""
    yield "tlsprobe_target_distinct_certificates", key, float(len(facts[0]))
    yield "tlsprobe_connector_info", (*key, *facts[1]), 1.0


def target_info_pairs(key: tuple[str, str], facts: TargetFacts) -> tuple[tuple[str, str], ...]:
    """The labels of the target's `tlsprobe_target_info` series, in exposition order."""
    return (("tenant", key[0]), ("target", key[1]), *facts[2])


def facts_lines(key: tuple[str, str], facts: TargetFacts) -> Iterator[tuple[str, bytes]]:
    """(family, exposition line) of every series a target owns: what both renderers cache."""
    for sample in facts_samples(key, facts):
        yield sample[0], sample_line(sample)
    pairs = ",".join(f'{name}="{_escape(v)}"' for name, v in target_info_pairs(key, facts))
    yield TARGET_INFO, f"{TARGET_INFO}{{{pairs}}} 1.0\n".encode()


def target_samples(states: Iterable[EndpointState]) -> Iterator[Sample]:
    """Per target: distinct leaves across its endpoints that show one, and its connector."""
    for key, facts in target_facts(states).items():
        yield from facts_samples(key, facts)


def maintenance_samples(status: Mapping[tuple[str, str], float | None]) -> Iterator[Sample]:
    """Per target with maintenance windows: whether one is open now, and when it closes
    (`config.maintenance.status`, asked at the scrape's time)."""
    for key, until in sorted(status.items()):
        yield "tlsprobe_maintenance_active", key, 0.0 if until is None else 1.0
        if until is not None:
            yield "tlsprobe_maintenance_window_end_timestamp_seconds", key, until


# --- text exposition -----------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    # Most values are whole, finite and small (statuses, counts, timestamps): one comparison
    # chain answers them. NaN fails every comparison and falls through.
    if -1e15 < value < 1e15:
        whole = int(value)
        return f"{whole}.0" if value == whole else repr(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _pairs(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{name}="{_escape(v)}"' for name, v in zip(names, values, strict=True))


@functools.lru_cache(maxsize=4096)
def _extra_pairs(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """`_pairs` for a sample's own labels: phase, check and reason names, TLS versions and
    ciphers repeat across every endpoint, so they are escaped and joined once (bounded)."""
    return _pairs(names, values)


def _line(metric: MetricDef, values: Sequence[str], value: float) -> str:
    pairs = _pairs(metric.all_labels, values)
    return (
        f"{metric.sample_name}{{{pairs}}} {_number(value)}\n"
        if pairs
        else (f"{metric.sample_name} {_number(value)}\n")
    )


def sample_line(sample: Sample) -> bytes:
    """One sample's exposition line; `sample` carries all its label values."""
    name, values, value = sample
    return _line(BY_NAME[name], values, value).encode()


def family_header(metric: MetricDef, *, openmetrics: bool = False) -> bytes:
    """A family's HELP and TYPE lines. Text 0.0.4 names a counter by its samples' name (with
    `_total`), as prometheus_client writes it; OpenMetrics by the family's (without)."""
    name = metric.name if openmetrics else metric.sample_name
    return f"# HELP {name} {metric.help}\n# TYPE {name} {metric.kind}\n".encode()


def render_endpoint(state: EndpointState) -> dict[str, bytes]:
    """One endpoint's exposition lines, grouped by family, encoded once."""
    # The endpoint's own labels are escaped and joined once, not once per line: most of the
    # cost of a new result's text was there.
    base = _pairs(ENDPOINT_LABELS, state.label_values)
    out: dict[str, list[str]] = {}
    for name, extra, value in endpoint_samples(state):
        head = _SAMPLE_NAMES[name]
        if extra:
            line = f"{head}{{{base},{_extra_pairs(_LABELS[name], extra)}}} {_number(value)}\n"
        else:
            line = f"{head}{{{base}}} {_number(value)}\n"
        lines = out.get(name)
        if lines is None:
            out[name] = [line]
        else:
            lines.append(line)
    return {name: "".join(lines).encode() for name, lines in out.items()}


_SAMPLE_NAMES: Mapping[str, str] = {m.name: m.sample_name for m in METRICS}
_LABELS: Mapping[str, tuple[str, ...]] = {m.name: m.labels for m in METRICS}


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
        self._headers = [family_header(m) for m in METRICS]

    def render(self, states: Sequence[EndpointState], extra: Iterable[Sample] = ()) -> bytes:
        """The exposition text of the metric table's families; `extra` samples carry all their
        label values (the send side's)."""
        columns: list[tuple[bytes, ...]] = list(zip(*self._rows(states), strict=True)) or [
            () for _ in METRICS
        ]
        tails: list[list[bytes]] = [[] for _ in METRICS]
        for index, line in self._target_lines(states):
            tails[index].append(line)
        for sample in extra:
            tails[FAMILY_INDEX[sample[0]]].append(sample_line(sample))
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
                lines = [(FAMILY_INDEX[name], line) for name, line in facts_lines(key, facts)]
            fresh[key, facts] = lines
            yield from lines
        self._targets = fresh


FAMILY_INDEX: Mapping[str, int] = {m.name: index for index, m in enumerate(METRICS)}
"""Each family's place in `METRICS`, the order of the exposition."""


_MAX_LABEL = 256
"""Characters of a label value taken from a certificate: a 60 KB subject must not become a
60 KB label on every scrape."""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 3] + "..."


clip = _clip
"""A label value taken from a certificate, cut to `_MAX_LABEL` characters (the send side's
series use it too)."""

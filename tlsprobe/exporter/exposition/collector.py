"""prometheus_client where it serves: the exporter's own registry, /probe, the formats.

`ExporterRegistry` is the exporter's `CollectorRegistry`: the process, platform and GC
collectors every client_python exporter has, and one `SampleCollector` per part of the exporter
that owns numbers (connection guard, auth gate, probe limiter, scheduler, DNS policies, the
reload state), each read when a scrape collects it. `/metrics` puts its exposition after the
endpoint families, which stay on the incremental renderer (`snapshot`): `generate_latest` over
a large fleet costs thousands of times a warm render of the cached body (benchmarks/README.md).
`TableCollector` renders the metric table's families of a few states through
prometheus_client (`/probe`), from the same `endpoint_samples` the renderer uses; the tests
hold the two equal. `wants_openmetrics` reads a scrape's Accept header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import exposition as text_format
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from tlsprobe.exporter.exposition.metrics import (
    TARGET_INFO,
    endpoint_samples,
    family_header,
    sample_line,
    target_facts,
    target_info_pairs,
    target_samples,
)
from tlsprobe.exporter.exposition.table import BY_NAME, METRICS, MetricDef, Sample
from tlsprobe.exporter.state import EndpointState

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
EOF = b"# EOF\n"
"""The last line of an OpenMetrics exposition."""


def family(metric: MetricDef) -> GaugeMetricFamily | CounterMetricFamily:
    """An empty prometheus_client family for a row of the metric table."""
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=metric.all_labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.all_labels)


def families(samples: Iterable[Sample]) -> list[Metric]:
    """`samples` (all their label values each) as families, in the order they first came."""
    out: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    for name, values, value in samples:
        found = out.get(name)
        if found is None:
            found = out[name] = family(BY_NAME[name])
        found.add_metric(list(values), value)
    return list(out.values())


class SampleCollector(Collector):
    """A part's own numbers, read at scrape time: `samples()` yields them with all their label
    values, as the metric table names them."""

    def __init__(self, samples: Callable[[], Iterable[Sample]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        return iter(families(self._samples()))


class TableCollector(Collector):
    """The metric table's families of `states()` (endpoints and their targets) and `extra()`
    (samples with all their label values, the send side's). Never raises; empty states give
    no family."""

    def __init__(
        self,
        states: Callable[[], Sequence[EndpointState]],
        extra: Callable[[], Iterable[Sample]] | None = None,
    ) -> None:
        self._states = states
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        states = self._states()
        out = {m.name: family(m) for m in METRICS}
        for state in states:
            base = state.label_values
            for name, extra, value in endpoint_samples(state):
                out[name].add_metric([*base, *extra], value)
        for name, values, value in target_samples(states):
            out[name].add_metric(list(values), value)
        for key, facts in target_facts(states).items():
            # Its label names vary by target: a sample with its own label set.
            labels = dict(target_info_pairs(key, facts))
            out[TARGET_INFO].add_sample(TARGET_INFO, labels, 1.0)
        for name, values, value in self._extra() if self._extra else ():
            out[name].add_metric(list(values), value)
        yield from (f for f in out.values() if f.samples)


STANDARD_MAX_AGE = 1.0
"""Seconds a scrape may show the process, platform and GC series that an earlier scrape
collected: reading them (/proc, and prometheus_client's formatting) costs more than a warm
render of 10,000 endpoints (benchmarks/README.md); the parts' own numbers are read at every
scrape."""


class ExporterRegistry(CollectorRegistry):
    """The exporter's own registry: prometheus_client's process, platform and GC collectors
    and one `SampleCollector` per part (`add_part`). `collect()` and so `generate_latest` see
    all of them, as for any registry; `exposition` is the same text made for /metrics: the
    parts' samples in the renderer's line format at every call, the standard collectors'
    text through prometheus_client, held for up to `STANDARD_MAX_AGE` (the tests hold the
    two equal)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(auto_describe=False)
        self._standard = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._standard)
        PlatformCollector(registry=self._standard)
        GCCollector(registry=self._standard)
        self.register(self._standard)
        self._parts: list[Callable[[], Iterable[Sample]]] = []
        self._clock = clock
        self._held: dict[bool, tuple[float, bytes]] = {}

    def add_part(self, samples: Callable[[], Iterable[Sample]]) -> None:
        """A part's numbers (`samples()`: the metric table's families, all label values),
        collected at every scrape."""
        self._parts.append(samples)
        self.register(SampleCollector(samples))

    def exposition(self, *, openmetrics: bool) -> bytes:
        """The registry's families as text 0.0.4, or as OpenMetrics without the final `# EOF`
        (the caller ends the body, which goes on after them)."""
        return self._standard_text(openmetrics) + self._parts_text(openmetrics)

    def _standard_text(self, openmetrics: bool) -> bytes:
        now = self._clock()
        held = self._held.get(openmetrics)
        if held is None or not 0 <= now - held[0] < STANDARD_MAX_AGE:
            held = self._held[openmetrics] = (now, _generate(self._standard, openmetrics))
        return held[1]

    def _parts_text(self, openmetrics: bool) -> bytes:
        lines: dict[str, list[bytes]] = {}
        for samples in self._parts:
            for sample in samples():
                found = lines.get(sample[0])
                if found is None:
                    found = lines[sample[0]] = []
                found.append(sample_line(sample))
        out: list[bytes] = []
        for name, group in lines.items():
            out.append(family_header(BY_NAME[name], openmetrics=openmetrics))
            out.extend(group)
        return b"".join(out)


def _generate(source: CollectorRegistry, openmetrics: bool) -> bytes:
    if not openmetrics:
        return text_format.generate_latest(source)
    text: bytes = openmetrics_format.generate_latest(source)  # type: ignore[no-untyped-call]
    return text[: -len(EOF)] if text.endswith(EOF) else text


def exporter_registry(parts: Iterable[Callable[[], Iterable[Sample]]] = ()) -> ExporterRegistry:
    """An `ExporterRegistry` with `parts` added."""
    registry = ExporterRegistry()
    for samples in parts:
        registry.add_part(samples)
    return registry


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header prefers OpenMetrics to text 0.0.4: it names
    application/openmetrics-text with a quality above 0 and not below text/plain's."""
    best = {"application/openmetrics-text": 0.0, "text/plain": 0.0}
    for media_range in accept[:1024].split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        kind = kind.lower()
        if kind not in best:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[kind] = max(best[kind], quality)
    om = best["application/openmetrics-text"]
    return om > 0 and om >= best["text/plain"]


def render(registry: CollectorRegistry, *, openmetrics: bool) -> tuple[bytes, str]:
    """A whole exposition of `registry`, through prometheus_client, and its content type."""
    if openmetrics:
        return _generate(registry, openmetrics=True) + EOF, OPENMETRICS_CONTENT_TYPE
    return _generate(registry, openmetrics=False), TEXT_CONTENT_TYPE

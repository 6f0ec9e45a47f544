"""The reference collector: the exporter's samples through prometheus_client's own types.

The exporter renders its text by hand (`metrics.TextRenderer`, about 10x faster at 10,000
endpoints); this collector builds the same samples, from the same `endpoint_samples`,
`target_samples` and `exporter_samples`, as prometheus_client families, so that
`generate_latest` can be the oracle the hand-written text is compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tlsprobe.exporter.exposition.metrics import (
    METRICS,
    ExporterStats,
    MetricDef,
    Sample,
    endpoint_samples,
    exporter_samples,
    target_samples,
)
from tlsprobe.exporter.state import EndpointState


class TlsprobeCollector(Collector):
    """The metric table's samples as prometheus_client families: the oracle for `TextRenderer`.

    `snapshot` returns the endpoint states; `stats` the exporter counters (None leaves the
    exporter's own series out); `extra` more samples (the send side's). `collect()` never
    raises and works on an empty store.
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
        families = {m.name: family(m) for m in METRICS}
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


def family(metric: MetricDef) -> GaugeMetricFamily | CounterMetricFamily:
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=metric.all_labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.all_labels)

"""The `/metrics` and `/probe` exposition: the metric table, the samples derived from the
published states, the incremental text renderer, its snapshot, block cache and gzip segments,
and prometheus_client's part (`collector`: the exporter's registry, /probe's collector, the
choice between OpenMetrics and text)."""

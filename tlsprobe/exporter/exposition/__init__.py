"""The `/metrics` and `/probe` exposition: the metric table, the samples derived from the
published states, the incremental text renderer, its snapshot, block cache and gzip segments."""

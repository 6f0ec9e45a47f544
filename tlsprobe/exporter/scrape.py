"""/metrics off the probing loop: render a snapshot and compress it in a worker thread.

The handler takes a snapshot on the event loop (the list of immutable endpoint states and a
copy of the self-metrics, O(endpoints) references, no formatting) and hands it to one worker
thread that renders and gzips it. Probes go on meanwhile: the loop never formats or compresses
a scrape, and nothing a probe does waits for one. Renders are serialised, because the
renderer's caches are not thread-safe; concurrent scrapes queue for the one in progress.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence

from tlsprobe.exporter.metrics import EndpointState, ExporterStats, Sample, TextRenderer

GZIP_MIN_BYTES = 4096
"""Smaller bodies go out as they are: compressing them saves nothing worth a thread hop."""


class Scrape:
    def __init__(self) -> None:
        self.renderer = TextRenderer()
        self._lock = asyncio.Lock()

    async def body(
        self,
        states: Sequence[EndpointState],
        stats: ExporterStats,
        extra: Sequence[Sample] = (),
        *,
        gzip_ok: bool,
    ) -> tuple[bytes, bool]:
        """The exposition text of the snapshot (`extra`: samples with all their label values),
        gzipped when `gzip_ok` and worth it; returns (body, whether it is gzipped)."""
        async with self._lock:
            return await asyncio.to_thread(self._render, states, stats, extra, gzip_ok)

    def _render(
        self,
        states: Sequence[EndpointState],
        stats: ExporterStats,
        extra: Sequence[Sample],
        gzip_ok: bool,
    ) -> tuple[bytes, bool]:
        body = self.renderer.render(states, stats, extra)
        if gzip_ok and len(body) > GZIP_MIN_BYTES:
            # Level 1 is several times faster than the default for about the same size here.
            return gzip.compress(body, compresslevel=1), True
        return body, False

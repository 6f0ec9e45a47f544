"""/metrics off the probing loop: a snapshot rendered on the web thread, gzip kept incrementally.

The handler, on the web loop (`web.thread`), takes a snapshot (the list of immutable endpoint
states and a copy of the self-metrics: references, no formatting), and `SnapshotRenderer`
brings its compressed body up to date with the results that changed and adds the
self-metrics: on the web loop when few results changed, in a worker thread when many did.
Probes go on meanwhile: the probing loop never formats or compresses a scrape, and nothing a
probe does waits for one. Renders are serialised, because the renderer's caches are not
thread-safe; concurrent scrapes queue for the one in progress.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from tlsprobe.exporter.exposition.metrics import ExporterStats, Sample
from tlsprobe.exporter.exposition.snapshot import Changes, SnapshotRenderer
from tlsprobe.exporter.state import EndpointState

GZIP_MIN_BYTES = 4096
"""Smaller bodies go out as they are: their gzip header and trailer save nothing worth it."""


INLINE_CHANGES = 256
"""A scrape with at most this many new results renders on the web loop itself (a few ms);
more (the first scrape, a reload) go to a worker thread, so /-/healthy and the status page
are still answered meanwhile."""


class Scrape:
    def __init__(self) -> None:
        self.renderer = SnapshotRenderer()
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
            # Worked out once: the comparison of the states is a pass over all of them.
            changes = self.renderer.changes(states)
            if len(changes) <= INLINE_CHANGES:
                # Cheap: on the web loop, without two more hand-offs of the GIL to a worker.
                return self._render(states, stats, extra, gzip_ok, changes)
            return await asyncio.to_thread(self._render, states, stats, extra, gzip_ok, changes)

    def _render(
        self,
        states: Sequence[EndpointState],
        stats: ExporterStats,
        extra: Sequence[Sample],
        gzip_ok: bool,
        changes: Changes,
    ) -> tuple[bytes, bool]:
        body = self.renderer.gzip(states, stats, extra, changes)
        text_size = int.from_bytes(body[-4:], "little")
        if gzip_ok and text_size > GZIP_MIN_BYTES:
            return body, True
        return zlib.decompress(body, 16 + zlib.MAX_WBITS), False

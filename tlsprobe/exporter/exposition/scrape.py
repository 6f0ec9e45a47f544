"""/metrics off the probing loop: a snapshot rendered on the web thread, gzip kept incrementally.

The handler, on the web loop (`web.thread`), takes a snapshot (the list of immutable endpoint
states: references, no formatting), and `SnapshotRenderer` brings its compressed body up to
date with the results that changed and adds the exporter registry's exposition (process, GC
and each part's own numbers, collected then): on the web loop when few results changed, in a
worker thread when many did.
Probes go on meanwhile: the probing loop never formats or compresses a scrape, and nothing a
probe does waits for one. Renders are serialised, because the renderer's caches are not
thread-safe; concurrent scrapes queue for the one in progress.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from tlsprobe.exporter.exposition import collector, deflate
from tlsprobe.exporter.exposition.collector import ExporterRegistry
from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.exporter.state import EndpointState

GZIP_MIN_BYTES = 4096
"""Smaller bodies go out as they are: their gzip header and trailer save nothing worth it."""


INLINE_CHANGES = 256
"""A scrape with at most this many new results renders on the web loop itself (milliseconds);
more (the first scrape, a reload) go to a worker thread, so /-/healthy and the status page
are still answered meanwhile."""


class Scrape:
    def __init__(self) -> None:
        self.renderer = SnapshotRenderer()
        self._lock = asyncio.Lock()

    async def body(
        self,
        states: Sequence[EndpointState],
        registry: ExporterRegistry | None,
        extra: Sequence[Sample] = (),
        *,
        gzip_ok: bool,
        openmetrics: bool = False,
    ) -> tuple[bytes, bool]:
        """The exposition of the snapshot (`extra`: samples with all their label values) and
        of `registry`, OpenMetrics when `openmetrics`, gzipped when `gzip_ok` and worth it;
        returns (body, whether it is gzipped)."""
        async with self._lock:
            # Worked out once: the comparison of the states is a pass over all of them.
            changes = self.renderer.changes(states)
            # Collected now, on the web loop: the parts' numbers are read as they stand.
            tail = registry.exposition(openmetrics=openmetrics) if registry else b""

            def render() -> tuple[bytes, bool]:
                body = self.renderer.gzip(
                    states, extra, changes, tail=tail, openmetrics=openmetrics
                )
                return gzipped(body, gzip_ok)

            if len(changes) <= INLINE_CHANGES:
                # Cheap: on the web loop, without two more hand-offs of the GIL to a worker.
                return render()
            return await asyncio.to_thread(render)


def gzipped(body: bytes, gzip_ok: bool) -> tuple[bytes, bool]:
    """A gzip `body` as it goes out: as it is when `gzip_ok` and its text is worth it, else
    decompressed; returns (body, whether it is gzipped)."""
    text_size = int.from_bytes(body[-4:], "little")
    if gzip_ok and text_size > GZIP_MIN_BYTES:
        return body, True
    return zlib.decompress(body, 16 + zlib.MAX_WBITS), False


def probe_body(
    states: Sequence[EndpointState], *, openmetrics: bool, gzip_ok: bool
) -> tuple[bytes, str, bool]:
    """A /probe answer: the metric table's families of `states` through prometheus_client;
    returns (body, content type, whether it is gzipped)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.TableCollector(lambda: states))
    text, content_type = collector.render(registry, openmetrics=openmetrics)
    if gzip_ok and len(text) > GZIP_MIN_BYTES:
        return gzip.compress(text, deflate.LEVEL, mtime=0), content_type, True
    return text, content_type, False

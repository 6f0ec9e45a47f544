"""The HTTP server's own thread and event loop, so a scrape never queues behind probes.

Under a sweep the probing loop runs a hundred probes' handshakes, parsing and evaluation; a
request served on that loop waits for its turn at every step (read, render hand-off, write)
and /metrics took ten times as long as when idle. On its own loop the server answers from
snapshots the probing side never blocks: the results and the self-metrics are copied in one
step each (`list(dict.values())` runs without releasing the GIL, and the states are immutable),
and the body comes from the scrape's own renderer. Requests that act on the probing side
(/probe, /-/reload) hand that work to the probing loop (`on_probing`) and wait for it there.
The web loop is the same kind as the probing one (uvloop or asyncio's own).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tlsprobe.exporter import eventloop

T = TypeVar("T")


class WebThread:
    """Created on the probing loop; `run` hands a coroutine to the web loop."""

    def __init__(self) -> None:
        self.probing = asyncio.get_running_loop()
        uvloop = eventloop.running_loop() is eventloop.EventLoop.UVLOOP
        factory = eventloop.loop_factory() if uvloop else None
        self.loop = (factory or asyncio.new_event_loop)()
        self._thread = threading.Thread(target=self._serve, name="tlsprobe-web", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the web loop (called from the probing loop)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    async def on_probing(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the probing loop (called from the web loop); cancelling the caller
        cancels it there too."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.probing))

    async def stop(self) -> None:
        """End the web loop (its server already cleaned up) and wait for the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join)


async def same_loop(work: Coroutine[Any, Any, T]) -> T:
    """`on_probing` for a web app served on the probing loop itself (tests, embedding)."""
    return await work

"""At most one `/probe` of a target per `web.probe_min_interval`; the others share its answer.

Each `/probe` opens a connection to a mail server (which throttles scanners) and, for a
configured target, writes its result into the history. Requests for a target whose probe is
under way wait for that probe; requests within the interval after it get its result again.
Prometheus pairs scraping the same `/probe` URL thus cost one probe, and a client looping on
`/probe` costs one probe per interval. Entries expire with the interval; the table holds at most
`MAX_ENTRIES` targets (oldest out), so it is bounded however many names are asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from tlsprobe.exporter.exposition.table import Sample

MAX_ENTRIES = 1024

_T = TypeVar("_T")


class ProbeLimiter(Generic[_T]):
    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._entries: OrderedDict[object, tuple[float, asyncio.Future[_T]]] = OrderedDict()
        self.shared = 0
        """Requests answered with another request's probe."""

    def samples(self) -> Iterator[Sample]:
        """Requests answered with another's probe (the exporter registry collects them)."""
        yield "tlsprobe_probe_requests_shared", (), float(self.shared)

    async def run(self, key: object, probe: Callable[[], Awaitable[_T]]) -> _T:
        """`probe()`'s result, or the result of the one started for `key` within the interval."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None and _shareable(entry, now, self.interval):
            self.shared += 1
            return await asyncio.shield(entry[1])
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._entries[key] = (now, future)
        self._entries.move_to_end(key)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        try:
            result = await probe()
        except BaseException as exc:
            # A failed probe is not shared: its waiters see it fail, the next request asks anew.
            # (Cancellation comes only with shutdown, which cancels the waiters too.)
            self._entries.pop(key, None)
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "exception was never retrieved" warning
            else:
                future.cancel()
            raise
        future.set_result(result)
        return result

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (started, future) = next(iter(self._entries.items()))
            if now - started < self.interval or not future.done():
                return
            del self._entries[key]


def _shareable(entry: tuple[float, asyncio.Future[_T]], now: float, interval: float) -> bool:
    started, future = entry
    if not future.done():
        return True
    if future.cancelled() or future.exception() is not None:
        return False
    return now - started < interval

"""Open HTTP connections, bounded before any request is read or any password checked.

Every accepted connection costs a file descriptor, and the probes need descriptors too: once the
process reaches its limit, accept() and every probe's connect() fail with "Too many open files".
So the exporter reads the descriptor limit at start (`connection_budget`), keeps a reserve for
probes, the history database and DNS, and caps open HTTP connections below the rest. At the cap
a new connection takes the place of the oldest one that is not answering a request (an idle
keep-alive or one still sending its headers): a flood of idle or slow-header connections then
costs the flooder its own connections, never the next scrape, which sends its request at once.
A connection must send its request headers within `header_timeout` of opening (or of its first
byte after an idle spell); aiohttp closes idle keep-alive connections after `idle_timeout`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("tlsprobe.exporter.connections")

MIN_CONNECTIONS = 8
RESERVED_BASE = 68
"""Descriptors kept for everything but HTTP and probes: history database and WAL, DNS sockets,
log files, the web thread's event loop (its epoll and wake-up pair), bcrypt's and gzip's worker
threads' odd files, a margin."""
LISTEN_BACKLOG = 64
"""The listen queue of the HTTP socket."""
ACCEPT_BURST = 2 * LISTEN_BACKLOG
"""Descriptors kept for connections accepted but not yet seen by the guard. One wake-up of the
accepting loop takes up to a listen queue's worth at once (asyncio accepts `backlog`
connections per wake-up, libuv until the queue is empty) and the guard admits or evicts them
only when their `connection_made` runs, a loop turn or two later; under a connection flood the
open descriptors pass the cap by that much. Without this reserve that burst ate the probes'
descriptors (seen: 512 of 512 open, so a probe's connect() would fail with EMFILE)."""


class Closed(enum.StrEnum):
    """Why the exporter closed an HTTP connection itself: the label of a self-metric."""

    LIMIT = "limit"
    """At the connection cap: the oldest idle connection made room (or the new one was refused
    when every connection was answering a request)."""
    HEADER_TIMEOUT = "header_timeout"
    """The request headers did not arrive within web.header_timeout."""


@dataclass(frozen=True, slots=True)
class Budget:
    """How many HTTP connections the exporter allows, and why."""

    connections: int
    descriptor_limit: int
    reserved: int
    lowered: bool
    """True when web.max_connections did not fit and was lowered."""


def connection_budget(configured: int, probe_concurrency: int) -> Budget:
    """The HTTP connection cap: `configured`, lowered to fit the process's descriptor limit
    after a reserve of two descriptors per concurrent probe, `RESERVED_BASE` and
    `ACCEPT_BURST`."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    reserved = RESERVED_BASE + ACCEPT_BURST + 2 * probe_concurrency
    fits = max(MIN_CONNECTIONS, limit - reserved)
    cap = min(configured, fits)
    return Budget(cap, limit, reserved, cap < configured)


class ConnectionGuard:
    """Counts open connections, enforces the cap and the header deadline."""

    def __init__(self, limit: int, header_timeout: float) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.closed: dict[str, int] = dict.fromkeys(map(str, Closed), 0)
        self._open: dict[_Guarded, None] = {}  # insertion order: oldest first

    @property
    def open(self) -> int:
        return len(self._open)

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for `loop.create_server`: aiohttp's handler, guarded."""
        return lambda: _Guarded(server(), self)

    def admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.limit and not self._evict_one():
            self.closed[Closed.LIMIT] += 1
            return False
        self._open[connection] = None
        return True

    def forget(self, connection: _Guarded) -> None:
        self._open.pop(connection, None)

    def _evict_one(self) -> bool:
        for connection in self._open:
            if not connection.busy:
                del self._open[connection]
                connection.abort()
                self.closed[Closed.LIMIT] += 1
                return True
        return False

    def header_expired(self, connection: _Guarded) -> None:
        self.closed[Closed.HEADER_TIMEOUT] += 1
        self.forget(connection)
        connection.abort()


class _Guarded(asyncio.Protocol):
    """aiohttp's RequestHandler behind a doorman: the transport talks to this protocol, which
    passes everything on and watches when a complete request arrives."""

    def __init__(self, handler: RequestHandler, guard: ConnectionGuard) -> None:
        self._handler = handler
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.opened = time.monotonic()

    @property
    def busy(self) -> bool:
        """A request is being answered (aiohttp's own flag; no public equivalent)."""
        return bool(self._handler._request_in_progress)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports have the whole asyncio.Transport
        # interface without deriving from it, and an assert here refused every connection.
        self._transport = cast(asyncio.Transport, transport)
        if not self._guard.admit(self):
            self._transport.abort()
            return
        self._arm()
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.forget(self)
        if self._handler.transport is not None:
            self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # aiohttp counts complete request heads in _request_count (no public counter).
        before = self._handler._request_count
        self._handler.data_received(data)
        if self._handler._request_count > before:
            self._disarm()
        elif self._deadline is None:
            self._arm()  # the first bytes of the next request after an idle spell

    def eof_received(self) -> None:
        self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def abort(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.busy:
            self._guard.header_expired(self)


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with every connection passing through a `ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: Any = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"  # noqa: S104

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        # A TLS handshake happens before the guard sees the connection: bound it by the same
        # deadline as the request headers.
        handshake = self._guard.header_timeout if self._ssl_context is not None else None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=handshake,
        )

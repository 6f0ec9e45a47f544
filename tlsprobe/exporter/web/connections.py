"""Open HTTP connections, bounded before any request is read or any password checked.

Every accepted connection costs a file descriptor, and the probes need descriptors too: once the
process reaches its limit, accept() and every probe's connect() fail with "Too many open files".
So the exporter reads the descriptor limit at start (`connection_budget`), keeps a reserve for
probes, the history database and DNS and the receiver's sessions (when the send side is on:
`receiver.descriptors`), and caps open HTTP connections below the rest. At the cap
a new connection takes the place of the oldest one that is not answering a request (an idle
keep-alive or one still sending its headers): a flood of idle or slow-header connections then
costs the flooder its own connections, never the next scrape, which sends its request at once.
A connection must send its request headers within `header_timeout` of opening (or of its first
byte after an idle spell); aiohttp closes idle keep-alive connections after `idle_timeout`.

With TLS the guard admits the TCP connection and only then starts TLS on it (`loop.start_tls`),
so a connection in its handshake counts against the cap and can be evicted like an idle one,
and the one deadline from opening covers the handshake and the request headers together.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.probe.send import receiver

log = logging.getLogger("tlsprobe.exporter.connections")

MIN_CONNECTIONS = 8
MIN_RECEIVER_SESSIONS = 2
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
    receiver_sessions: int = 0
    """The receiver's session cap (`receiver.max_sessions`, lowered to fit; 0: no receiver)."""
    receiver_lowered: bool = False


def connection_budget(
    configured: int, probe_concurrency: int, receiver_sessions: int = 0
) -> Budget:
    """The HTTP connection cap: `configured`, lowered to fit the process's descriptor limit
    after a reserve of two descriptors per concurrent probe, `RESERVED_BASE`, `ACCEPT_BURST`
    and the receiver's descriptors (`receiver_sessions` sessions, lowered first to leave the
    web port at least `MIN_CONNECTIONS`, never under `MIN_RECEIVER_SESSIONS`)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    reserved = RESERVED_BASE + ACCEPT_BURST + 2 * probe_concurrency
    sessions = receiver_sessions
    if receiver_sessions:
        room = limit - reserved - MIN_CONNECTIONS - receiver.descriptors(0)
        sessions = max(MIN_RECEIVER_SESSIONS, min(receiver_sessions, room))
        reserved += receiver.descriptors(sessions)
    fits = max(MIN_CONNECTIONS, limit - reserved)
    cap = min(configured, fits)
    return Budget(cap, limit, reserved, cap < configured, sessions, sessions < receiver_sessions)


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

    def samples(self) -> Iterator[Sample]:
        """The guard's numbers, read at scrape time (the exporter registry collects them)."""
        yield "tlsprobe_http_connections", (), float(len(self._open))
        yield "tlsprobe_http_connection_limit", (), float(self.limit)
        for reason, count in list(self.closed.items()):
            yield "tlsprobe_http_connections_closed", (reason,), float(count)

    def factory(
        self, server: web.Server, tls: ssl.SSLContext | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for `loop.create_server` (without `ssl=`): aiohttp's handler,
        guarded, and TLS started on the connection once it is admitted when `tls` is given."""
        return lambda: _Guarded(server(), self, tls)

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

    async def end_handshakes(self) -> None:
        """Abort the connections still in their TLS handshake (aiohttp does not know them yet,
        so its shutdown would leave them to the handshake timeout) and wait until they end."""
        pending = [(c, task) for c in self._open if (task := c.handshake) is not None]
        for connection, _ in pending:
            connection.abort()
        await asyncio.gather(*(task for _, task in pending), return_exceptions=True)

    def header_expired(self, connection: _Guarded) -> None:
        self.closed[Closed.HEADER_TIMEOUT] += 1
        self.forget(connection)
        connection.abort()


class _Guarded(asyncio.Protocol):
    """aiohttp's RequestHandler behind a doorman: the transport talks to this protocol, which
    passes everything on and watches when a complete request arrives. With `tls`, the TCP
    connection is admitted first and TLS started on it afterwards; this protocol then sits
    behind the TLS transport, and the handler meets the connection once the handshake is done."""

    def __init__(
        self, handler: RequestHandler, guard: ConnectionGuard, tls: ssl.SSLContext | None = None
    ) -> None:
        self._handler = handler
        self._guard = guard
        self._tls = tls
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._raw_early: list[bytes] | None = None
        """TLS bytes read before TLS started on the connection (uvloop), for the TLS protocol."""
        self._early: list[bytes] | None = None
        """Request bytes that came with the end of the handshake, before the handler was told."""
        self._handshake: asyncio.Task[None] | None = None
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
        if self._tls is None:
            self._handler.connection_made(transport)
            return
        # TLS is started in the next turn: uvloop starts reading a new connection only after
        # connection_made returns and ignores a pause_reading() made in it (asyncio honours
        # it). Whatever arrives before then (the ClientHello, or its first part) is kept and
        # handed to the TLS protocol in order (`_feed`).
        self._transport.pause_reading()
        self._raw_early = []
        asyncio.get_running_loop().call_soon(self._start_tls, self._transport, self._tls)

    def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        if raw.is_closing():  # evicted or out of time before it started
            return
        loop = asyncio.get_running_loop()
        starting = loop.start_tls(
            raw, self, context, server_side=True, ssl_handshake_timeout=self._guard.header_timeout
        )
        # The synchronous part of start_tls runs now (it pauses reading, puts the TLS protocol
        # on the transport and schedules that protocol's connection_made), so the early bytes
        # can follow in the same turn, before anything else is read.
        try:
            awaited = starting.send(None)
        except Exception as exc:  # a verdict on this connection only
            log.debug("TLS on the web port did not start: %s", exc)
            self._gone(raw)
            return
        self._early = []
        early, self._raw_early = self._raw_early or [], None
        if early:
            loop.call_soon(_feed, raw, b"".join(early))
        self._handshake = loop.create_task(self._handshaken(raw, starting, awaited))

    async def _handshaken(
        self, raw: asyncio.Transport, starting: Coroutine[Any, Any, Any], awaited: Any
    ) -> None:
        try:
            secured = await _finish(starting, awaited)
        except asyncio.CancelledError:
            self._gone(raw)
            raise
        except Exception as exc:  # refused, reset, evicted, out of time: all the same here
            log.debug("TLS handshake on the web port ended: %s", exc)
            self._gone(raw)
            return
        if secured is None or secured.is_closing():
            self._gone(raw)
            return
        self._transport = secured
        self._handler.connection_made(secured)
        early, self._early = self._early or [], None
        for data in early:
            self.data_received(data)

    def _gone(self, raw: asyncio.Transport) -> None:
        self._disarm()
        self._guard.forget(self)
        raw.abort()

    @property
    def handshake(self) -> asyncio.Task[None] | None:
        """The TLS handshake in progress, if any."""
        task = self._handshake
        return task if task is not None and not task.done() else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.forget(self)
        if self._handler.transport is not None:
            self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._raw_early is not None:
            # Bytes of the TLS handshake read before TLS started (uvloop): bounded, a
            # ClientHello is a few kilobytes and the client waits for the server's answer.
            if sum(map(len, self._raw_early)) + len(data) > _EARLY_LIMIT:
                self.abort()
            self._raw_early.append(data)
            return
        if self._early is not None:
            # TLS delivers the first request bytes in the turn the handshake ends, before
            # `_handshaken` resumes; the request line and headers are bounded by the deadline.
            self._early.append(data)
            return
        # aiohttp counts complete request heads in _request_count (no public counter).
        before = self._handler._request_count
        self._handler.data_received(data)
        if self._handler._request_count > before:
            self._disarm()
        elif self._deadline is None:
            self._arm()  # the first bytes of the next request after an idle spell

    def eof_received(self) -> None:
        if self._handler.transport is not None:  # else the handshake never finished: close
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


_EARLY_LIMIT = 65536
"""Bytes a client may send before TLS started on its connection: more than any ClientHello."""


async def _finish(starting: Coroutine[Any, Any, Any], awaited: Any) -> Any:
    """Drive a coroutine whose first step has run (`starting.send(None)` gave `awaited`) to its
    end, as a task would: wait for what it waits on, resume it, until it returns. Cancelling
    the caller throws the cancellation into the coroutine, so it cleans up as it would."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((awaited,))
        except asyncio.CancelledError as cancelled:
            try:
                awaited = starting.throw(cancelled)
            except StopIteration as done:
                return done.value
            continue
        try:
            awaited = starting.send(None)
        except StopIteration as done:
            return done.value


def _feed(raw: asyncio.Transport, data: bytes) -> None:
    """Hand bytes read before TLS started to the TLS protocol now on `raw`, as the transport
    would have (asyncio's and uvloop's TLS protocols are buffered protocols)."""
    if raw.is_closing():
        return
    # Duck-typed: uvloop's TLS protocol has the buffered protocol's methods without deriving
    # from asyncio.BufferedProtocol.
    protocol: Any = raw.get_protocol()
    if not hasattr(protocol, "get_buffer"):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


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
        # No ssl= here: the guard admits the TCP connection, then starts TLS on it.
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server, self._ssl_context),
            self._host,
            self._port,
            backlog=self._backlog,
        )

    async def stop(self) -> None:
        await super().stop()
        await self._guard.end_handshakes()

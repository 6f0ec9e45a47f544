"""The only module with sockets: connect, drive the SMTP dialogue, start TLS, capture the chain.

One overall deadline bounds the whole exchange (resolution, connect, every read, the handshake),
so a silent or drip-feeding server ends in `timeout` on time. Reads go through a small protocol
whose buffer is bounded (reading pauses when it fills) and the SMTP parser bounds lines and
replies. Low-level exceptions (OSError, ssl.SSLError, TimeoutError) are translated to `Reason`
tokens here, once. The handshake never verifies: broken chains must be captured, not refused.

A server may still fail the handshake itself after sending its certificate; Python hands out
the chain only after a completed handshake, so the context's message callback keeps each
probe's Certificate message (in a context variable set per probe) and `certmsg` reads the
chain out of it for such failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tlsprobe.model import Capture, Endpoint, Mode, Phase, ProbeError, Reason, TlsInfo
from tlsprobe.probe import certmsg, names, smtp

_READ_CHUNK = 65536
QUIT_GRACE = 0.5
"""Seconds to wait for the answer to QUIT before closing."""
_BUFFER_LIMIT = 256 * 1024
_UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}
)


@functools.cache
def default_ehlo_name() -> str:
    """This machine's FQDN, or a literal every server accepts. Looked up once per process."""
    try:
        name = socket.getfqdn()
    except OSError:
        name = ""
    if "." not in name or name.startswith("localhost"):
        return "tlsprobe.localdomain"
    return name


def client_context() -> ssl.SSLContext:
    """A TLS client context that accepts anything, so that anything can be reported.

    Security level 0 and TLS 1.0 as the floor let the handshake complete with 1024-bit keys,
    SHA-1 signatures and TLS 1.0-only servers; anonymous suites stay off, because a server must
    show a certificate for there to be anything to judge.
    """
    return _CONTEXT


def _make_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers("ALL:!aNULL:!eNULL:@SECLEVEL=0")
    # The C-level attribute, not ssl.py's property: that wrapper converts three enums on every
    # TLS record; this callback costs one call and two integer comparisons per message.
    raw = getattr(getattr(ssl, "_ssl", None), "_SSLContext", None)
    descriptor = getattr(raw, "_msg_callback", None)
    if descriptor is not None:
        descriptor.__set__(ctx, _on_tls_message)
    return ctx


_CERTIFICATE_MESSAGES: contextvars.ContextVar[list[tuple[int, bytes]] | None] = (
    contextvars.ContextVar("tlsprobe_certificate_messages", default=None)
)
_TLS_HANDSHAKE = 22


def _on_tls_message(  # noqa: PLR0917 - CPython passes these six positionally
    conn: object, direction: str, version: int, content_type: int, msg_type: int, data: bytes
) -> None:
    """OpenSSL's message callback: keep the server's Certificate message for this probe."""
    if content_type == _TLS_HANDSHAKE and msg_type == certmsg.CERTIFICATE and direction == "read":
        kept = _CERTIFICATE_MESSAGES.get()
        if kept is not None and len(kept) < 2:
            kept.append((version, bytes(data)))


_CONTEXT = _make_context()


def unverified_chain_der(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The chain exactly as the peer sent it, leaf first, as DER.

    Python 3.13 made `get_unverified_chain()` public and returns DER bytes; 3.11 and 3.12 have
    the same call on the internal `_sslobj`, returning certificate objects.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = ssl_object._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    chain = getter() or []
    return tuple(_to_der(item) for item in chain)


def _to_der(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return bytes(item.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]


class _Pipe(asyncio.Protocol):
    """Bounded receive buffer with an awaitable read; pauses the transport when full."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _BUFFER_LIMIT and isinstance(self.transport, asyncio.ReadTransport):
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def read(self) -> bytes:
        """Up to one chunk of received bytes; b"" at end of stream."""
        while not self._buffer and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = bytes(self._buffer[:_READ_CHUNK])
        del self._buffer[:_READ_CHUNK]
        if self._paused and len(self._buffer) < _BUFFER_LIMIT:
            self._paused = False
            if isinstance(self.transport, asyncio.ReadTransport):
                self.transport.resume_reading()
        return data


@dataclass
class _Recorder:
    """Mutable progress of one probe, kept so that a timeout still reports what was seen."""

    endpoint: Endpoint
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)
    address: str | None = None
    chain: tuple[bytes, ...] = ()
    tls: TlsInfo | None = None
    starttls_offered: bool | None = None
    client: smtp.SmtpClient | None = None
    _mark: float = 0.0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def capture(self, error: ProbeError | None) -> Capture:
        self.phases[Phase.TOTAL] = time.perf_counter() - self.started
        transcript = self.client.transcript if self.client else ()
        if self.client is not None and self.starttls_offered is None:
            self.starttls_offered = self.client.starttls_offered
        if self.chain and error is not None and self.tls is not None:
            # The chain is in hand; a failure after the handshake (post-TLS EHLO, QUIT) does not
            # change what the certificate is. It stays in the transcript.
            transcript = (*transcript, f"!! after handshake: {error.kind}: {error.message}")
            error = None
        return Capture(
            address=self.address,
            chain_der=self.chain,
            tls=self.tls,
            error=error,
            starttls_offered=self.starttls_offered,
            phases=MappingProxyType(dict(self.phases)),
            transcript=tuple(transcript),
        )


async def capture(endpoint: Endpoint, *, timeout: float) -> Capture:
    """Connect, speak SMTP up to TLS, capture the chain. Never raises for network trouble."""
    rec = _Recorder(endpoint)
    # Set before the connection exists: the transport's callbacks run in a copy of this
    # task's context, so the message callback finds this probe's list and no other.
    kept: list[tuple[int, bytes]] = []
    token = _CERTIFICATE_MESSAGES.set(kept)
    try:
        return await _capture(rec, timeout, kept)
    finally:
        _CERTIFICATE_MESSAGES.reset(token)


async def _capture(rec: _Recorder, timeout: float, kept: list[tuple[int, bytes]]) -> Capture:
    try:
        async with asyncio.timeout(timeout):
            try:
                await _run(rec)
            except BaseException:
                _chain_sent_before_failure(rec, kept)
                raise
    except TimeoutError:
        return rec.capture(_timeout(rec, timeout))
    except _Failure as failure:
        return rec.capture(failure.error)
    except ssl.SSLError as exc:
        return rec.capture(ProbeError(Reason.TLS_HANDSHAKE, _ssl_message(exc)))
    except ConnectionRefusedError:
        return rec.capture(ProbeError(Reason.REFUSED, f"connection refused by {_addr(rec)}"))
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        kind = Reason.TLS_HANDSHAKE if _in_handshake(rec) else Reason.PROTOCOL
        return rec.capture(ProbeError(kind, f"connection reset ({_where(rec)}): {exc}"))
    except OSError as exc:
        return rec.capture(_os_error(exc, rec))
    return rec.capture(None)


class _Failure(Exception):
    def __init__(self, kind: Reason, message: str) -> None:
        super().__init__(message)
        self.error = ProbeError(kind, message)


async def _run(rec: _Recorder) -> None:
    endpoint = rec.endpoint
    loop = asyncio.get_running_loop()
    with rec.phase(Phase.CONNECT):
        transport, pipe = await _connect(rec)
    try:
        if endpoint.mode is Mode.IMPLICIT:
            transport = await _handshake(loop, transport, pipe, rec)
            rec.client = smtp.SmtpClient(endpoint.ehlo_name, starttls=False)
        else:
            rec.client = smtp.SmtpClient(endpoint.ehlo_name, starttls=True)
        transport = await _dialogue(loop, transport, pipe, rec)
    finally:
        # Abort, never a graceful TLS close: that waits up to 30 s for the peer's close_notify,
        # which a hostile (or merely slow) server never sends, and the socket would outlive
        # the probe's deadline. The server has had its QUIT.
        transport.abort()


async def _connect(rec: _Recorder) -> tuple[asyncio.Transport, _Pipe]:
    endpoint = rec.endpoint
    loop = asyncio.get_running_loop()
    addresses = [endpoint.address] if endpoint.address else await _resolve(endpoint)
    last: OSError | None = None
    for address in addresses:
        rec.address = address
        try:
            transport, pipe = await loop.create_connection(_Pipe, address, endpoint.port)
        except OSError as exc:
            last = exc
            continue
        return transport, pipe
    assert last is not None
    raise last


async def _resolve(endpoint: Endpoint) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _Failure(Reason.DNS, f"cannot resolve {endpoint.host}: {exc.strerror}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise _Failure(Reason.DNS, f"{endpoint.host} has no address")
    return addresses


async def _dialogue(
    loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, pipe: _Pipe, rec: _Recorder
) -> asyncio.Transport:
    client = rec.client
    assert client is not None
    phase_start = time.perf_counter()
    phase = client.phase
    while True:
        event = client.next_event()
        if client.phase != phase:
            # Attribute elapsed time to the phase that just ended (banner, ehlo, starttls, ...).
            now = time.perf_counter()
            rec.phases[phase] = rec.phases.get(phase, 0.0) + now - phase_start
            phase, phase_start = client.phase, now
        if isinstance(event, smtp.NeedData):
            client.receive_data(await pipe.read())
        elif isinstance(event, smtp.Send):
            transport.write(event.data)
        elif isinstance(event, smtp.StartTls):
            rec.starttls_offered = True
            if pipe.pending:
                raise _Failure(
                    Reason.PROTOCOL,
                    "server sent data after '220' to STARTTLS before the handshake "
                    "(response injection); refusing to start TLS",
                )
            transport = await _handshake(loop, transport, pipe, rec)
            client.tls_started()
            phase, phase_start = client.phase, time.perf_counter()
        elif isinstance(event, smtp.Done):
            await _courtesy_read(pipe)
            return transport
        else:
            raise _Failure(event.reason, event.message)


async def _courtesy_read(pipe: _Pipe) -> None:
    """Give the server a moment to answer QUIT, so it logs a clean goodbye, not a lost
    connection. Bounded by QUIT_GRACE and by the probe's own deadline; the answer is unread."""
    with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
        async with asyncio.timeout(QUIT_GRACE):
            await pipe.read()


async def _handshake(
    loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, pipe: _Pipe, rec: _Recorder
) -> asyncio.Transport:
    endpoint = rec.endpoint
    rec.phases.setdefault(Phase.HANDSHAKE, 0.0)
    with rec.phase(Phase.HANDSHAKE):
        tls_transport = await loop.start_tls(
            transport,
            pipe,
            _CONTEXT,
            server_hostname=endpoint.sni or None,
            ssl_handshake_timeout=None,
        )
    if tls_transport is None:
        raise _Failure(Reason.TLS_HANDSHAKE, "connection closed during the TLS handshake")
    ssl_object = tls_transport.get_extra_info("ssl_object")
    cipher = tls_transport.get_extra_info("cipher")
    rec.chain = unverified_chain_der(ssl_object)
    rec.tls = TlsInfo(version=ssl_object.version() or "unknown", cipher=cipher[0] if cipher else "")
    if not rec.chain:
        raise _Failure(Reason.TLS_HANDSHAKE, "server sent no certificate")
    return tls_transport


def _in_handshake(rec: _Recorder) -> bool:
    return Phase.HANDSHAKE in rec.phases and rec.tls is None


def _chain_sent_before_failure(rec: _Recorder, kept: list[tuple[int, bytes]]) -> None:
    """A handshake that failed after the server's Certificate message: keep what it sent."""
    if rec.chain or not kept or not _in_handshake(rec):
        return
    version, message = kept[-1]
    rec.chain = certmsg.certificates(version, message)


def _timeout(rec: _Recorder, timeout: float) -> ProbeError:
    message = f"no answer within {timeout:g} s ({_where(rec)})"
    client = rec.client
    silent = client is not None and client.phase is smtp.State.BANNER and not client.transcript
    if silent and rec.endpoint.mode is Mode.STARTTLS:
        # An implicit-TLS server (465, or 587/2465 set up that way) waits for a ClientHello
        # exactly as a STARTTLS client waits for a banner: nothing ever arrives.
        message += (
            "; a server that stays silent instead of greeting may expect implicit TLS"
            " (target `mode: implicit`, or `tlsprobe check --mode implicit`)"
        )
    return ProbeError(Reason.TIMEOUT, message)


def _where(rec: _Recorder) -> str:
    if rec.address is None and not rec.endpoint.address:
        return "resolving"
    if Phase.CONNECT not in rec.phases:
        return "connecting"
    if _in_handshake(rec):
        return "during TLS handshake"
    if rec.client is None:
        return "before SMTP"
    return f"waiting in phase {rec.client.phase}"


def _addr(rec: _Recorder) -> str:
    return names.host_port(rec.address or rec.endpoint.host, rec.endpoint.port)


def _os_error(exc: OSError, rec: _Recorder) -> ProbeError:
    if isinstance(exc, socket.gaierror):
        return ProbeError(Reason.DNS, f"cannot resolve {rec.endpoint.host}: {exc.strerror}")
    if exc.errno in _UNREACHABLE_ERRNOS:
        return ProbeError(Reason.UNREACHABLE, f"{_addr(rec)} unreachable: {exc.strerror}")
    if exc.errno == errno.ECONNREFUSED:
        return ProbeError(Reason.REFUSED, f"connection refused by {_addr(rec)}")
    if _in_handshake(rec):
        return ProbeError(Reason.TLS_HANDSHAKE, f"TLS handshake failed: {exc}")
    if Phase.CONNECT not in rec.phases or (rec.client is None and rec.tls is None):
        return ProbeError(Reason.UNREACHABLE, f"{_addr(rec)}: {exc.strerror or exc}")
    return ProbeError(Reason.PROTOCOL, f"{_where(rec)}: {exc.strerror or exc}")


def _ssl_message(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    return f"TLS handshake failed: {reason} ({exc.strerror or exc})"

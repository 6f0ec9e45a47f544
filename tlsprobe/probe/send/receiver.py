"""The receiver's transport: the only module with its sockets and TLS. Captures client chains.

An asyncio SMTP listener drives `smtpserver.SmtpServer` and, at STARTTLS, runs a TLS server
handshake that *requests* a client certificate and accepts whatever arrives: none, self-signed,
expired, from an unknown root, for the wrong name. Python's `ssl` module cannot do that (a
server context either does not ask, or aborts the handshake on a certificate it cannot verify,
and then hands over nothing), so TLS here is pyOpenSSL's in memory-BIO mode with a verify
callback that accepts everything; the chain is judged afterwards by `sender.judge_session`.

Bounds: one deadline per session, caps on concurrent sessions in all and per peer address and
a per-peer rate (answered with `421` and a close; at most `REFUSING` refusals at once, the
rest closed unanswered), slots that prefer configured senders (`known_peer`: a newcomer of
theirs takes the slot of the idlest unknown peer's session) and give way when idle
(`idle_eviction` without a reply: silent or dripping sessions), so the receiver's descriptors
are bounded (`descriptors`, which the exporter's budget reserves), the SMTP server's line,
message, error and command limits, a command rate per session (a token bucket: past it the
session's next reply waits), and reads in bounded chunks from a bounded stream buffer. Every
reply yields to the event loop, which the probes share: a buffer full of pipelined commands is
answered one loop turn per command.
Low-level errors (OSError, OpenSSL errors, timeouts) become a `ProbeError` with a `Reason`
here, once. Nothing a client sends is stored beyond the `Session` summary (the canary token,
sizes, counters, a clipped transcript).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from tlsprobe.model import ProbeError, Reason, TlsInfo
from tlsprobe.probe import files
from tlsprobe.probe.send.sender import Session
from tlsprobe.probe.smtp import server as smtpserver
from tlsprobe.probe.smtp.client import Done, Failed, NeedData, Send, StartTls
from tlsprobe.probe.transport import certmsg
from tlsprobe.probe.transport.sockconn import peer_chain_der

log = logging.getLogger("tlsprobe.receiver")

_CHUNK = 16384
_STREAM_LIMIT = 65536
_CLOSE_GRACE = 1.0
"""Seconds to let a final reply drain before the socket is aborted."""
_PEERS_REMEMBERED = 4096
"""Per-peer rate windows kept; the oldest is forgotten first (bounded memory)."""
COMMAND_BURST = 20
"""Replies a session gets at once before `commands_per_second` paces it (a canary needs 8)."""
LISTEN_BACKLOG = 16
REFUSING = 16
"""Connections being answered `421` at once; past it a connection is closed without a word,
so a connection flood cannot pile up descriptors waiting for their refusal to drain."""
ACCEPT_BURST = LISTEN_BACKLOG + REFUSING
"""Descriptors the receiver may hold beyond its sessions: a listen queue's worth accepted in
one wake-up (asyncio accepts up to the backlog at once) and the refusals under way."""


def descriptors(max_sessions: int) -> int:
    """File descriptors the receiver holds at most: the exporter's budget reserves them."""
    return max_sessions + ACCEPT_BURST


PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@dataclass(frozen=True, slots=True)
class ReceiverLimits:
    session_timeout: float = 60.0
    """One deadline for a whole session: greeting to close, handshake included."""
    max_sessions: int = 20
    max_sessions_per_peer: int = 5
    """Sessions one address may hold at once (a silent or dripping flood from one address
    held all 20 slots)."""
    per_peer_per_minute: int = 30
    idle_eviction: float = 10.0
    """Seconds without a reply (no whole command: silent or dripping byte by byte) after which
    a session gives its slot to a newcomer when the receiver is full. A configured sender's
    newcomer takes the idlest unknown peer's slot at once."""
    commands_per_second: float = 10.0
    """Replies one session gets per second, after a burst of `COMMAND_BURST`: a session that
    pipelines faster is read more slowly (its commands wait), so floods cost little CPU."""
    smtp: smtpserver.Limits = field(default_factory=smtpserver.Limits)


AcceptRecipient = Callable[[str, str], bool]
"""(peer address, recipient) -> accept? The receiver relays nothing: refused gets 550."""
KnownPeer = Callable[[str], bool]
"""peer address -> is it a configured sender? Known peers' sessions are preferred."""
OnSession = Callable[[Session], None]
OnMessage = Callable[[str, smtpserver.Message], None]


class ReceiverTlsError(ValueError):
    """The receiver's own certificate or key cannot be loaded; `key_file` says whether the key
    (not the certificate) is to blame."""

    def __init__(self, message: str, *, key_file: bool = False) -> None:
        super().__init__(message)
        self.key_file = key_file


Identity = tuple[list[x509.Certificate], PrivateKey]
"""The receiver's chain (leaf first) and the leaf's private key."""


def load_identity(certfile: str, keyfile: str | None = None) -> Identity:
    """The chain in `certfile` and the key in `keyfile` (else in `certfile` too), each read
    through the bounded regular-file reader; any problem a ReceiverTlsError."""
    try:
        chain = x509.load_pem_x509_certificates(files.read(certfile, files.MAX_PEM_BYTES))
    except files.FileError as exc:
        raise ReceiverTlsError(exc.message) from None
    except ValueError:
        raise ReceiverTlsError("no PEM certificate could be read") from None
    try:
        key = serialization.load_pem_private_key(
            files.read(keyfile or certfile, files.MAX_PEM_BYTES), password=None
        )
    except files.FileError as exc:
        raise ReceiverTlsError(exc.message, key_file=keyfile is not None) from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ReceiverTlsError(
            "no unencrypted PEM private key could be read", key_file=keyfile is not None
        ) from None
    if not isinstance(key, _KEY_TYPES):
        raise ReceiverTlsError("the key cannot sign for TLS", key_file=keyfile is not None)
    if key.public_key() != chain[0].public_key():
        raise ReceiverTlsError(
            "the key does not match the first certificate", key_file=keyfile is not None
        )
    return chain, key


def tls_context(
    certfile: str | None = None, keyfile: str | None = None, *, hostname: str = "localhost"
) -> SSL.Context:
    """A server context that asks every client for a certificate and accepts any.

    Without files, the receiver presents a fresh self-signed certificate: the relay's side of
    the canary route (`smtp_tls_security_level = encrypt`) encrypts without verifying it.
    Security level 0 and TLS 1.0 as the floor let weak and old clients finish the handshake, so
    their certificate (and the TLS version) is reported, not lost.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_cipher_list(b"ALL:!aNULL:!eNULL:@SECLEVEL=0")
    if certfile:
        chain, key = load_identity(certfile, keyfile)
        try:
            ctx.use_certificate(chain[0])
            for cert in chain[1:]:
                ctx.add_extra_chain_cert(cert)
            ctx.use_privatekey(key)
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise ReceiverTlsError("OpenSSL cannot use the certificate and key") from exc
    else:
        cert, key = _self_signed(hostname)
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
    # No resumption: a resumed session carries no Certificate message, so nothing to judge;
    # and a session ticket holds the client's certificate, which over about 65,100 bytes
    # does not fit the ticket's 16-bit length: OpenSSL failed such handshakes as "internal
    # error" after the certificate had arrived.
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return ctx


def _accept_any(*_: object) -> bool:
    # The chain is judged after the handshake; here every certificate (or none) is welcome.
    return True


def _self_signed(hostname: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class Receiver:
    """An SMTP listener whose sessions end as `Session` values handed to `on_session`."""

    def __init__(
        self,
        *,
        context: SSL.Context,
        hostname: str,
        accept_recipient: AcceptRecipient,
        on_session: OnSession,
        on_message: OnMessage | None = None,
        limits: ReceiverLimits | None = None,
        known_peer: KnownPeer | None = None,
    ) -> None:
        """`known_peer` tells configured senders from others (None: every peer is known)."""
        self._context = context
        self._hostname = hostname
        self._accept = accept_recipient
        self._on_session = on_session
        self._on_message = on_message
        self._known = known_peer or (lambda _peer: True)
        self.limits = limits or ReceiverLimits()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: dict[_Session, None] = {}
        """Sessions holding a slot, oldest first."""
        self._by_peer: Counter[str] = Counter()
        self._refusing = 0
        self._peers: OrderedDict[str, deque[float]] = OrderedDict()
        self.refused_sessions = 0
        """Connections answered with 421 (session caps or per-peer rate) or closed unanswered."""
        self.evicted_sessions = 0
        """Sessions closed to give their slot to a newcomer (idle ones, unknown peers')."""

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound (address, port) (port 0 picks a free one)."""
        self._server = await asyncio.start_server(
            self._connected, host, port, limit=_STREAM_LIMIT, backlog=LISTEN_BACKLOG
        )
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels a session. Ended as cancelled, the task would make asyncio's
            # stream callback (Python 3.11) log "Exception in callback" with a traceback.
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        address = str(peer[0])
        if not self._slot_for(address):
            await self._refuse(writer)
            return
        session = _Session(self, address, int(local[1]), reader, writer)
        self._sessions[session] = None
        self._by_peer[address] += 1
        try:
            ended = await session.run()
        finally:
            self._sessions.pop(session, None)
            self._by_peer[address] -= 1
            if not self._by_peer[address]:
                del self._by_peer[address]
        self._on_session(ended)

    def _slot_for(self, peer: str) -> bool:
        """Admit `peer`: within its rate and its share, and a slot free or made free."""
        limits = self.limits
        if self._by_peer[peer] >= limits.max_sessions_per_peer or not self._admit(peer):
            return False
        if len(self._sessions) < limits.max_sessions:
            return True
        victim = self._victim(self._known(peer))
        if victim is None:
            return False
        del self._sessions[victim]
        idle = time.monotonic() - victim.replied_at
        victim.evict(
            f"closed after {idle:.0f} s without a command: the receiver was full"
            if idle >= limits.idle_eviction
            else "closed to give its slot to a configured sender: the receiver was full"
        )
        self.evicted_sessions += 1
        return True

    def _victim(self, known: bool) -> _Session | None:
        """The idlest session that may give way: one idle past `idle_eviction`, or for a known
        newcomer any unknown peer's."""
        now = time.monotonic()
        limit = self.limits.idle_eviction
        candidates = [
            s for s in self._sessions if now - s.replied_at >= limit or (known and not s.known)
        ]
        return min(candidates, key=lambda s: s.replied_at, default=None)

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        self.refused_sessions += 1
        if self._refusing >= REFUSING:
            return  # closed unanswered: refusals must not pile up descriptors
        self._refusing += 1
        try:
            writer.write(b"421 4.7.0 Too many sessions, try again later\r\n")
            await _drain(writer)
        finally:
            self._refusing -= 1

    def _admit(self, peer: str) -> bool:
        """Per-peer sliding window of one minute; bounded number of peers remembered."""
        now = time.monotonic()
        window = self._peers.pop(peer, None) or deque()
        while window and now - window[0] > 60.0:
            window.popleft()
        self._peers[peer] = window
        if len(self._peers) > _PEERS_REMEMBERED:
            self._peers.popitem(last=False)
        if len(window) >= self.limits.per_peer_per_minute:
            return False
        window.append(now)
        return True


class _Tls:
    """A pyOpenSSL server connection in memory-BIO mode over an asyncio stream."""

    def __init__(
        self, context: SSL.Context, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._reader = reader
        self._writer = writer

    async def handshake(self) -> None:
        while True:
            try:
                self._conn.do_handshake()
            except SSL.WantReadError:
                self._flush()
                if not await self._pull():
                    raise ConnectionAbortedError("client closed the connection") from None
                continue
            self._flush()
            return

    def info(self) -> tuple[TlsInfo, tuple[bytes, ...], str | None]:
        """Negotiated version and cipher, the client's chain as sent (DER), and the SNI."""
        conn = self._conn
        tls = TlsInfo(conn.get_protocol_version_name(), conn.get_cipher_name() or "")
        sni = conn.get_servername()
        return tls, peer_chain_der(conn), sni.decode("ascii", "replace") if sni else None

    async def read(self) -> bytes:
        while True:
            try:
                return self._conn.recv(_CHUNK)
            except SSL.WantReadError:
                self._flush()
                if not await self._pull():
                    return b""
            except SSL.ZeroReturnError:
                return b""

    def write(self, data: bytes) -> None:
        self._conn.sendall(data)
        self._flush()

    def _flush(self) -> None:
        while True:
            try:
                data = self._conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                return
            if not data:
                return
            self._writer.write(data)

    async def _pull(self) -> bool:
        data = await self._reader.read(_CHUNK)
        if not data:
            self._conn.bio_shutdown()
            return False
        self._conn.bio_write(data)
        return True


class _Session:
    """One inbound session: drive the SMTP state machine, hand TLS to `_Tls` at STARTTLS."""

    def __init__(
        self,
        receiver: Receiver,
        peer: str,
        local_port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._receiver = receiver
        self._peer = peer
        self._local_port = local_port
        self._reader = reader
        self._writer = writer
        self._smtp = smtpserver.SmtpServer(
            receiver._hostname,
            accept_recipient=lambda rcpt: receiver._accept(peer, rcpt),
            limits=receiver.limits.smtp,
        )
        self._tls: _Tls | None = None
        self._info: tuple[TlsInfo, tuple[bytes, ...], str | None] | None = None
        self._messages: list[smtpserver.Message] = []
        self._started = time.perf_counter()
        self._phases: dict[str, float] = {}
        self._tokens = float(COMMAND_BURST)
        self._paced_at = time.monotonic()
        self.replied_at = self._paced_at
        """When the last reply went out: how long the session has been idle."""
        self.known = receiver._known(peer)
        self._evicted: str | None = None

    def evict(self, why: str) -> None:
        """Close the session to free its slot; it ends as a session with the error `why`."""
        self._evicted = why
        self._writer.transport.abort()

    async def run(self) -> Session:
        started_at = time.time()
        timeout = self._receiver.limits.session_timeout
        error: ProbeError | None = None
        try:
            async with asyncio.timeout(timeout):
                error = await self._dialogue()
        except TimeoutError:
            error = ProbeError(
                Reason.TIMEOUT, f"session not finished within {timeout:g} s ({self._smtp.state})"
            )
            self._send_quietly(b"421 4.4.2 Timeout, closing connection\r\n")
        except SSL.Error as exc:
            error = ProbeError(Reason.TLS_HANDSHAKE, f"TLS failed: {_ssl_text(exc)}")
        except OSError as exc:
            error = ProbeError(Reason.PROTOCOL, f"connection failed: {exc.strerror or exc}")
        except Exception as exc:  # last resort: every session ends in a Session, recorded
            log.exception("receiver session failed", extra={"fields": {"peer": self._peer}})
            error = ProbeError(Reason.PROTOCOL, f"receiver error: {type(exc).__name__}")
        if self._evicted is not None:
            error = ProbeError(Reason.PROTOCOL, self._evicted)
        await _drain(self._writer)
        return self._summary(started_at, error)

    async def _dialogue(self) -> ProbeError | None:
        smtp = self._smtp
        while True:
            event = smtp.next_event()
            if isinstance(event, NeedData):
                smtp.receive_data(await self._read())
            elif isinstance(event, Send):
                self._write(event.data)
                await self._writer.drain()
                await self._pace()
            elif isinstance(event, smtpserver.MessageReceived):
                self._message(event.message)
            elif isinstance(event, StartTls):
                await self._start_tls()
            elif isinstance(event, Done):
                return None
            else:
                assert isinstance(event, Failed)
                return ProbeError(event.reason, event.message)

    async def _pace(self) -> None:
        """After each reply: yield to the loop's other work (the probes share it), and hold
        a session past its command rate (a token bucket) until its next command is due."""
        rate = self._receiver.limits.commands_per_second
        now = self.replied_at = time.monotonic()
        self._tokens = min(COMMAND_BURST, self._tokens + (now - self._paced_at) * rate)
        self._paced_at = now
        self._tokens -= 1.0
        await asyncio.sleep(-self._tokens / rate if self._tokens < 0 else 0)

    async def _start_tls(self) -> None:
        await _drain(self._writer)
        self._tls = _Tls(self._receiver._context, self._reader, self._writer)
        begin = time.perf_counter()
        await self._tls.handshake()
        self._phases["handshake"] = time.perf_counter() - begin
        self._info = self._tls.info()
        self._smtp.tls_started()

    async def _read(self) -> bytes:
        if self._tls is not None:
            return await self._tls.read()
        return await self._reader.read(_CHUNK)

    def _write(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls.write(data)
        else:
            self._writer.write(data)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError, SSL.Error):
            self._write(data)

    def _message(self, message: smtpserver.Message) -> None:
        received = dataclasses.replace(message, received_at=time.time())
        self._messages.append(received)
        if self._receiver._on_message is not None:
            self._receiver._on_message(self._peer, received)

    def _summary(self, started_at: float, error: ProbeError | None) -> Session:
        smtp = self._smtp
        tls, chain, sni = self._info if self._info else (None, (), None)
        if error is not None and self._tls is not None and self._info is None:
            # Failed inside the handshake: whatever the reason, it is the TLS that broke.
            error = ProbeError(Reason.TLS_HANDSHAKE, error.message)
        self._phases["total"] = time.perf_counter() - self._started
        return Session(
            peer=self._peer,
            local_port=self._local_port,
            started_at=started_at,
            helo=smtp.helo,
            tls=tls,
            chain_der=chain,
            sni=sni,
            error=error,
            messages=tuple(self._messages),
            auth_attempts=smtp.auth_attempts,
            refused_recipients=smtp.refused_recipients,
            discarded_plaintext=smtp.discarded_plaintext,
            plaintext_mail=smtp.plaintext_mail,
            phases=MappingProxyType(dict(self._phases)),
            transcript=smtp.transcript.lines(),
        )


async def _drain(writer: asyncio.StreamWriter) -> None:
    """Let queued bytes go out, bounded: a client that does not read must not hold us."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.drain()


def _ssl_text(exc: SSL.Error) -> str:
    items = exc.args[0] if exc.args else []
    parts = [certmsg.explain(str(item[-1])) for item in items if isinstance(item, tuple)]
    return ", ".join(parts) or exc.__class__.__name__

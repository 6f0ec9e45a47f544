"""The probe's connection: connect, drive the SMTP dialogue, start TLS, capture the chain.

One overall deadline bounds the whole exchange (resolution, connect, every read, the handshake),
so a silent or drip-feeding server ends in `timeout` on time. The socket itself is `sockconn`:
OpenSSL reads and writes it directly, reads are taken only when the SMTP client asks for them
(64 KiB at most each) and the SMTP parser bounds lines and replies. Low-level exceptions
(OSError, OpenSSL's SSL.Error, TimeoutError) are translated to `Reason` tokens here, once. The
handshake never verifies: broken chains must be captured, not refused.

A server may still fail the handshake itself after sending its certificate (it demands a client
certificate, say); OpenSSL keeps the chain it received in the session, and it is reported. When
OpenSSL aborts because it cannot parse a certificate it keeps none, and one more connection
with a tapped context (`certmsg`) reads the chain out of the server's Certificate message."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType

from OpenSSL import SSL

from tlsprobe.model import Capture, Endpoint, Mode, Phase, ProbeError, Reason, TlsInfo
from tlsprobe.probe import names
from tlsprobe.probe.smtp import client as smtp
from tlsprobe.probe.transport import certmsg
from tlsprobe.probe.transport.sockconn import SockConn

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


def client_context() -> SSL.Context:
    """A TLS client context that accepts anything, so that anything can be reported.

    Security level 0 and the lowest version the library has as the floor let the handshake
    complete with 1024-bit keys, SHA-1 signatures and TLS 1.0-only servers; anonymous suites
    stay off, because a server must show a certificate for there to be anything to judge.
    """
    return _CONTEXT


def _make_context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.set_min_proto_version(0)  # 0: the lowest the library supports
    ctx.set_max_proto_version(0)  # 0: the highest
    ctx.set_cipher_list(b"ALL:!aNULL:!eNULL:@SECLEVEL=0")
    _offer_groups(ctx)
    return ctx


_GROUPS = b"X25519:P-256:X448:P-521:P-384:ffdhe2048:ffdhe3072:ffdhe4096:ffdhe6144:ffdhe8192"
"""The groups OpenSSL 3.0 offers by default, X25519 first and the only key share sent. Newer
OpenSSL also sends an X25519MLKEM768 share, whose key generation was a quarter of a probe's
instructions; nothing tlsprobe judges depends on the key exchange, and a server that wants
another group asks for it (HelloRetryRequest)."""


def _offer_groups(ctx: SSL.Context) -> None:
    # pyOpenSSL has no public call for the group list; cryptography's binding, which pyOpenSSL
    # keeps as `SSL._lib`, has the function. Without it the library's own default stays.
    setter = getattr(getattr(SSL, "_lib", None), "SSL_CTX_set1_curves_list", None)
    if setter is not None:
        setter(ctx._context, _GROUPS)


_CONTEXT = _make_context()


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
    conn: SockConn | None = None
    context: SSL.Context = _CONTEXT
    unparsable: bool = False
    """OpenSSL aborted the handshake on a certificate it could not parse (an ASN.1 error)."""
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
    error = await _attempt(rec, timeout)
    if rec.unparsable and not rec.chain and error is not None:
        left = timeout - (time.perf_counter() - rec.started)
        rec.chain = await _chain_as_sent(dataclasses.replace(endpoint, address=rec.address), left)
        if rec.chain:
            error = ProbeError(error.kind, f"{error.message}: {_UNPARSABLE}")
    return rec.capture(error)


_UNPARSABLE = (
    "the server sent a certificate that cannot be parsed "
    "(the chain shown is read out of its TLS Certificate message)"
)


async def _attempt(rec: _Recorder, timeout: float) -> ProbeError | None:
    """One connection, within `timeout`; the failure, if any, as a verdict."""
    try:
        async with asyncio.timeout(timeout):
            try:
                await _run(rec)
            except BaseException:
                _chain_sent_before_failure(rec)
                raise
    except TimeoutError:
        return _timeout(rec, timeout)
    except _Failure as failure:
        return failure.error
    except SSL.Error as exc:
        rec.unparsable = _in_handshake(rec) and _asn1_error(exc)
        return ProbeError(Reason.TLS_HANDSHAKE, _ssl_message(exc))
    except ConnectionRefusedError:
        return ProbeError(Reason.REFUSED, f"connection refused by {_addr(rec)}")
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        kind = Reason.TLS_HANDSHAKE if _in_handshake(rec) else Reason.PROTOCOL
        return ProbeError(kind, f"connection reset ({_where(rec)}): {exc}")
    except OSError as exc:
        return _os_error(exc, rec)
    return None


async def _chain_as_sent(endpoint: Endpoint, timeout: float) -> tuple[bytes, ...]:
    """The chain out of the server's Certificate message, read on one more connection (rare:
    only after OpenSSL could not parse a certificate), within what is left of the deadline."""
    if timeout <= 0:
        return ()
    ctx = _make_context()
    kept = certmsg.tap(ctx)
    await _attempt(_Recorder(endpoint, context=ctx), timeout)
    return certmsg.certificates(*kept[-1]) if kept else ()


class _Failure(Exception):
    def __init__(self, kind: Reason, message: str) -> None:
        super().__init__(message)
        self.error = ProbeError(kind, message)


async def _run(rec: _Recorder) -> None:
    endpoint = rec.endpoint
    with rec.phase(Phase.CONNECT):
        conn = rec.conn = await _connect(rec)
    try:
        if endpoint.mode is Mode.IMPLICIT:
            await _handshake(conn, rec)
            rec.client = smtp.SmtpClient(endpoint.ehlo_name, starttls=False)
        else:
            rec.client = smtp.SmtpClient(endpoint.ehlo_name, starttls=True)
        await _dialogue(conn, rec)
    finally:
        # Never a graceful TLS close: that waits for the peer's close_notify, which a hostile
        # (or merely slow) server never sends. The server has had its QUIT.
        conn.close()


async def _connect(rec: _Recorder) -> SockConn:
    endpoint = rec.endpoint
    addresses = [endpoint.address] if endpoint.address else await _resolve(endpoint)
    last: OSError | None = None
    for address in addresses:
        rec.address = address
        try:
            return await SockConn.connect(address, endpoint.port)
        except OSError as exc:
            last = exc
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


async def _dialogue(conn: SockConn, rec: _Recorder) -> None:
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
            client.receive_data(await conn.recv())
        elif isinstance(event, smtp.Send):
            await conn.send(event.data)
        elif isinstance(event, smtp.StartTls):
            rec.starttls_offered = True
            if conn.has_unread():
                raise _Failure(
                    Reason.PROTOCOL,
                    "server sent data after '220' to STARTTLS before the handshake "
                    "(response injection); refusing to start TLS",
                )
            await _handshake(conn, rec)
            client.tls_started()
            phase, phase_start = client.phase, time.perf_counter()
        elif isinstance(event, smtp.Done):
            # QUIT is sent; its 221 is not awaited. Postfix logs the session as a clean one
            # ("disconnect ... quit=1") once it has read QUIT, and the wait cost every probe a
            # timer, a read and a TLS record.
            return
        else:
            raise _Failure(event.reason, event.message)


async def _handshake(conn: SockConn, rec: _Recorder) -> None:
    endpoint = rec.endpoint
    rec.phases.setdefault(Phase.HANDSHAKE, 0.0)
    with rec.phase(Phase.HANDSHAKE):
        await conn.start_tls(rec.context, _sni(endpoint))
    tls = conn.tls
    assert tls is not None
    rec.chain = conn.peer_chain_der()
    rec.tls = TlsInfo(
        version=tls.get_protocol_version_name() or "unknown", cipher=tls.get_cipher_name() or ""
    )
    if not rec.chain:
        raise _Failure(Reason.TLS_HANDSHAKE, "server sent no certificate")


def _in_handshake(rec: _Recorder) -> bool:
    return Phase.HANDSHAKE in rec.phases and rec.tls is None


def _sni(endpoint: Endpoint) -> str | None:
    return _sni_name(endpoint.sni) if endpoint.sni else None


@functools.lru_cache(maxsize=4096)
def _sni_name(name: str) -> str | None:
    """The name for SNI: none for an IP literal (RFC 6066 allows host names only)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def _chain_sent_before_failure(rec: _Recorder) -> None:
    """A handshake that failed after the server's Certificate message: keep what it sent."""
    if rec.chain or rec.conn is None or not _in_handshake(rec):
        return
    rec.chain = rec.conn.peer_chain_der()


def _timeout(rec: _Recorder, timeout: float) -> ProbeError:
    # The deadline may be what is left of a scrape's (1.49977 s of 1.5): three figures.
    message = f"no answer within {timeout:.3g} s ({_where(rec)})"
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


def _asn1_error(exc: SSL.Error) -> bool:
    """Whether OpenSSL's error stack holds an ASN.1 decoding error (a certificate it could not
    parse; OpenSSL names the library "asn1 encoding routines" and the SSL reason "ASN1 lib")."""
    entries = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return any("asn1" in " ".join(map(str, entry)).lower() for entry in entries)


def _ssl_message(exc: SSL.Error) -> str:
    """OpenSSL's reasons ("sslv3 alert handshake failure"), or what the socket said."""
    if isinstance(exc, SSL.SysCallError):
        code, text = (*exc.args, "", "")[:2]
        if code == -1:
            return "TLS handshake failed: connection closed during the TLS handshake"
        return f"TLS handshake failed: {text or exc}"
    reasons = [
        certmsg.explain(str(entry[2]))
        for entry in (exc.args[0] if exc.args else [])
        if len(entry) > 2
    ]
    return f"TLS handshake failed: {'; '.join(reasons) or type(exc).__name__}"

"""One connected non-blocking socket on the running event loop, with TLS started in place.

`loop.start_tls` wraps a transport in an SSL protocol: a second transport, flow control, a
handshake timer and callbacks per record, written for long-lived streams, which a probe (a
handful of records, then close) pays for in full. Here a probe owns its socket: reads are
`recv` calls made when the SMTP client asks for bytes and nothing is read that was not asked
for (the kernel's buffer is the only buffer, so a flooding server fills its own send queue,
not our memory); TLS is a pyOpenSSL `Connection` in memory-BIO mode, fed one `recv` (up to
READ_LIMIT bytes, a whole flight of records) at a time, its output sent in one `send`.

Why pyOpenSSL and not the `ssl` module: `ssl` uses the system's OpenSSL (3.0 on Debian 12),
whose key decoders made parsing the two certificates a server sends about 45 % of a whole
probe's instructions; pyOpenSSL runs on the OpenSSL that `cryptography` ships (3.5 or newer),
where a client handshake costs about a third less (benchmarks/README.md). The socket is
registered with the loop for reading once, after connecting, and the registration stays until
close (a wake-up with nobody waiting drops it until the next read), because registering anew
for every read costs the loop a poll handle and epoll calls each time. Works on asyncio's
default loop and on uvloop. Closing never sends close_notify (it would wait for the peer's).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

from OpenSSL import SSL, crypto

READ_LIMIT = 65536
"""Bytes one `recv` returns at most."""
_AGAIN = (BlockingIOError, InterruptedError)


def peer_chain_der(tls: SSL.Connection) -> tuple[bytes, ...]:
    """The certificates the peer of `tls` sent, leaf first, as DER, never through
    `cryptography` (which refuses certificates OpenSSL accepts: they are judged from these
    bytes by the lenient reader). The one path for both sides: the probe's servers and the
    receiver's clients. On a server, OpenSSL's peer chain leaves the client's leaf out (some
    versions keep it): it is put first unless it is there already."""
    chain = [
        crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in tls.get_peer_cert_chain() or ()
    ]
    leaf = tls.get_peer_certificate()
    if leaf is not None:
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf)
        if not chain or chain[0] != der:
            chain.insert(0, der)
    return tuple(chain)


class SockConn:
    """A connected socket, plain or (after `start_tls`) TLS; awaitable reads and writes."""

    __slots__ = ("_fd", "_loop", "_readable", "_sock", "_tls", "_waiter")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._tls: SSL.Connection | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._readable = False  # registered for reading with the loop
        self._watch()

    @classmethod
    async def connect(cls, address: str, port: int) -> SockConn:
        """A TCP connection to a numeric address (IPv4 or IPv6), no resolver involved."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            code = sock.connect_ex((address, port))
            if code == errno.EINPROGRESS:
                await _writable(loop, sock.fileno())
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
        except BaseException:
            sock.close()
            raise
        return cls(sock, loop)

    @property
    def tls(self) -> SSL.Connection | None:
        return self._tls

    def peer_chain_der(self) -> tuple[bytes, ...]:
        """The certificates the peer sent, leaf first, as DER; also after a handshake that
        failed once the server's Certificate message was in (OpenSSL keeps it in the session).
        DER comes from OpenSSL's copy of the bytes as received, so certificates `cryptography`
        refuses to load are kept exactly as served."""
        return peer_chain_der(self._tls) if self._tls is not None else ()

    def has_unread(self) -> bool:
        """Whether bytes wait in the kernel that nobody has asked for yet (plain socket)."""
        try:
            return bool(self._sock.recv(1, socket.MSG_PEEK))
        except OSError:
            return False  # nothing (EAGAIN), or a reset the next step reports where it happens

    async def recv(self) -> bytes:
        """Up to READ_LIMIT bytes; b"" when the peer closed (after TLS: with or without
        close_notify, as the plain socket would say)."""
        tls = self._tls
        if tls is None:
            return await self._recv_raw()
        while True:
            try:
                return tls.recv(READ_LIMIT)
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                return b""
            await self._flush()  # a key update may want an answer
            data = await self._recv_raw()
            if not data:
                return b""
            tls.bio_write(data)

    async def send(self, data: bytes) -> None:
        """Write all of `data`."""
        tls = self._tls
        if tls is None:
            await self._send_raw(data)
            return
        tls.sendall(data)
        await self._flush()

    async def start_tls(self, context: SSL.Context, server_hostname: str | None) -> None:
        """Complete a TLS handshake over the socket, as a client; SNI when a name is given.
        Returns with the client's last flight not yet sent (see the end)."""
        tls = SSL.Connection(context, None)
        if server_hostname:
            tls.set_tlsext_host_name(server_hostname.encode("idna"))
        tls.set_connect_state()
        self._tls = tls
        while True:
            try:
                tls.do_handshake()
                break
            except SSL.WantReadError:
                pass
            await self._flush()
            data = await self._recv_raw()
            if data:
                tls.bio_write(data)
            else:
                tls.bio_shutdown()
        # The client's last flight (TLS 1.3's Finished) stays in the BIO: the next `send`
        # writes it in one segment with the first request (EHLO), and a `recv` writes it
        # before it waits. One system call and one segment fewer per probe.

    def close(self) -> None:
        """Close the descriptor at once: no close_notify, no linger."""
        if self._readable:
            self._readable = False
            self._loop.remove_reader(self._fd)
        self._sock.close()

    async def _flush(self) -> None:
        """Send what OpenSSL has written. An empty BIO answers with an exception (costly in
        pyOpenSSL), so a read shorter than asked for ends it without asking again."""
        tls = self._tls
        assert tls is not None
        while True:
            try:
                pending = tls.bio_read(READ_LIMIT)
            except SSL.WantReadError:
                return
            await self._send_raw(pending)
            if len(pending) < READ_LIMIT:
                return

    async def _recv_raw(self) -> bytes:
        sock = self._sock
        while True:
            # Wait first: an answer is never there yet when we ask, and a failed recv costs a
            # system call.
            waiter = self._waiter = self._loop.create_future()
            if not self._readable:
                self._watch()
            try:
                await waiter
            finally:
                self._waiter = None
            try:
                return sock.recv(READ_LIMIT)
            except _AGAIN:
                continue

    async def _send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        sock = self._sock
        while view:
            try:
                sent = sock.send(view)
            except _AGAIN:
                await _writable(self._loop, self._fd)
                continue
            view = view[sent:]

    def _watch(self) -> None:
        self._loop.add_reader(self._fd, self._on_readable)
        self._readable = True

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            # Nobody reads now; a level-triggered registration would call us on every turn of
            # the loop until somebody does.
            self._readable = False
            self._loop.remove_reader(self._fd)
        elif not waiter.done():
            waiter.set_result(None)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

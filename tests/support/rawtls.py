"""An SMTP server whose TLS is written by hand: it sends whatever certificate bytes it is given.

Every real TLS library refuses to load a certificate it cannot parse, so a server that sends
one (truncated, not DER at all) has to be written by hand. After STARTTLS this server answers
the ClientHello with a TLS 1.2 ServerHello (ECDHE-RSA-AES128-GCM-SHA256, secure renegotiation)
and a Certificate message holding the given DER strings, reads what the client answers (its
alert) and hangs up: the handshake can never complete. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from types import TracebackType

TLS12 = b"\x03\x03"
_HANDSHAKE = 22
_ECDHE_RSA_AES128_GCM_SHA256 = b"\xc0\x2f"
_RENEGOTIATION_INFO = b"\xff\x01\x00\x01\x00"


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _u24(len(body)) + body


def server_flight(chain: Sequence[bytes]) -> bytes:
    """ServerHello and Certificate (RFC 5246 sections 7.4.1.3 and 7.4.2) in TLS records."""
    hello = (
        TLS12
        + os.urandom(32)
        + b"\x00"  # no session id
        + _ECDHE_RSA_AES128_GCM_SHA256
        + b"\x00"  # no compression
        + _u16(len(_RENEGOTIATION_INFO))
        + _RENEGOTIATION_INFO
    )
    entries = b"".join(_u24(len(der)) + der for der in chain)
    messages = _handshake(2, hello) + _handshake(11, _u24(len(entries)) + entries)
    records = b""
    for at in range(0, len(messages), 16384):
        part = messages[at : at + 16384]
        records += bytes([_HANDSHAKE]) + TLS12 + _u16(len(part)) + part
    return records


class RawCertificateServer:
    """`async with RawCertificateServer([der, ...]) as server:` then probe 127.0.0.1:server.port."""

    def __init__(self, chain: Sequence[bytes]) -> None:
        self.chain = list(chain)
        self.hellos = 0
        """ClientHellos answered."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> RawCertificateServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._sessions.values():
            writer.close()  # the session's pending read ends with EOF
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = writer
        task.add_done_callback(self._sessions.pop)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            writer.write(b"220 raw.contoso.test ESMTP\r\n")
            await reader.readline()  # EHLO
            writer.write(b"250-raw.contoso.test\r\n250 STARTTLS\r\n")
            await reader.readline()  # STARTTLS
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            header = await reader.readexactly(5)  # the ClientHello's record
            await reader.readexactly(int.from_bytes(header[3:5], "big"))
            self.hellos += 1
            writer.write(server_flight(self.chain))
            await writer.drain()
            # The client's alert comes at once; a client that could parse the chain waits
            # for the ServerKeyExchange that never comes, and the hang-up ends its handshake.
            async with asyncio.timeout(0.3):
                await reader.read(65536)
        writer.close()

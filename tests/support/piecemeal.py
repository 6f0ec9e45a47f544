"""An HTTPS client that sends its ClientHello in two pieces, a pause between them.

Over a real network a large ClientHello (post-quantum key shares make it over a kilobyte) can
arrive in two segments, and the first may be read before the server has started TLS on the
connection. The web server must hand both pieces to its TLS layer in order. Loopback only.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

READ = 65536


async def get_in_pieces(
    host: str, port: int, ca_file: Path, path: str, *, first: int = 64, pause: float = 0.05
) -> bytes:
    """GET `path` over TLS (server name `host`); the response once complete (by its
    Content-Length) or closed, or b"" when the server closes during the handshake."""
    context = ssl.create_default_context(cafile=str(ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        hello = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            flight = outgoing.read()
            if hello:
                writer.write(flight[:first])
                await writer.drain()
                await asyncio.sleep(pause)
                flight, hello = flight[first:], False
            writer.write(flight)
            await writer.drain()
            received = await reader.read(READ)
            if not received:
                return b""
            incoming.write(received)
        tls.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        writer.write(outgoing.read())  # the client's Finished, then the request
        await writer.drain()
        response = b""
        while True:
            try:
                chunk = tls.read(READ)
            except ssl.SSLWantReadError:
                chunk = b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return response
            if chunk:
                response += chunk
                if _complete(response):
                    return response  # the server waits for our close_notify: do not wait
                continue
            received = await reader.read(READ)
            if not received:
                return response
            incoming.write(received)
    finally:
        writer.close()


def _complete(response: bytes) -> bool:
    head, found, body = response.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False

"""Clients for the receiver's tests: a well-behaved sender (swaks --tls-cert style) and raw
sockets for hostile ones. Loopback only; every call is bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import ssl
from pathlib import Path

from tests.support.gates import Gate, unavailable
from tlsprobe.model import Check, ProbeResult

CANARY_RCPT = "canary@receiver.tlsprobe.test"


def client_context(certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the receiver's own certificate is self-signed
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def send_canary(
    port: int,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    token: str = "tok-1",
    rcpt: str = CANARY_RCPT,
    host: str = "127.0.0.1",
    helo: str = "relay.contoso.test",
) -> None:
    """EHLO, STARTTLS (presenting `certfile` if given), EHLO, one message with the token."""
    message = f"X-Tlsprobe-Canary: {token}\r\nSubject: canary\r\n\r\ncanary body\r\n"
    with smtplib.SMTP(host, port, local_hostname=helo, timeout=10) as client:
        client.starttls(context=client_context(certfile, keyfile))
        client.sendmail("probe@contoso.test", [rcpt], message)


async def raw_session(port: int, script: list[bytes], *, read_timeout: float = 5.0) -> bytes:
    """Send each chunk after reading what the server says; return everything it said."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    said = b""
    try:
        for chunk in [b"", *script]:
            if chunk:
                writer.write(chunk)
                await writer.drain()
            said += await _read_some(reader, read_timeout)
        said += await _read_some(reader, 0.3)
    finally:
        writer.close()
    return said


async def _read_some(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    except (TimeoutError, ConnectionError):
        return b""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_named(result: ProbeResult, name: str) -> Check:
    """The check `name` of a result, which the test expects to be there."""
    check = result.check(name)
    assert check is not None, f"no {name} check in {[c.name for c in result.checks]}"
    return check


def relay_from_env() -> tuple[str, int, Path]:
    """The send-side relay of .ci/postfix-relay.sh: (address, port, its directory). Skips
    without TLSPROBE_TEST_RELAY, unless TLSPROBE_REQUIRE_POSTFIX=1 says this run must have it."""
    service = os.environ.get("TLSPROBE_TEST_RELAY")
    directory = os.environ.get("TLSPROBE_TEST_RELAY_DIR")
    if not service or not directory:
        unavailable(
            Gate.POSTFIX,
            "TLSPROBE_TEST_RELAY / TLSPROBE_TEST_RELAY_DIR unset (run .ci/postfix-relay.sh)",
        )
    host, _, port = service.rpartition(":")
    return host, int(port), Path(directory)

"""Scripted SMTP servers on loopback for integration tests: healthy, misconfigured and hostile.

`SmtpTestServer` is an asyncio server on an ephemeral port of 127.0.0.1 (or ::1) that speaks
just enough SMTP to reach STARTTLS (or starts with TLS, for implicit mode) and then presents
exactly the chain it was given, in the order given, at the TLS versions it was given. A
`Behaviour` turns it into one of the servers a monitor meets in the wild: silent, drip-feeding,
flooding, throttling, refusing STARTTLS, injecting bytes after `220`, breaking the handshake.
It is an async context manager: leaving it closes the listener and every connection, so a test
never leaks a socket or a task (warnings are errors in this test suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import ssl
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import PrivateKey, write_server_files

LONG_LINE_BYTES = 2 * 1024 * 1024
DRIP_INTERVAL = 0.5


class Behaviour(enum.Enum):
    NORMAL = "normal"
    SILENT = "silent"
    """Accept, never speak."""
    DRIP = "drip"
    """A valid greeting, one byte every `DRIP_INTERVAL` seconds."""
    LONG_LINE = "long-line"
    """2 MiB of greeting without a line end."""
    GREETING_421 = "greeting-421"
    STARTTLS_454 = "starttls-454"
    INJECT_AFTER_220 = "inject-after-220"
    """`220 Ready to start TLS` and a forged reply in the same segment (response injection)."""
    CLOSE_AFTER_220 = "close-after-220"
    """`220` to STARTTLS, then close before the client's handshake."""
    CLOSE_IN_HANDSHAKE = "close-in-handshake"
    """`220` to STARTTLS, read the ClientHello, close."""
    GARBAGE_HANDSHAKE = "garbage-handshake"
    """`220` to STARTTLS, read the ClientHello, answer with bytes that are not TLS."""
    NO_STARTTLS = "no-starttls"
    ACCEPT_CLOSE = "accept-close"
    """Accept the connection and close it at once, before any greeting."""


@dataclass(frozen=True)
class ServerTls:
    """What the server presents: `chain` (leaf first, then whatever it should send, in order)."""

    chain: Sequence[x509.Certificate | bytes]
    """Certificates, or raw DER for what `cryptography` cannot load."""
    key: PrivateKey
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED

    @property
    def leaf_der(self) -> bytes:
        leaf = self.chain[0]
        return leaf if isinstance(leaf, bytes) else leaf.public_bytes(Encoding.DER)

    def context(self, server_names: list[str | None]) -> ssl.SSLContext:
        """A server context; the SNI of every handshake is appended to `server_names`."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # Security level 0: the server must be able to present 1024-bit keys, SHA-1 signatures
        # and TLS 1.0, which OpenSSL 3 refuses to load or negotiate at its default level.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; emulating a server stuck on them is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = self.minimum_version
            ctx.maximum_version = self.maximum_version
        with tempfile.TemporaryDirectory(prefix="tlsprobe-server-") as tmp:
            certfile, keyfile = write_server_files(Path(tmp), self.key, self.chain)
            ctx.load_cert_chain(certfile, keyfile)

        def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            server_names.append(name)

        ctx.sni_callback = record_sni
        return ctx


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound here (containers often have IPv6 disabled)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def unused_port(host: str = "127.0.0.1") -> int:
    """A port nothing uses now (TCP or UDP), below the kernel's ephemeral range.

    Tests bind such a port later (a server started after its port went into a DNS zone or a
    configuration file). A port from bind(0) comes from the ephemeral range, which the kernel
    also hands to outgoing connections: one of them took such a port before the test bound it
    ("address already in use", seen in CI). Below the range only another listener can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    for _ in range(200):
        port = _random.randrange(_PORTS_FROM, low)
        if port in _handed_out:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(family, kind) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {_PORTS_FROM} and {low} on {host}")


_PORTS_FROM = 20000
_random = random.Random()
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low if low > _PORTS_FROM + 1000 else 32768


def check_argv(host: str, port: int, ca_file: Path, ehlo: str, timeout: float) -> list[str]:
    """`tlsprobe check` of `host` on a loopback server's port, trusting `ca_file`."""
    return [
        "check",
        f"{host}:{port}",
        "--address",
        "127.0.0.1",
        "--ca-file",
        str(ca_file),
        "--ehlo-name",
        ehlo,
        "--timeout",
        str(timeout),
    ]


class SmtpTestServer:
    """A scripted SMTP server on loopback. Use as `async with SmtpTestServer(...) as server`."""

    def __init__(
        self,
        tls: ServerTls | None = None,
        *,
        behaviour: Behaviour = Behaviour.NORMAL,
        implicit: bool = False,
        host: str = "127.0.0.1",
        hostname: str = "mail.contoso.test",
        port: int = 0,
    ) -> None:
        """`port` 0 takes an ephemeral port; a fixed one is for names published beforehand
        (a TLSA owner `_PORT._tcp.HOST` carries the port)."""
        if tls is None and (implicit or _needs_tls(behaviour)):
            raise ValueError(f"{behaviour.value} (implicit={implicit}) needs a certificate")
        self.host = host
        self.hostname = hostname
        self._port = port
        self.behaviour = behaviour
        self.implicit = implicit
        self.commands: list[str] = []
        """Every command line the clients sent, in order (the dialogue as the server saw it)."""
        self.server_names: list[str | None] = []
        """SNI of every TLS handshake (None when the client sent none)."""
        self.handshakes = 0
        """TLS handshakes completed."""
        self.after_starttls = b""
        """INJECT_AFTER_220 only: what the client sent after the poisoned `220` (a ClientHello
        starts with 0x16)."""
        self._tls = tls
        self._context: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        if self._tls is not None:
            self._context = self._tls.context(self.server_names)
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self._port,
            ssl=self._context if self.implicit else None,
            ssl_handshake_timeout=5.0 if self.implicit else None,
        )
        return self

    def present(self, tls: ServerTls) -> None:
        """Serve another certificate from the next STARTTLS on, keeping the port.

        That is how a renewal looks to a prober: same address and port, a new leaf. Only
        STARTTLS sessions read the context per session; an implicit-TLS listener keeps its own.
        """
        self._tls = tls
        self._context = tls.context(self.server_names)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        if self.implicit:
            self.handshakes += 1
        try:
            await self._session(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
            # The client hung up or broke the protocol: that is the client's story to tell.
            pass
        except asyncio.CancelledError:
            # Only __aexit__ cancels a session. Ending it cancelled would make asyncio's stream
            # server (3.11) log "Unhandled exception in client_connected_cb" on teardown.
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        behaviour = self.behaviour
        if behaviour is Behaviour.ACCEPT_CLOSE:
            return
        if behaviour is Behaviour.SILENT:
            await _until_eof(reader)
            return
        greeting = f"220 {self.hostname} ESMTP tlsprobe-test\r\n".encode()
        if behaviour is Behaviour.DRIP:
            for byte in greeting:
                writer.write(bytes([byte]))
                await asyncio.sleep(DRIP_INTERVAL)
            await _until_eof(reader)
            return
        if behaviour is Behaviour.LONG_LINE:
            writer.write(b"220 " + b"A" * LONG_LINE_BYTES)
            await writer.drain()
            await _until_eof(reader)
            return
        if behaviour is Behaviour.GREETING_421:
            writer.write(f"421 4.7.0 {self.hostname} too many connections, try later\r\n".encode())
            await writer.drain()
            return
        writer.write(greeting)
        await self._commands(reader, writer, tls_active=self.implicit)

    async def _commands(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls_active: bool
    ) -> None:
        while line := await reader.readline():
            command = line.decode("ascii", "replace").strip()
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                writer.write(self._ehlo_reply(tls_active))
            elif verb == "HELO":
                writer.write(f"250 {self.hostname}\r\n".encode())
            elif verb == "STARTTLS" and not tls_active:
                upgraded = await self._starttls(reader, writer)
                if upgraded is None:
                    return
                tls_active = upgraded
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            elif verb in {"NOOP", "RSET"}:
                writer.write(b"250 2.0.0 OK\r\n")
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()

    def _ehlo_reply(self, tls_active: bool) -> bytes:
        keywords = ["PIPELINING", "SIZE 10240000"]
        if not tls_active and self.behaviour is not Behaviour.NO_STARTTLS:
            keywords.append("STARTTLS")
        keywords.append("8BITMIME")
        lines = [self.hostname, *keywords]
        return b"".join(
            f"250{' ' if i == len(lines) - 1 else '-'}{text}\r\n".encode()
            for i, text in enumerate(lines)
        )

    async def _starttls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool | None:
        """Answer STARTTLS per the behaviour.

        True: TLS is up; False: refused, the dialogue goes on in plain text; None: hang up.
        """
        behaviour = self.behaviour
        if behaviour is Behaviour.STARTTLS_454 or self._context is None:
            writer.write(b"454 4.7.0 TLS not available due to local problem\r\n")
            return False
        ready = b"220 2.0.0 Ready to start TLS\r\n"
        if behaviour is Behaviour.INJECT_AFTER_220:
            # One write, so both replies reach the client in the same segment.
            writer.write(ready + b"250 2.0.0 injected before the handshake\r\n")
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    self.after_starttls += data
            return None
        writer.write(ready)
        await writer.drain()
        if behaviour is Behaviour.CLOSE_AFTER_220:
            return None
        if behaviour in {Behaviour.CLOSE_IN_HANDSHAKE, Behaviour.GARBAGE_HANDSHAKE}:
            await reader.read(1)  # the first byte of the ClientHello: the handshake has begun
            if behaviour is Behaviour.GARBAGE_HANDSHAKE:
                writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not a ServerHello\r\n")
                await writer.drain()
            return None
        await writer.start_tls(self._context)
        self.handshakes += 1
        return True


def _needs_tls(behaviour: Behaviour) -> bool:
    return behaviour in {
        Behaviour.INJECT_AFTER_220,
        Behaviour.CLOSE_AFTER_220,
        Behaviour.CLOSE_IN_HANDSHAKE,
        Behaviour.GARBAGE_HANDSHAKE,
    }


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and discard until the client hangs up (or the test ends and cancels us)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass

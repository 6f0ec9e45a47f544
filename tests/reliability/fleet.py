"""A hostile fleet: hundreds of scripted SMTP endpoints on loopback, in a process of their own.

Every endpoint is a `tests.support.servers.SmtpTestServer` on its own loopback address
(127.0.<n>.<m>), so tlsprobe's one-connection-per-address politeness does not serialise the
fleet. Kinds cover every behaviour a monitor meets: healthy STARTTLS and implicit TLS, silence,
drip-feeding, a 2 MiB line, garbage, 421, 454, injection after 220, closes and resets around the
handshake, a TLS alert, a refused port, and (for drift tests) a server whose certificate
alternates on every connection. Running the fleet in a child process keeps its sockets, tasks
and memory out of the measurements taken of the exporter.

    python -m tests.reliability.fleet --per-kind 14 --ca-out /tmp/ca.pem [--kinds a,b]

prints one JSON line (`{"endpoints": [{"kind", "address", "port", "mode"}, ...]}`) once every
server listens, then serves until its stdin closes or it gets SIGTERM. `FleetProcess` runs it
from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support.pki import Hierarchy, make_hierarchy
from tests.support.servers import Behaviour, ServerTls, SmtpTestServer, unused_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "mail.contoso.test"


@dataclass(frozen=True)
class Kind:
    behaviour: Behaviour = Behaviour.NORMAL
    implicit: bool = False
    alert: bool = False
    """Abort the handshake with a handshake_failure alert (from the SNI callback)."""
    refused: bool = False
    """No listener at all: the connection is refused."""
    alternate: bool = False
    """Present one of two leaves, switching on every connection (certificate drift)."""
    healthy: bool = False
    """The probe must judge it ok: the control that shows the exporter still works."""


KINDS: dict[str, Kind] = {
    "normal": Kind(healthy=True),
    "implicit": Kind(implicit=True, healthy=True),
    "silent": Kind(Behaviour.SILENT),
    "drip": Kind(Behaviour.DRIP),
    "long-line": Kind(Behaviour.LONG_LINE),
    "greeting-421": Kind(Behaviour.GREETING_421),
    "starttls-454": Kind(Behaviour.STARTTLS_454),
    "inject-after-220": Kind(Behaviour.INJECT_AFTER_220),
    "close-after-220": Kind(Behaviour.CLOSE_AFTER_220),
    "reset-in-handshake": Kind(Behaviour.CLOSE_IN_HANDSHAKE),
    "garbage-handshake": Kind(Behaviour.GARBAGE_HANDSHAKE),
    "no-starttls": Kind(Behaviour.NO_STARTTLS),
    "accept-close": Kind(Behaviour.ACCEPT_CLOSE),
    "tls-alert": Kind(alert=True),
    "refused": Kind(refused=True),
}
HOSTILE_KINDS = tuple(KINDS)
"""Every kind but `alternating`, which only drift tests want."""
KINDS["alternating"] = Kind(alternate=True, healthy=True)


@dataclass(frozen=True)
class FleetEndpoint:
    kind: str
    address: str
    port: int
    mode: str
    """"starttls" or "implicit"."""

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.address.replace('.', '-')}"


def loopback_address(index: int) -> str:
    """127.0.1.1, 127.0.1.2, ... 127.0.1.254, 127.0.2.1, ...: one address per endpoint."""
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


class FleetServer(SmtpTestServer):
    """An `SmtpTestServer` that can also send a TLS alert or alternate its certificate."""

    def __init__(self, tls: ServerTls, kind: Kind, other: ServerTls, **options: Any) -> None:
        super().__init__(tls, behaviour=kind.behaviour, implicit=kind.implicit, **options)
        self.kind = kind
        self._other = other
        self._contexts: list[ssl.SSLContext] = []
        self.accepted = 0

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        assert self._context is not None
        if self.kind.alert:
            self._context.sni_callback = _refuse_handshake
        if self.kind.alternate:
            self._contexts = [self._context, self._other.context(self.server_names)]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._contexts:
            self._context = self._contexts[self.accepted % 2]
        self.accepted += 1
        await super()._accept(reader, writer)


def _refuse_handshake(_sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> int:
    return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE


def fleet_tls(pki: Hierarchy) -> tuple[ServerTls, ServerTls]:
    """Two healthy leaves for HOST from the same CA (the second is the alternate)."""
    first, second = pki.leaf([HOST], days=90), pki.leaf([HOST], days=60)
    return ServerTls(pki.chain(first), first.key), ServerTls(pki.chain(second), second.key)


async def serve(kinds: Sequence[str], per_kind: int, pki: Hierarchy) -> None:
    """Start the fleet, announce it on stdout, serve until stdin closes or SIGTERM."""
    tls, other = fleet_tls(pki)
    endpoints: list[FleetEndpoint] = []
    async with contextlib.AsyncExitStack() as stack:
        index = 0
        for _ in range(per_kind):
            for name in kinds:
                kind, address = KINDS[name], loopback_address(index)
                index += 1
                mode = "implicit" if kind.implicit else "starttls"
                if kind.refused:
                    endpoints.append(FleetEndpoint(name, address, unused_port(address), mode))
                    continue
                server = FleetServer(tls, kind, other, host=address, hostname=HOST)
                await stack.enter_async_context(server)
                endpoints.append(FleetEndpoint(name, address, server.port, mode))
        print(json.dumps({"endpoints": [e.__dict__ for e in endpoints]}), flush=True)
        await _until_told_to_stop()


async def _until_told_to_stop() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):  # end of file: the parent went away
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    # Servers that break the handshake on purpose make asyncio log every failure; mute it.
    loop.set_exception_handler(lambda _loop, _context: None)
    await stop.wait()


class FleetProcess:
    """`with FleetProcess(per_kind=2, ca_out=path) as endpoints:` runs the fleet as a child."""

    def __init__(self, *, per_kind: int, ca_out: Path, kinds: Sequence[str] = HOSTILE_KINDS):
        self.per_kind = per_kind
        self.ca_out = ca_out
        self.kinds = kinds
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> list[FleetEndpoint]:
        command = [sys.executable, "-m", "tests.reliability.fleet"]
        command += ["--per-kind", str(self.per_kind), "--ca-out", str(self.ca_out)]
        command += ["--kinds", ",".join(self.kinds)]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60.0)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError("the fleet did not start within 60 s")
        return [FleetEndpoint(**e) for e in json.loads(line)["endpoints"]]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=14)
    parser.add_argument("--kinds", default=",".join(HOSTILE_KINDS))
    parser.add_argument("--ca-out", type=Path, required=True)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    pki = make_hierarchy("tlsprobe Fleet")
    args.ca_out.write_bytes(pki.ca_pem)
    asyncio.run(serve(kinds, args.per_kind, pki))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real HTTPS MTA-STS policy server on loopback (aiohttp), for the policy fetch tests.

It serves `/.well-known/mta-sts.txt` for every `mta-sts.DOMAIN` host it has a certificate
for, answering per `Host` header from `responses`, which a test changes at will: a status, a
media type, a body, or a redirect. It listens where a sender looks for it, port 443 (RFC 8461
fixes it), on an address of 127.0.0.0/8 picked at random so that test runs side by side do not
collide; the DNS laboratory publishes `mta-sts.DOMAIN A` that address (`a_records`), and the
probe resolves it through the laboratory's validating resolver like every other name. Port 443
needs root (CI runs as root): without it the test skips through the ROOT gate. The probe trusts
the server through the test CA, like a real deployment with a private CA file.
"""

from __future__ import annotations

import random
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from aiohttp import web

from tests.support.gates import Gate, unavailable
from tests.support.pki import Hierarchy, write_server_files
from tlsprobe.probe.dns.mtasts_fetch import PORT, FetchSettings


def random_address() -> str:
    """An address of 127.0.0.0/8 that hardly another test run picks (port 443 is shared)."""
    rng = random.SystemRandom()
    return f"127.{rng.randrange(100, 250)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain"
    location: str = ""


class PolicyServer:
    def __init__(
        self, pki: Hierarchy, domains: list[str], ca_file: Path, address: str | None = None
    ) -> None:
        self.hosts = [f"mta-sts.{d}" for d in domains]
        self.address = address or random_address()
        self.port = PORT
        self.responses: dict[str, Response] = {}
        """By policy host (`mta-sts.DOMAIN`)."""
        self.requests: list[str] = []
        self._leaf = pki.leaf(self.hosts)
        self._chain = pki.chain(self._leaf)
        self._ca_file = ca_file
        self._runner: web.AppRunner | None = None

    def settings(self) -> FetchSettings:
        return FetchSettings(ca_file=self._ca_file)

    def a_records(self, origin: str) -> list[str]:
        """Zone lines (relative to `origin`) that point every policy host at this server."""
        suffix = f".{origin.rstrip('.')}"
        return [f"{host.removesuffix(suffix)} A {self.address}" for host in self.hosts]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = request.host.split(":")[0].lower()
        self.requests.append(f"{host}{request.path}")
        response = self.responses.get(host)
        if response is None or request.path != "/.well-known/mta-sts.txt":
            return web.Response(status=404)
        if response.location:
            return web.Response(status=response.status, headers={"Location": response.location})
        return web.Response(
            status=response.status, body=response.body, content_type=response.content_type
        )

    async def __aenter__(self) -> Self:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="tlsprobe-sts-") as tmp:
            certfile, keyfile = write_server_files(Path(tmp), self._leaf.key, self._chain)
            context.load_cert_chain(certfile, keyfile)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=context)
        try:
            await site.start()
        except PermissionError:
            await self._runner.cleanup()
            unavailable(Gate.ROOT, f"binding port {PORT} (the MTA-STS policy server) needs root")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

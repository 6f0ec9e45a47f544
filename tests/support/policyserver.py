"""A real HTTPS MTA-STS policy server on loopback (aiohttp), for the policy fetch tests.

It serves `/.well-known/mta-sts.txt` for every `mta-sts.DOMAIN` host it has a certificate
for, answering per `Host` header from `responses`, which a test changes at will: a status, a
media type, a body, or a redirect. The probe reaches it through `FetchSettings.addresses`
(`mta-sts.DOMAIN` -> 127.0.0.1:port) and trusts it through the test CA, like a real deployment
with a private CA file: nothing resolves or leaves loopback.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from aiohttp import web

from tests.support.pki import Hierarchy, write_server_files
from tests.support.servers import unused_port
from tlsprobe.probe.mtasts_fetch import FetchSettings


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain"
    location: str = ""


class PolicyServer:
    def __init__(self, pki: Hierarchy, domains: list[str], ca_file: Path) -> None:
        self.hosts = [f"mta-sts.{d}" for d in domains]
        self.responses: dict[str, Response] = {}
        """By policy host (`mta-sts.DOMAIN`)."""
        self.requests: list[str] = []
        self._leaf = pki.leaf(self.hosts)
        self._chain = pki.chain(self._leaf)
        self._ca_file = ca_file
        self._runner: web.AppRunner | None = None
        self.port = 0

    def settings(self) -> FetchSettings:
        addresses = dict.fromkeys(self.hosts, ("127.0.0.1", self.port))
        return FetchSettings(ca_file=self._ca_file, addresses=addresses)

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
        self.port = unused_port()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

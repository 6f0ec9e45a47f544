"""The aiohttp internals the exporter leans on, each named: an aiohttp release that moves one
fails here, by name, before the connection guard misbehaves in production.

`web/connections.py` puts its own protocol in front of aiohttp's `RequestHandler` (the
connection cap and header deadline) and its own `BaseSite`; `app._bound_addresses` reads the
site's asyncio server. pyproject pins `aiohttp<4` for the same reason.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tlsprobe.exporter.web.connections import ConnectionGuard, GuardedSite

HANDLER_ATTRIBUTES = ("_request_in_progress", "_request_count", "transport")
"""Read by `_Guarded`: whether a request is being answered (eviction, the header deadline),
how many request heads arrived (the deadline is disarmed by a complete head), and whether the
handler was told of the connection."""

HANDLER_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "eof_received",
    "pause_writing",
    "resume_writing",
)
"""The asyncio protocol methods `_Guarded` forwards to the handler."""

SITE_ATTRIBUTES = ("_runner", "_ssl_context", "_backlog", "_server")
"""Set by `BaseSite.__init__`, used by `GuardedSite.start` and `app._bound_addresses`."""


def test_aiohttp_is_a_3_release() -> None:
    major = int(aiohttp.__version__.split(".")[0])
    assert major == 3, f"aiohttp {aiohttp.__version__}: the guard is written against aiohttp 3"


async def test_the_request_handler_still_has_what_the_guard_reads() -> None:
    async def answer(_: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    server = web.Server(answer)
    handler = server()
    assert isinstance(handler, RequestHandler), "web.Server() no longer makes a RequestHandler"
    for name in HANDLER_ATTRIBUTES:
        assert hasattr(handler, name), f"aiohttp RequestHandler.{name} is gone"
    assert handler._request_count == 0, "RequestHandler._request_count changed meaning"
    assert handler._request_in_progress is False, "RequestHandler._request_in_progress changed"
    for name in HANDLER_METHODS:
        assert callable(getattr(handler, name, None)), f"aiohttp RequestHandler.{name} is gone"
    await server.shutdown(0)


async def test_a_guarded_site_still_fits_base_site() -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = GuardedSite(runner, "127.0.0.1", 0, ConnectionGuard(4, 5.0))
        for name in SITE_ATTRIBUTES:
            assert hasattr(site, name), f"aiohttp BaseSite.{name} is gone"
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.AbstractServer), "BaseSite._server is no asyncio server"
        sockets = getattr(server, "sockets", None)
        assert sockets, "BaseSite._server has no sockets (app._bound_addresses reads them)"
        host, port = sockets[0].getsockname()[:2]
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/") as reply:
            assert reply.status == 200 and await reply.text() == "ok"
    finally:
        await runner.cleanup()


def test_the_runner_still_exposes_its_server() -> None:
    assert isinstance(getattr(web.BaseRunner, "server", None), property), "BaseRunner.server gone"

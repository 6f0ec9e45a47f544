"""A real browser for the page tests: headless Chromium driven over the DevTools protocol.

`chromium()` starts Debian's Chromium headless with a fresh profile and remote debugging on a
loopback port the browser picks (it writes the port to `DevToolsActivePort` in the profile);
`Page` speaks the protocol over aiohttp's WebSocket client: navigate and wait for the load
event, evaluate JavaScript, take a screenshot. Nothing but the pages under test is loaded: the
background-networking switches keep Chromium from calling out (the tests run with no route
beyond loopback).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.gates import Gate, system_tool
from tests.support.wait import WAIT, eventually

SWITCHES = (
    "--headless",
    "--no-sandbox",  # root in CI; the pages are our own, on loopback
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class Page:
    """One browser tab: commands and the events they wait for, over one WebSocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one protocol command; its result (AssertionError on a protocol error)."""
        ident = next(self._ids)
        await self._socket.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._socket.receive_json(), timeout=WAIT)
            if message.get("id") == ident:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message["result"]
                return result
            self._events.append(message)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the page's load event."""
        self._events.clear()
        await self.send("Page.navigate", url=url)
        await self.loaded()

    async def loaded(self) -> None:
        """Wait for the load event of the navigation under way (a click, `goto`)."""
        while not any(event.get("method") == "Page.loadEventFired" for event in self._events):
            message = await asyncio.wait_for(self._socket.receive_json(), timeout=WAIT)
            self._events.append(message)
        self._events.clear()

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def screenshot(self, width: int, height: int) -> bytes:
        """A PNG of the page at `width` x `height` CSS pixels."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


async def _debugging_port(profile: Path) -> int:
    active = profile / "DevToolsActivePort"
    await eventually(active.exists, "Chromium to open its debugging port")
    return int(active.read_text().split()[0])


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with an empty profile in `profile`; its first tab, ready for
    commands. The browser is stopped on leaving."""
    executable = system_tool("chromium", Gate.BROWSER)
    process = await asyncio.create_subprocess_exec(
        *(executable, *SWITCHES, f"--user-data-dir={profile}", "about:blank"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port = await _debugging_port(profile)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                tabs = json.loads(await response.text())
            url = next(tab["webSocketDebuggerUrl"] for tab in tabs if tab["type"] == "page")
            async with http.ws_connect(url, max_msg_size=64 * 1024 * 1024) as socket:
                page = Page(socket)
                await page.send("Page.enable")
                yield page
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=WAIT)
        except TimeoutError:
            process.kill()
            await process.wait()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header; AssertionError when `data` is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")

"""The status page and the detail view in a real browser, as an administrator meets them.

`tlsprobe demo` runs as a user starts it; headless Chromium (tests/support/browser.py) opens
its status page. What the browser shows, not what the HTML says, is asserted: the row of every
demo scenario with its status in words and in the status colour as the browser computes it,
worst first; a page that fits a 1280-pixel screen without scrolling sideways; the endpoint link
that a click follows to the detail view with the chain as sent; a sender's row and its detail
view (`/sender`) likewise, from an exporter with a receiver. The screenshots in
deploy/screenshots are these pages: with TLSPROBE_SCREENSHOT_DIR set, the test writes them there.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.exporter.test_send_side import CANARY_RCPT, client_files, config_data, running
from tests.support.browser import Page, chromium, png_size
from tests.support.exporter import DEMO_STATUS, ROOT, command, fetch_once
from tests.support.pki import Hierarchy
from tests.support.servers import unused_port
from tests.support.smtpclients import send_canary
from tests.support.wait import WAIT, eventually
from tlsprobe.demo.run import DEMO_TENANT
from tlsprobe.exporter.pages.status import STATUS_COLOURS
from tlsprobe.model import Status

pytestmark = pytest.mark.slow

SCREEN = 1280
"""CSS pixels: a laptop screen; the status page must not scroll sideways on it."""
ROWS = """Array.from(document.querySelectorAll('table.endpoints tbody tr')).map(tr => ({
  target: tr.cells[1].innerText,
  status: tr.cells[3].innerText,
  colour: getComputedStyle(tr.cells[3]).backgroundColor,
}))"""


def rgb(hex_colour: str) -> str:
    """`#c62828` as the browser's computed style writes it: `rgb(198, 40, 40)`."""
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


async def _all_probed(url: str) -> bool:
    try:
        _, text = await fetch_once(f"{url}/metrics")
    except aiohttp.ClientError:  # not listening yet
        return False
    return sum(line.startswith("tlsprobe_status{") for line in text.splitlines()) == len(
        DEMO_STATUS
    )


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[str]:
    """The base URL of a running `tlsprobe demo` whose every scenario has been probed."""
    port = unused_port()
    process = await asyncio.create_subprocess_exec(
        *command("demo", "--listen", f"127.0.0.1:{port}", "--interval", "30s"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _all_probed(url), "a result for every demo scenario", 2 * WAIT)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), timeout=WAIT)
            except TimeoutError:
                process.kill()
                await process.wait()


def _keep(name: str, png: bytes) -> None:
    directory = os.environ.get("TLSPROBE_SCREENSHOT_DIR")
    if directory:
        Path(directory, name).write_bytes(png)


async def _laptop(page: Page) -> None:
    """A laptop's screen: SCREEN CSS pixels wide, at scale 1."""
    await page.send(
        "Emulation.setDeviceMetricsOverride",
        width=SCREEN,
        height=800,
        deviceScaleFactor=1,
        mobile=False,
    )


async def _fits(page: Page, what: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{what} scrolls sideways by {overflow} px at {SCREEN}"


async def _full_page(page: Page, name: str) -> None:
    height = await page.evaluate("document.documentElement.scrollHeight")
    png = await page.screenshot(SCREEN, height)
    assert png_size(png) == (SCREEN, height)
    _keep(name, png)


async def _timeline(page: Page) -> None:
    """What breaks when: the forecast's table and one bar per certificate (the scenario
    without STARTTLS has none), screenshot on its own."""
    text = await page.evaluate("document.body.innerText")
    assert "What breaks when" in text
    bars = await page.evaluate("document.querySelectorAll('svg.timeline rect').length")
    assert bars == len(DEMO_STATUS) - 1
    box = await page.evaluate(
        "(() => { const h = [...document.querySelectorAll('h2')].find(h =>"
        " h.innerText === 'What breaks when'); const r = h.getBoundingClientRect();"
        " const end = document.querySelector('svg.timeline').nextElementSibling"
        ".getBoundingClientRect(); return {y: r.top + scrollY, height: end.bottom - r.top}; })()"
    )
    shot = await page.send(
        "Page.captureScreenshot",
        format="png",
        clip={"x": 0, "y": box["y"], "width": SCREEN, "height": box["height"], "scale": 1},
    )
    png = base64.b64decode(shot["data"])
    assert png_size(png)[0] == SCREEN
    _keep("timeline.png", png)


async def _views(page: Page, demo: str) -> None:
    """A tenant's view, an unknown tenant's, and the search box as a user submits it."""
    await page.goto(f"{demo}/?tenant={DEMO_TENANT}")
    await page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true })")
    assert {row["target"] for row in await page.evaluate(ROWS)} == set(DEMO_STATUS)
    summary = await page.evaluate("document.querySelector('p').innerText")
    assert f"tenant {DEMO_TENANT}: 1 ok, 1 warning, 6 critical" in summary
    await page.goto(f"{demo}/?tenant=fabrikam")
    assert await page.evaluate(ROWS) == []
    assert "No endpoints in tenant fabrikam" in await page.evaluate("document.body.innerText")

    await page.goto(f"{demo}/")
    await page.evaluate(
        "document.querySelector('form.search input[name=q]').value = 'wrong';"
        "document.querySelector('form.search').submit()"
    )
    await page.loaded()
    assert await page.evaluate("location.search") == "?q=wrong"
    assert [row["target"] for row in await page.evaluate(ROWS)] == ["wrong-name"]


async def test_status_page_and_detail_view_in_chromium(demo: str, tmp_path: Path) -> None:
    async with chromium(tmp_path / "profile") as page:
        await _laptop(page)
        await page.goto(f"{demo}/")
        assert await page.evaluate("document.title") == "tlsprobe"

        # Failing rows first; the OK row is collapsed until its <details> is opened.
        collapsed = await page.evaluate(ROWS)
        assert "healthy" not in {row["target"] for row in collapsed}
        await page.evaluate("document.querySelector('details summary').click()")
        rows = await page.evaluate(ROWS)
        shown = {row["target"]: row["status"] for row in rows}
        assert shown == {name: Status(code).name for name, code in DEMO_STATUS.items()}
        for row in rows:
            assert row["colour"] == rgb(STATUS_COLOURS[Status[row["status"]]]), row
        ranks = [max(DEMO_STATUS.values()) - DEMO_STATUS[row["target"]] for row in rows]
        assert ranks == sorted(ranks), "worst first"
        summary = await page.evaluate("document.querySelector('p').innerText")
        assert "1 ok, 1 warning, 6 critical" in summary

        await _fits(page, "the status page")
        await page.evaluate("document.querySelector('details').open = false")
        await _full_page(page, "status-page.png")
        await _timeline(page)
        await _views(page, demo)
        await page.goto(f"{demo}/")

        # The endpoint link of a row leads, by a click, to its detail view.
        await page.evaluate("document.querySelector('a[href*=\"target=healthy\"]').click()")
        await page.loaded()
        assert await page.evaluate("location.pathname") == "/endpoint"
        text = await page.evaluate("document.body.innerText")
        assert "Chain as sent" in text
        assert "relay.contoso.test" in text
        await _fits(page, "the detail view")
        await _full_page(page, "endpoint-detail.png")


async def test_sender_detail_view_in_chromium(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """A sender that renewed into a leaf without clientAuth, and whose canary fails: critical
    on the status page (in the header's counts), and its detail view, reached by a click, shows
    the checks, the chain as presented, the leaf per address, both certificates in its history
    and the failed canary."""
    before = pki.leaf(("relay.contoso.test",))
    after = pki.leaf(("relay.contoso.test",), client_auth=False)
    port = unused_port()
    canary = {"relay": f"127.0.0.1:{unused_port()}", "recipient": CANARY_RCPT, "interval": "1h"}
    data = config_data(tmp_path, ca_file, receiver_port=port, canary=canary)
    async with running(tmp_path, data) as exporter:
        side = exporter.send_side
        assert side is not None
        for leaf in (before, after):
            certfile, keyfile = client_files(tmp_path, pki, leaf)
            await asyncio.to_thread(
                send_canary, port, certfile=certfile, keyfile=keyfile, rcpt=CANARY_RCPT
            )
        await eventually(
            lambda: (s := side.snapshot()[0]).sessions == 2 and s.canary is not None,
            "both sessions and the canary's outcome",
        )
        async with chromium(tmp_path / "profile") as page:
            await _laptop(page)
            await page.goto(f"{exporter.url}/")
            summary = await page.evaluate("document.querySelector('p').innerText")
            assert "critical" in summary
            row = await page.evaluate(
                "Array.from(document.querySelectorAll('tbody tr'))"
                ".map(tr => tr.innerText).find(t => t.includes('relay-1'))"
            )
            assert "CRITICAL" in row and "canary" in row
            await page.evaluate("document.querySelector('a[href^=\"/sender?\"]').click()")
            await page.loaded()
            assert await page.evaluate("location.pathname") == "/sender"
            text = await page.evaluate("document.body.innerText")
            for shown in (
                "client_auth_eku",
                "Chain as sent",
                "Presented now, by address",
                before.sha256[:16],
                after.sha256[:16],
                "Canary history",
                "submit_unreachable",
                "risky (paged): clientAuth EKU dropped",
            ):
                assert shown in text, shown
            await _fits(page, "the sender view")
            await _full_page(page, "sender-detail.png")

"""`tlsprobe serve` runs on uvloop when it can be imported, on asyncio's loop when not.

CI installs no uvloop, so the whole suite runs on the default loop; these tests put a stand-in
`uvloop` module in `sys.modules` (a selector loop whose class lives in a module named uvloop) to
check the choice and its report in `tlsprobe_build_info`, and, where the real uvloop is
installed, probe a loopback STARTTLS server on it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import aiohttp
import pytest

from tests.support.gates import Gate, importable
from tests.support.pki import Hierarchy
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tlsprobe import __version__
from tlsprobe.cli.main import main as cli_main
from tlsprobe.exporter import app, eventloop
from tlsprobe.exporter.config import Config, parse_config
from tlsprobe.exporter.eventloop import EventLoop
from tlsprobe.exporter.metrics import ExporterStats, exporter_samples
from tlsprobe.model import Endpoint, Policy, Status
from tlsprobe.probe.evaluate import TrustStore
from tlsprobe.probe.prober import probe_endpoint

HOST = "mail.contoso.test"


class _StandInLoop(asyncio.SelectorEventLoop):
    """A real selector loop that reports itself as uvloop's."""


_StandInLoop.__module__ = "uvloop"


@pytest.fixture
def stand_in_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("uvloop")
    module.new_event_loop = _StandInLoop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", module)


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError


def _serve_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[EventLoop]:
    """Run `tlsprobe serve` with `app.serve` replaced by one that notes the loop it runs on."""
    seen: list[EventLoop] = []

    async def fake_serve(*_: object) -> int:
        seen.append(eventloop.running_loop())
        return 0

    monkeypatch.setattr(app, "serve", fake_serve)
    config = tmp_path / "tlsprobe.yml"
    config.write_text(json.dumps(_config_data(tmp_path)))  # JSON is YAML
    assert cli_main(["serve", "--config", str(config)]) == 0
    return seen


def test_serve_picks_uvloop_when_it_is_importable(
    stand_in_uvloop: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert _serve_on(monkeypatch, tmp_path) == [EventLoop.UVLOOP]


def test_serve_runs_on_the_default_loop_without_uvloop(
    no_uvloop: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert eventloop.loop_factory() is None
    assert _serve_on(monkeypatch, tmp_path) == [EventLoop.ASYNCIO]


def test_build_info_names_the_loop(stand_in_uvloop: None, tmp_path: Path) -> None:
    async def started_stats() -> ExporterStats:
        exporter = app.Exporter(_config(tmp_path))
        await exporter.start()
        try:
            return exporter.stats
        finally:
            await exporter.stop()

    stats = eventloop.run(started_stats())
    build = [s for s in exporter_samples(stats, 0) if s[0] == "tlsprobe_build_info"]
    python = ".".join(map(str, sys.version_info[:3]))
    assert build == [("tlsprobe_build_info", (__version__, python, "uvloop"), 1.0)]
    assert ExporterStats().event_loop is EventLoop.ASYNCIO


def _config_data(tmp_path: Path) -> dict[str, object]:
    """One target on a loopback port nobody listens on, probed once an hour."""
    target = {"name": "mx", "host": HOST, "address": "127.0.0.1", "port": unused_port()}
    return {
        "state_dir": str(tmp_path),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "defaults": {"interval": "1h"},
        "tenants": {"contoso": {"accepted_domains": ["contoso.test"], "targets": [target]}},
    }


def _config(tmp_path: Path) -> Config:
    return parse_config(_config_data(tmp_path), base_dir=tmp_path)


def test_a_probe_on_real_uvloop_captures_and_judges_the_chain(pki: Hierarchy) -> None:
    importable("uvloop", Gate.UVLOOP)
    leaf = pki.leaf((HOST,))
    tls = ServerTls([leaf.cert, pki.intermediate.cert], leaf.key)

    async def probe() -> tuple[EventLoop, object]:
        async with SmtpTestServer(tls) as server:
            endpoint = Endpoint(host=HOST, port=server.port, address="127.0.0.1", sni=HOST)
            trust = TrustStore.from_pem(pki.ca_pem, source="test root")
            result = await probe_endpoint(endpoint, Policy(), trust, timeout=10)
            return eventloop.running_loop(), result

    kind, result = eventloop.run(probe())
    assert kind is EventLoop.UVLOOP
    assert result.status is Status.OK, result  # type: ignore[attr-defined]
    assert [c.sha256 for c in result.chain] == [leaf.sha256, pki.intermediate.sha256]  # type: ignore[attr-defined]


def test_serve_answers_http_on_real_uvloop(tmp_path: Path) -> None:
    """uvloop's transports do not derive from asyncio.Transport; the connection guard once
    asserted they did and reset every HTTP connection on uvloop."""
    importable("uvloop", Gate.UVLOOP)

    async def scrape() -> tuple[int, str]:
        exporter = app.Exporter(_config(tmp_path))
        await exporter.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{exporter.url}/metrics") as response,
            ):
                return response.status, await response.text()
        finally:
            await exporter.stop()

    status, text = eventloop.run(scrape())
    assert status == 200
    assert 'event_loop="uvloop"' in text

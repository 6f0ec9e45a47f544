"""`tlsprobe serve` runs on uvloop when it can be imported, on asyncio's loop when not.

CI installs no uvloop, so the whole suite runs on the default loop; these tests put a stand-in
`uvloop` module in `sys.modules` (a selector loop whose class lives in a module named uvloop) to
check the choice and its report in `tlsprobe_build_info`, and, where the real uvloop is
installed, probe a loopback STARTTLS server on it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import types
from pathlib import Path

import aiohttp
import pytest

from tests.support.gates import Gate, importable
from tests.support.piecemeal import get_in_pieces
from tests.support.pki import Hierarchy, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tlsprobe import __version__
from tlsprobe.cli.main import main as cli_main
from tlsprobe.exporter import app, eventloop
from tlsprobe.exporter.config import Config, parse_config
from tlsprobe.exporter.eventloop import EventLoop
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.model import Endpoint, Policy, Status
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.x509.evaluate import TrustStore

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
    async def started_samples() -> list[Sample]:
        exporter = app.Exporter(_config(tmp_path))
        await exporter.start()
        try:
            return list(exporter.samples())
        finally:
            await exporter.stop()

    samples = eventloop.run(started_samples())
    build = [s for s in samples if s[0] == "tlsprobe_build_info"]
    python = ".".join(map(str, sys.version_info[:3]))
    assert build == [("tlsprobe_build_info", (__version__, python, "uvloop"), 1.0)]
    assert app.Exporter(_config(tmp_path)).event_loop is EventLoop.ASYNCIO


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


def test_serve_answers_https_and_ends_silent_handshakes_on_real_uvloop(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    """With web TLS the guard admits the TCP connection and starts TLS itself (start_tls on
    uvloop's transports): a scrape over HTTPS works, and a connection that never sends its
    ClientHello is closed at the header deadline and counted."""
    importable("uvloop", Gate.UVLOOP)
    leaf = pki.leaf(["localhost", "127.0.0.1"])
    cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    )
    data = _config_data(tmp_path)
    listen = {"listen": f"127.0.0.1:{unused_port()}"}
    data["web"] = listen | {"config_file": str(tmp_path / "web.yml"), "header_timeout": "0.5s"}
    config = parse_config(data, base_dir=tmp_path)

    async def scrape() -> tuple[bytes, list[bytes], int, str]:
        exporter = app.Exporter(config)
        await exporter.start()
        try:
            host, port = exporter.bound[0]
            reader, writer = await asyncio.open_connection(host, port)
            try:
                silent = await asyncio.wait_for(reader.read(), timeout=15)
            finally:
                writer.close()
            # uvloop reads the first piece before TLS starts: it must reach the TLS layer.
            pieces = [
                await get_in_pieces(host, port, ca_file, "/-/healthy", first=first)
                for first in (1, 64, 300)
            ]
            ctx = ssl.create_default_context(cafile=str(ca_file))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{exporter.url}/metrics", ssl=ctx) as response,
            ):
                return silent, pieces, response.status, await response.text()
        finally:
            await exporter.stop()

    silent, pieces, status, text = eventloop.run(scrape())
    assert (silent, status) == (b"", 200)
    assert all(p.startswith(b"HTTP/1.1 200") for p in pieces), [p[:40] for p in pieces]
    assert 'event_loop="uvloop"' in text
    assert 'tlsprobe_http_connections_closed_total{reason="header_timeout"} 1.0' in text

"""Floods before authentication: idle and slow-header connections, wrong passwords, /probe loops.

The connection flood runs against `tlsprobe serve` in a child process whose open-file limit is
lowered to 256, so that the flood can reach it: hundreds of idle and slow-header connections
from the test must leave scrapes answered and probes working (without the connection cap the
exporter ran out of descriptors and stopped answering). The password flood comes from 48
clients on their own loopback addresses against `max_concurrent_requests: 16`; the scraper's
first (uncached) and later scrapes must all succeed. A client looping on `/probe` costs one
probe per `web.probe_min_interval`. Removing a user from the web config and reloading refuses
that user at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from tests.reliability.harness import (
    Series,
    basic,
    exporter_config,
    open_fds,
    parse_exposition,
    running,
    values,
    write_yaml,
)
from tests.support.exporter import fetch, start_serve
from tests.support.pki import Hierarchy, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.smtpclients import CANARY_RCPT, send_canary
from tests.support.wait import eventually
from tlsprobe.exporter.web.connections import (
    ACCEPT_BURST,
    MIN_CONNECTIONS,
    RESERVED_BASE,
    connection_budget,
)
from tlsprobe.probe.send import receiver

pytestmark = pytest.mark.slow

HOST = "mail.contoso.test"
NOFILE = 256


@pytest.fixture
async def good(pki: Hierarchy) -> AsyncIterator[SmtpTestServer]:
    leaf = pki.leaf([HOST])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        yield server


def config(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, *, interval: str = "5m", **web: Any
) -> Path:
    targets = [{"name": "good", "host": HOST, "address": "127.0.0.1", "port": good.port}]
    data = exporter_config(
        tmp_path / "state",
        ca_file,
        targets,
        interval=interval,
        timeout="2s",
        retries=0,
        concurrency=10,
        web=web,
    )
    return write_yaml(tmp_path / "tlsprobe.yml", data)


# --- connections -------------------------------------------------------------------------------


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@contextlib.contextmanager
def serve_with_low_nofile(path: Path, log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process, url = start_serve(path, log, _low_nofile)
    try:
        yield process, url.removesuffix("/metrics")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def _hold(host: str, port: int, *, partial: bool, held: list[asyncio.StreamWriter]) -> None:
    """One flood connection: idle, or a request whose headers never end."""
    with contextlib.suppress(OSError):
        _reader, writer = await asyncio.open_connection(host, port)
        held.append(writer)
        if partial:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: tlsprobe\r\nX-Slow: ")
            await writer.drain()


async def _scrape_until_probed(
    http: aiohttp.ClientSession, url: str, text: str
) -> dict[Series, float]:
    deadline = time.monotonic() + 20
    series = parse_exposition(text)
    while not values(series, "tlsprobe_probe_success", target="good"):
        assert time.monotonic() < deadline, "no probe result while the flood was held"
        await asyncio.sleep(0.5)
        status, text = await fetch(http, f"{url}/metrics")
        assert status == 200
        series = parse_exposition(text)
    return series


async def _flood(
    path: Path, log: Path, *, partial: bool, tls: ssl.SSLContext | None = None
) -> tuple[list[int], dict[Series, float]]:
    """`tlsprobe serve` with 256 descriptors; 80 more flood connections a round (480 in all,
    far beyond the 256 descriptors: half of them slow-header ones when `partial`), a scrape
    after each round, the descriptors counted. Returns the scrapes' statuses and, with the
    flood still held, the series once the target is judged."""
    held: list[asyncio.StreamWriter] = []
    with serve_with_low_nofile(path, log) as (process, url):
        assert url.startswith("https://" if tls else "http://"), url
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        connector = aiohttp.TCPConnector(force_close=True, ssl=tls or True)
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                statuses: list[int] = []
                for round_ in range(6):
                    await asyncio.gather(
                        *(
                            _hold(host, int(port), partial=partial and i % 2 == 1, held=held)
                            for i in range(80)
                        )
                    )
                    status, text = await fetch(http, f"{url}/metrics")
                    statuses.append(status)
                    fds = open_fds(process.pid)
                    assert fds < NOFILE - 40, f"round {round_}: {fds} descriptors open"
                # With the flood still held, the probes keep their descriptors: the target is
                # judged (probes run every 3 s), not "unknown: Too many open files".
                return statuses, await _scrape_until_probed(http, url, text)
        finally:
            for writer in held:
                writer.close()


async def test_idle_and_slow_header_connections_cannot_exhaust_descriptors(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good, interval="3s", header_timeout="30s")
    log = tmp_path / "serve.log"
    statuses, series = await _flood(path, log, partial=True)
    assert statuses == [200] * 6
    limit = values(series, "tlsprobe_http_connection_limit")[0]
    assert limit <= NOFILE - 64 - 2 * 10
    assert values(series, "tlsprobe_http_connections_closed_total", reason="limit")[0] > 0
    assert values(series, "tlsprobe_probe_success", target="good") == [1.0]
    assert "Too many open files" not in log.read_text()


async def test_silent_tls_handshakes_cannot_exhaust_descriptors(
    tmp_path: Path, ca_file: Path, pki: Hierarchy, good: SmtpTestServer
) -> None:
    """The same flood against a TLS web port: connections that never send a ClientHello. The
    guard starts TLS itself after admitting a connection, so they count against the cap; when
    the handshake ran first, they held descriptors past it until the header timeout."""
    leaf = pki.leaf(["localhost", "127.0.0.1"])
    cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
    web = tmp_path / "web-config.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    path = config(
        tmp_path, ca_file, good, interval="3s", header_timeout="30s", config_file=str(web)
    )
    log = tmp_path / "serve.log"
    tls = ssl.create_default_context(cafile=str(ca_file))
    statuses, series = await _flood(path, log, partial=False, tls=tls)
    assert statuses == [200] * 6
    assert values(series, "tlsprobe_http_connections_closed_total", reason="limit")[0] > 0
    assert values(series, "tlsprobe_probe_success", target="good") == [1.0]
    assert "Too many open files" not in log.read_text()


async def test_a_request_whose_headers_never_end_is_closed_after_the_header_timeout(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good, header_timeout="0.5s", idle_timeout="1h")
    async with running(path) as (exporter, _):
        host, port = exporter.bound[0]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: tlsprobe\r\n")
        await writer.drain()
        # A generous bound, not a timing assert: without the deadline it stays open an hour.
        closed = await asyncio.wait_for(reader.read(), timeout=15)
        writer.close()
        async with aiohttp.ClientSession() as http:
            _, text = await fetch(http, f"{exporter.url}/metrics")
    assert closed == b""
    series = parse_exposition(text)
    assert values(series, "tlsprobe_http_connections_closed_total", reason="header_timeout") == [
        1.0
    ]


# --- passwords ---------------------------------------------------------------------------------


def web_config(tmp_path: Path, users: dict[str, str], cost: int = 4) -> Path:
    path = tmp_path / "web-config.yml"
    lines = [
        f"  {user}: '{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=cost)).decode()}'"
        for user, pw in users.items()
    ]
    path.write_text("basic_auth_users:\n" + "\n".join(lines) + "\n")
    return path


async def test_48_clients_with_wrong_passwords_do_not_fail_authorised_scrapes(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    web = web_config(tmp_path, {"prometheus": "s3cret"}, cost=10)
    path = config(tmp_path, ca_file, good, config_file=str(web), max_concurrent_requests=16)
    right = basic("prometheus", "s3cret")
    async with running(path) as (exporter, _):
        metrics = f"{exporter.url}/metrics"
        done = asyncio.Event()
        refused: list[int] = []

        async def attacker(i: int) -> None:
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.2.{i + 1}", 0))
            async with aiohttp.ClientSession(connector=connector) as own:
                while not done.is_set():
                    status, _ = await fetch(own, metrics, headers=basic("prometheus", f"x{i}"))
                    refused.append(status)

        attackers = [asyncio.create_task(attacker(i)) for i in range(48)]
        try:
            await asyncio.sleep(0.5)  # the flood is under way before the first scrape
            statuses = []
            async with aiohttp.ClientSession() as http:
                for _ in range(10):
                    statuses.append((await fetch(http, metrics, headers=right))[0])
                    await asyncio.sleep(0.05)
        finally:
            done.set()
            await asyncio.gather(*attackers)
    assert statuses == [200] * 10
    assert refused and set(refused) <= {401, 429}


async def test_concurrent_wrong_passwords_from_one_client_are_throttled(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    web = web_config(tmp_path, {"prometheus": "s3cret"}, cost=10)
    path = config(tmp_path, ca_file, good, config_file=str(web))
    async with running(path) as (exporter, _):
        metrics = f"{exporter.url}/metrics"
        connector = aiohttp.TCPConnector(local_addr=("127.0.3.1", 0))
        async with aiohttp.ClientSession(connector=connector) as flood:
            wrong = basic("prometheus", "guess")
            answers = await asyncio.gather(
                *(fetch(flood, metrics, headers=wrong) for _ in range(20))
            )
        async with aiohttp.ClientSession() as http:
            status, text = await fetch(http, metrics, headers=basic("prometheus", "s3cret"))
    codes = [code for code, _ in answers]
    assert set(codes) == {401, 429} and codes.count(401) >= 1
    assert status == 200
    series = parse_exposition(text)
    throttled = values(series, "tlsprobe_http_auth_attempts_total", outcome="throttled")
    assert throttled == [float(codes.count(429))]


async def test_reload_applies_the_web_config_a_removed_user_is_refused(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    web = web_config(tmp_path, {"prometheus": "s3cret", "former": "colleague"})
    path = config(tmp_path, ca_file, good, config_file=str(web))
    keeper, former = basic("prometheus", "s3cret"), basic("former", "colleague")
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        metrics = f"{exporter.url}/metrics"
        assert (await fetch(http, metrics, headers=former))[0] == 200  # now remembered
        web_config(tmp_path, {"prometheus": "s3cret"})
        assert (await fetch(http, f"{exporter.url}/-/reload", "POST", headers=keeper))[0] == 200
        assert (await fetch(http, metrics, headers=former))[0] == 401
        assert (await fetch(http, metrics, headers=keeper))[0] == 200


async def test_a_tls_change_on_reload_is_reported_loudly(
    tmp_path: Path,
    ca_file: Path,
    pki: Hierarchy,
    good: SmtpTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    web = web_config(tmp_path, {"prometheus": "s3cret"})
    path = config(tmp_path, ca_file, good, config_file=str(web))
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        leaf = pki.leaf(["localhost"])
        cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
        web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        with caplog.at_level(logging.WARNING, logger="tlsprobe"):
            status, _ = await fetch(
                http, f"{exporter.url}/-/reload", "POST", headers=basic("prometheus", "s3cret")
            )
        assert status == 200
        # Users were removed: the plain-HTTP endpoint no longer asks for a password.
        assert (await fetch(http, f"{exporter.url}/metrics"))[0] == 200
    assert any("change only on restart" in r.getMessage() for r in caplog.records)


# --- /probe ------------------------------------------------------------------------------------


async def test_probe_of_one_target_runs_at_most_once_per_interval(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good, probe_min_interval="1h")
    async with running(path) as (exporter, times), aiohttp.ClientSession() as http:
        await eventually(lambda: times.attempts >= 1, "the first scheduled probe")
        before = times.attempts
        url = f"{exporter.url}/probe?target=good"
        answers = await asyncio.gather(*(fetch(http, url) for _ in range(5)))
        for _ in range(5):
            answers.append(await fetch(http, url))
        _, text = await fetch(http, f"{exporter.url}/metrics")
    assert [status for status, _ in answers] == [200] * 10
    assert all("tlsprobe_probe_success" in body for _, body in answers)
    assert times.attempts - before == 1
    assert values(parse_exposition(text), "tlsprobe_probe_requests_shared_total") == [9.0]


async def test_probe_min_interval_zero_probes_every_time(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good, probe_min_interval=0)
    async with running(path) as (exporter, times), aiohttp.ClientSession() as http:
        await eventually(lambda: times.attempts >= 1, "the first scheduled probe")
        before = times.attempts
        for _ in range(3):
            assert (await fetch(http, f"{exporter.url}/probe?target=good"))[0] == 200
    assert times.attempts - before == 3


def test_the_connection_budget_keeps_descriptors_for_probes() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = connection_budget(1_000_000, 100)
    assert budget.lowered and budget.connections == soft - RESERVED_BASE - ACCEPT_BURST - 200
    assert connection_budget(50, 100).connections == 50


def test_the_budget_shares_the_descriptors_with_the_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receiver's sessions, refusals and accept burst were nobody's: with a 256-descriptor
    limit a connection flood from many addresses made accept() fail with EMFILE."""
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))
    base = RESERVED_BASE + ACCEPT_BURST + 2 * 10
    budget = connection_budget(1_000_000, 10, receiver_sessions=20)
    assert budget.receiver_sessions == 20 and not budget.receiver_lowered
    assert budget.connections == 1024 - base - receiver.descriptors(20)
    assert budget.connections + budget.reserved == 1024
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (270, 270))
    tight = connection_budget(1_000_000, 10, receiver_sessions=20)
    assert tight.receiver_lowered and tight.connections == MIN_CONNECTIONS
    assert tight.connections + base + receiver.descriptors(tight.receiver_sessions) == 270
    assert tight.receiver_sessions == 270 - base - MIN_CONNECTIONS - receiver.descriptors(0)
    assert connection_budget(1_000_000, 10).receiver_sessions == 0  # no receiver configured


async def _hold_receiver(port: int, source: str, held: list[asyncio.StreamWriter]) -> None:
    """A silent receiver connection from `source`: reads the greeting (220 or 421), holds."""
    with contextlib.suppress(OSError, TimeoutError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        held.append(writer)
        await asyncio.wait_for(reader.readline(), 5)


async def test_a_receiver_flood_from_many_addresses_shares_the_descriptors(
    tmp_path: Path, ca_file: Path, pki: Hierarchy, good: SmtpTestServer
) -> None:
    """Silent receiver connections from 400 addresses and idle web connections at once, under
    a 320-descriptor limit: the receiver's descriptors are reserved beside the probes' and the
    web port's, so nothing fails with EMFILE, scrapes are answered, the probe runs, and the
    configured relay (127.0.0.1) still delivers, taking a stranger's slot."""
    nofile = 320
    receiver_port = unused_port()
    targets = [{"name": "good", "host": HOST, "address": "127.0.0.1", "port": good.port}]
    data = exporter_config(
        tmp_path / "state", ca_file, targets, interval="3s", timeout="2s", concurrency=10
    )
    data["receiver"] = {
        "listen": f"127.0.0.1:{receiver_port}",
        "recipients": [CANARY_RCPT],
        "idle_eviction": "1h",
    }
    data["tenants"] = {
        "contoso": {
            "accepted_domains": ["contoso.test"],
            "senders": [{"name": "relay-1", "peers": ["127.0.0.1"]}],
        }
    }
    path = write_yaml(tmp_path / "tlsprobe.yml", data)
    log = tmp_path / "serve.log"
    leaf = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="relay")
    held: list[asyncio.StreamWriter] = []

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process, url = start_serve(path, log, low)
    url = url.removesuffix("/metrics")
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for round_ in range(4):
                sources = [f"127.0.{2 + round_}.{i}" for i in range(1, 101)]
                await asyncio.gather(
                    *(_hold_receiver(receiver_port, s, held) for s in sources),
                    *(_hold(host, int(port), partial=False, held=held) for _ in range(50)),
                )
                status, text = await fetch(http, f"{url}/metrics")
                assert status == 200, f"round {round_}"
                fds = open_fds(process.pid)
                assert fds < nofile - 8, f"round {round_}: {fds} descriptors open"
            await asyncio.to_thread(send_canary, receiver_port, certfile=certfile, keyfile=keyfile)
            series = await _scrape_until_probed(http, url, text)

            async def judged() -> bool:
                _, text = await fetch(http, f"{url}/metrics")
                return bool(values(parse_exposition(text), "tlsprobe_sender_status"))

            deadline = time.monotonic() + 20
            while not await judged():
                assert time.monotonic() < deadline, "the relay's session was not judged"
                await asyncio.sleep(0.3)
    finally:
        for writer in held:
            writer.close()
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert values(series, "tlsprobe_probe_success", target="good") == [1.0]
    assert values(series, "tlsprobe_receiver_session_limit") == [20.0]
    assert values(series, "tlsprobe_receiver_refused_sessions_total")[0] > 0
    assert "Too many open files" not in log.read_text()

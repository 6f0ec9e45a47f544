"""The flood fleets: connections, wrong passwords and rotating large certificates, all at once.

`tlsprobe serve` runs as a child process (so its descriptors and memory are its own, not the
flood's) with basic auth, an open-file limit of `NOFILE` and `web.probe_min_interval: 0`, and
watches one loopback SMTP server. While it runs:
- the connection fleet holds `CONNECTIONS` idle and slow-header connections, reopening each one
  the exporter closes;
- the auth fleet is `AUTH_CLIENTS` clients, each on its own loopback address, sending wrong
  passwords in a loop;
- the rotating fleet gives the SMTP server a new 45 KiB certificate before every `/probe`;
- a scraper with the right password scrapes `/metrics` twice a second.
Every second `sample` records the exporter's open descriptors, RSS, history database size
(with its WAL) and the scrapes answered so far. Used by tests/reliability/test_flood_soak.py
(a short run in CI) and `python -m benchmarks.soak --floods` (as long as you like).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bcrypt

from tests.reliability.harness import basic, exporter_config, open_fds, rss_bytes, write_yaml
from tests.support.exporter import fetch, start_serve
from tests.support.pki import Hierarchy, KeyKind, make_hierarchy
from tests.support.servers import ServerTls, SmtpTestServer

HOST = "mail.contoso.test"
NOFILE = 512
CONNECTIONS = 500
AUTH_CLIENTS = 48
PASSWORD = "s3cret"


@dataclass(frozen=True)
class Sample:
    at: float
    fds: int
    rss: int
    db_bytes: int
    scrapes_ok: int
    scrapes_failed: int
    probes: int

    wal_bytes: int = 0
    """Of `db_bytes`, the write-ahead log's."""

    def line(self) -> str:
        return (
            f"{self.at:6.1f} s  fds {self.fds:4d}  rss {self.rss / 2**20:6.1f} MiB"
            f"  db {self.db_bytes / 2**10:7.0f} KiB (WAL {self.wal_bytes / 2**10:.0f})"
            f"  scrapes {self.scrapes_ok} ok {self.scrapes_failed} failed  /probe {self.probes}"
        )


@dataclass
class Counters:
    scrapes_ok: int = 0
    scrapes_failed: int = 0
    failures: list[str] = field(default_factory=list)
    probes: int = 0
    refused_guesses: int = 0


def _nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def big_leaf_tls(pki: Hierarchy, serial: int) -> ServerTls:
    names = [HOST, *(f"n{serial:05d}-{i:04d}.rotating.contoso.test" for i in range(1500))]
    leaf = pki.leaf(names, key=KeyKind.EC_P256)
    return ServerTls(pki.chain(leaf), leaf.key)


@contextlib.asynccontextmanager
async def flood_target(
    tmp: Path,
) -> AsyncIterator[tuple[str, int, Path, SmtpTestServer, Hierarchy]]:
    """The SMTP server and a running `tlsprobe serve`: (url, pid, state dir, server, pki)."""
    pki = make_hierarchy("Flood")
    (tmp / "ca.pem").write_bytes(pki.ca_pem)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp / "web.yml").write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    async with SmtpTestServer(big_leaf_tls(pki, 0)) as server:
        target = {"name": "rotating", "host": HOST, "address": "127.0.0.1", "port": server.port}
        web = {"config_file": str(tmp / "web.yml"), "probe_min_interval": 0}
        data = exporter_config(
            tmp / "state", tmp / "ca.pem", [target], interval="30s", retries=0, web=web
        )
        process, url = start_serve(
            write_yaml(tmp / "tlsprobe.yml", data), tmp / "serve.log", _nofile
        )
        try:
            yield url.removesuffix("/metrics"), process.pid, tmp / "state", server, pki
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout is not None:
                process.stdout.close()


async def _hold_one(host: str, port: int, partial: bool, stop: asyncio.Event) -> None:
    """One flood connection, reopened whenever the exporter closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        if partial:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: tlsprobe\r\nX-Slow: ")
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        await asyncio.sleep(0.1)  # a flood, not a busy loop on the shared test machine


async def connection_fleet(url: str, stop: asyncio.Event) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    await asyncio.gather(
        *(_hold_one(host, int(port), i % 2 == 1, stop) for i in range(CONNECTIONS))
    )


async def auth_fleet(url: str, stop: asyncio.Event, counters: Counters) -> None:
    async def client(i: int) -> None:
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.4.{i + 1}", 0))
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(f"{url}/metrics", headers=basic("x", f"guess{i}")) as r:
                        counters.refused_guesses += r.status in (401, 429)
                await asyncio.sleep(0.1)

    await asyncio.gather(*(client(i) for i in range(AUTH_CLIENTS)))


async def rotating_fleet(
    url: str, server: SmtpTestServer, pki: Hierarchy, stop: asyncio.Event, counters: Counters
) -> None:
    right = basic("prometheus", PASSWORD)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        serial = 0
        while not stop.is_set():
            serial += 1
            server.present(await asyncio.to_thread(big_leaf_tls, pki, serial))
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(f"{url}/probe?target=rotating", headers=right) as response:
                    await response.read()
                    counters.probes += response.status == 200


async def scraper(url: str, stop: asyncio.Event, counters: Counters) -> None:
    right = basic("prometheus", PASSWORD)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while not stop.is_set():
            try:
                async with http.get(f"{url}/metrics", headers=right) as response:
                    await response.read()
                    ok = response.status == 200
                    detail = f"status {response.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                ok, detail = False, type(exc).__name__
            if ok:
                counters.scrapes_ok += 1
            else:
                counters.scrapes_failed += 1
                counters.failures.append(detail)
            await asyncio.sleep(0.5)


async def _first_scrape(url: str) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        status, _ = await fetch(http, f"{url}/metrics", headers=basic("prometheus", PASSWORD))
    assert status == 200, status


def db_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob("history.sqlite3*") if p.is_file())


def wal_bytes(state: Path) -> int:
    wal = state / "history.sqlite3-wal"
    return wal.stat().st_size if wal.is_file() else 0


async def run_floods(
    tmp: Path, seconds: float, report: Callable[[Sample], Awaitable[None] | None] | None = None
) -> tuple[list[Sample], Counters]:
    """All fleets at once for `seconds`; a sample a second."""
    counters = Counters()
    samples: list[Sample] = []
    async with flood_target(tmp) as (url, pid, state, server, pki):
        # The scraper and the prober authenticate before the floods start, as Prometheus
        # does before an attack (test_http_floods.py covers a first scrape during one).
        await _first_scrape(url)
        stop = asyncio.Event()
        fleets = [
            asyncio.create_task(connection_fleet(url, stop)),
            asyncio.create_task(auth_fleet(url, stop, counters)),
            asyncio.create_task(rotating_fleet(url, server, pki, stop, counters)),
            asyncio.create_task(scraper(url, stop, counters)),
        ]
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1.0)
                sample = Sample(
                    time.monotonic() - started,
                    open_fds(pid),
                    rss_bytes(pid),
                    db_bytes(state),
                    counters.scrapes_ok,
                    counters.scrapes_failed,
                    counters.probes,
                    wal_bytes(state),
                )
                samples.append(sample)
                if report is not None:
                    outcome = report(sample)
                    if outcome is not None:
                        await outcome
        finally:
            stop.set()
            await asyncio.wait(fleets, timeout=15)
            for task in fleets:
                task.cancel()
    return samples, counters


def flood_problems(samples: list[Sample], counters: Counters) -> list[str]:
    """What a flood run must show: scrapes answered, descriptors, memory and database bounded."""
    problems: list[str] = []
    if counters.scrapes_failed:
        problems.append(f"{counters.scrapes_failed} scrapes failed: {counters.failures[:5]}")
    if not counters.scrapes_ok or counters.probes < 3:
        problems.append(f"too little work: {counters.scrapes_ok} scrapes, {counters.probes} probes")
    if max(s.fds for s in samples) >= NOFILE - 32:
        problems.append(f"descriptors reached {max(s.fds for s in samples)} of {NOFILE}")
    # History keeps 16 certificates per endpoint, about 64 KiB of PEM each.
    if max(s.db_bytes for s in samples) > 8 << 20:
        problems.append(f"history database grew to {max(s.db_bytes for s in samples)} bytes")
    warm = samples[len(samples) // 3]
    growth = samples[-1].rss - warm.rss
    if growth > 64 << 20:
        problems.append(f"RSS grew {growth / 2**20:.1f} MiB after warm-up")
    return problems

"""Growth: a server with a new large certificate on every connection, probed again and again.

One loopback SMTP server presents a fresh 45 KiB leaf (1,500 SAN names) before every `/probe`
(with `web.probe_min_interval: 0`, so each request really probes). The verdict caches must stay
within their byte budgets (lowered here so that 40 probes cross them) and the history database
within its per-endpoint policy: the first certificate and the most recent others, the newest
change events, the certificates no endpoint keeps deleted, the change counter still complete.
Without the bounds every probe added a cache entry and a certificate row for good.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.reliability.harness import exporter_config, running, write_yaml
from tests.support.exporter import fetch
from tests.support.pki import Hierarchy, Issued, KeyKind
from tests.support.servers import ServerTls, SmtpTestServer
from tlsprobe.exporter.history import retention, store
from tlsprobe.probe.x509 import evaluate, trust
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.bytecache import ByteLRU

pytestmark = pytest.mark.slow

HOST = "mail.contoso.test"
PROBES = 40
KEEP = 6
EVENTS = 10
CACHE = 1 << 20


def big_leaf(pki: Hierarchy, serial: int) -> Issued:
    names = [HOST, *(f"n{serial:03d}-{i:04d}.rotating.contoso.test" for i in range(1500))]
    return pki.leaf(names, key=KeyKind.EC_P256)


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(retention, "MAX_CERTIFICATES_PER_ENDPOINT", KEEP)
    monkeypatch.setattr(retention, "MAX_EVENTS_PER_ENDPOINT", EVENTS)
    caches: list[ByteLRU[Any, Any]] = [
        evaluate._STATIC,
        trust._TRUST_CACHE._entries,
        certs._FACTS,
    ]
    for cache in caches:
        monkeypatch.setattr(cache, "max_bytes", CACHE)
        cache.clear()
    yield
    for cache in caches:
        cache.clear()


@pytest.fixture
async def rotating(pki: Hierarchy) -> AsyncIterator[tuple[SmtpTestServer, list[Issued]]]:
    first = big_leaf(pki, 0)
    served = [first]
    async with SmtpTestServer(ServerTls(pki.chain(first), first.key)) as server:
        yield server, served


def db_figures(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        count = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("certificate", "served", "change_event")
        }
        count["changes_total"] = conn.execute("SELECT changes_total FROM endpoint").fetchone()[0]
        return count
    finally:
        conn.close()


def kept_fingerprints(db: Path) -> set[str]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT fingerprint FROM served")}
    finally:
        conn.close()


@pytest.mark.usefixtures("small_bounds")
async def test_a_new_large_certificate_on_every_probe_keeps_memory_and_history_bounded(
    tmp_path: Path,
    ca_file: Path,
    pki: Hierarchy,
    rotating: tuple[SmtpTestServer, list[Issued]],
) -> None:
    server, served = rotating
    target = {"name": "rot", "host": HOST, "address": "127.0.0.1", "port": server.port}
    data = exporter_config(
        tmp_path / "state", ca_file, [target], interval="1h", retries=0, timeout="5s"
    )
    data["web"]["probe_min_interval"] = 0
    path = write_yaml(tmp_path / "tlsprobe.yml", data)
    db = tmp_path / "state" / store.HISTORY_FILENAME
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        for serial in range(1, PROBES + 1):
            leaf = big_leaf(pki, serial)
            served.append(leaf)
            server.present(ServerTls(pki.chain(leaf), leaf.key))
            status, _ = await fetch(http, f"{exporter.url}/probe?target=rot")
            assert status == 200
            assert evaluate._STATIC.bytes <= CACHE and certs._FACTS.bytes <= CACHE
        history = exporter.history
        assert history is not None
        history.close()  # everything written, the WAL checkpointed
        figures = db_figures(db)
        fingerprints = kept_fingerprints(db)
    assert len(served[1].der) > 40_000
    assert len(evaluate._STATIC) < PROBES and len(certs._FACTS) < PROBES
    assert figures["served"] == KEEP and figures["certificate"] == KEEP
    assert figures["change_event"] == EVENTS
    # The scheduled first probe may or may not have come before the first /probe.
    assert figures["changes_total"] in (PROBES, PROBES - 1)
    # Kept: the first certificate the endpoint served and the most recent others.
    seen = [hashlib.sha256(leaf.der).hexdigest() for leaf in served]
    first = seen[0] if seen[0] in fingerprints else seen[1]
    assert fingerprints == {first, *seen[-(KEEP - 1) :]}
    # 6 certificates of about 60 KiB as PEM, and not the 40 that were seen.
    assert db.stat().st_size < KEEP * 120_000 + 200_000

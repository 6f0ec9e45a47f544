"""Crash safety: kill -9 of `tlsprobe serve` while it writes history loses nothing it reported.

Endpoints whose certificate alternates on every connection make every probe a leaf change, so
the exporter writes a transaction about every second per endpoint. The exporter runs as a child
process and is killed with SIGKILL at a random moment, several times. After each kill the
database must open, pass SQLite's integrity check and hold a consistent history: per endpoint,
as many change events as `changes_total`, each event continuing the previous one (no duplicate,
no gap), the current fingerprint that of the last event, and every change the exporter had
already reported on /metrics before the kill. Each restart must carry the counters on.
"""

from __future__ import annotations

import random
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.fleet import HOST, FleetEndpoint, FleetProcess
from tests.reliability.harness import (
    check_consistent,
    exporter_config,
    fleet_targets,
    parse_exposition,
    read_history,
    write_yaml,
)
from tests.support.exporter import start_serve
from tests.support.wait import poll
from tlsprobe.exporter.history.store import HistoryStore

pytestmark = pytest.mark.slow


KILLS = 3
ENDPOINTS = 6
STARTUP = 20.0


def scrape_changes(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        series = parse_exposition(response.read().decode())
    return {
        dict(labels)["target"]: value
        for (name, labels), value in series.items()
        if name == "tlsprobe_cert_changes_total"
    }


def wait_for_changes_beyond(url: str, floor: dict[str, int], names: list[str]) -> dict[str, float]:
    """Scrape until every endpoint has reported a change newer than `floor`."""

    def beyond(changes: dict[str, float]) -> bool:
        return all(changes.get(n, -1) > floor.get(n, 0) for n in names)

    changes = poll(lambda: scrape_changes(url), beyond, timeout=STARTUP, every=0.1)
    assert beyond(changes), f"no new changes reported within {STARTUP} s: {floor}"
    return changes


def test_kill_9_while_writing_history_loses_nothing(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    state = tmp_path / "state"
    db = state / "history.sqlite3"
    log = tmp_path / "serve.log"
    rng = random.Random(20240611)
    with FleetProcess(per_kind=ENDPOINTS, ca_out=ca, kinds=["alternating"]) as endpoints:
        names = [e.name for e in endpoints]
        config = write_yaml(tmp_path / "tlsprobe.yml", _config(state, ca, endpoints))
        floor: dict[str, int] = {}
        for _ in range(KILLS):
            process, url = start_serve(config, log)
            try:
                reported = wait_for_changes_beyond(url, floor, names)
                time.sleep(rng.uniform(0.0, 1.0))  # land the kill anywhere in a write cycle
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()
                assert process.stdout is not None
                process.stdout.close()
            history = read_history(db)
            check_consistent(history)
            assert set(history) == set(names)
            for name in names:
                # Everything /metrics showed was on disk, and nothing went backwards.
                assert history[name].changes_total >= reported[name], name
                assert history[name].changes_total >= floor.get(name, 0), name
            floor = {name: history[name].changes_total for name in names}
        # A clean restart picks the counters up from where the last kill left them.
        process, url = start_serve(config, log)
        try:
            reported = scrape_changes(url)
            assert all(reported.get(n, 0) >= floor[n] for n in names if n in reported)
            wait_for_changes_beyond(url, floor, names)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert process.stdout is not None
            process.stdout.close()
    history = read_history(db)
    check_consistent(history)
    assert all(history[n].changes_total > floor[n] for n in names)
    # The store itself reopens the database and agrees with it.
    store = HistoryStore(db)
    try:
        for e in endpoints:
            key = ("", e.name, HOST, e.address, e.port)
            drift = store.drift(key)
            assert drift is not None and drift.changes_total == history[e.name].changes_total
            assert len(store.change_events(key)) == drift.changes_total
    finally:
        store.close()
    assert "Traceback" not in log.read_text()


def _config(state: Path, ca: Path, endpoints: list[FleetEndpoint]) -> dict[str, object]:
    return exporter_config(
        state, ca, fleet_targets(endpoints), interval="1s", timeout="800ms", retries=0
    )

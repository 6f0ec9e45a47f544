"""The certificate history: drift counting, restarts and kill -9, a full or read-only disk.

Every test works on a database under `tmp_path`. A full disk is simulated with SQLite's own
`max_page_count` and a read-only one with `query_only`, because the CI runs as root and
`chmod` does not stop root.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.pki import Hierarchy, make_intermediate
from tlsprobe.cli.history import format_timeline, history_command
from tlsprobe.exporter.history import db as store_db
from tlsprobe.exporter.history import retention
from tlsprobe.exporter.history.store import (
    Drift,
    EndpointKey,
    HistoryStore,
    StateError,
    StoredCert,
    TimelineEntry,
    history_path,
)
from tlsprobe.model import CertFacts, ChangeClass, ChangeReason, Check, CheckName, Status
from tlsprobe.probe.x509.facts import facts_from_der

KEY: EndpointKey = ("contoso", "relay", "relay.contoso.test", "192.0.2.10", 25)
OTHER: EndpointKey = ("contoso", "relay", "relay.contoso.test", "192.0.2.11", 25)
T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]

Leaves = tuple[CertFacts, CertFacts]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def leaves(pki: Hierarchy) -> Leaves:
    """Two distinct leaves for the same name: a renewal."""
    first = pki.leaf(("relay.contoso.test", "contoso.test"))
    second = pki.leaf(("relay.contoso.test", "contoso.test"))
    return facts_from_der(first.der), facts_from_der(second.der)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return history_path(tmp_path / "state")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def open_store(db: Path, clock: FakeClock, **kwargs: float) -> HistoryStore:
    return HistoryStore(db, clock=clock, **kwargs)


def disk_rows(db: Path, query: str) -> list[tuple[object, ...]]:
    """Read the database through a separate connection: what is really on disk."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


# --- drift --------------------------------------------------------------------------------------


def test_first_sighting_is_not_a_change(db: Path, clock: FakeClock, leaves: Leaves) -> None:
    a, _ = leaves
    history = open_store(db, clock)
    assert history.drift(KEY) is None
    assert history.observe(KEY, a, T0) == Drift(a.sha256, T0, 0)
    assert history.drift(KEY) == Drift(a.sha256, T0, 0)
    assert history.change_events() == []
    assert history.writable
    history.close()
    assert db.parent.is_dir()


def test_same_certificate_again_only_moves_last_seen(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, _ = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    assert history.observe(KEY, a, T0 + 300) == Drift(a.sha256, T0, 0)
    [entry] = history.timeline("relay.contoso.test")
    assert (entry.first_seen, entry.last_seen) == (T0, T0 + 300)
    assert history.change_events() == []
    history.close()


def test_a_b_a_counts_two_changes_with_two_events(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    assert history.observe(KEY, b, T0 + 60) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert history.observe(KEY, a, T0 + 120) == Drift(a.sha256, T0 + 120, 2, stored(b))
    assert history.change_events(KEY) == [
        (KEY, T0 + 60, a.sha256, b.sha256),
        (KEY, T0 + 120, b.sha256, a.sha256),
    ]
    seen = {e.fingerprint: (e.first_seen, e.last_seen) for e in history.timeline("relay")}
    assert seen == {a.sha256: (T0, T0 + 120), b.sha256: (T0 + 60, T0 + 60)}
    # The PEM is stored once per fingerprint, however often the certificate comes back.
    assert disk_rows(db, "SELECT count(*) FROM certificate") == [(2,)]
    history.close()


def test_endpoints_are_counted_separately(db: Path, clock: FakeClock, leaves: Leaves) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    history.observe(OTHER, b, T0)
    history.observe(KEY, b, T0 + 60)
    assert history.drift(KEY) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert history.drift(OTHER) == Drift(b.sha256, T0, 0)
    assert [e[0] for e in history.change_events()] == [KEY]
    history.close()


def test_restart_keeps_drift_and_counters(db: Path, clock: FakeClock, leaves: Leaves) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    history.observe(KEY, b, T0 + 60)
    history.close()
    history.close()  # idempotent

    # The certificate before the change comes back too: the drift page names it.
    reopened = open_store(db, clock)
    assert reopened.drift(KEY) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert reopened.observe(KEY, b, T0 + 120) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert reopened.observe(KEY, a, T0 + 180) == Drift(a.sha256, T0 + 180, 2, stored(b))
    assert len(reopened.change_events(KEY)) == 2
    reopened.close()


def test_reopen_without_close_sees_every_completed_write(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    crashed = open_store(db, clock)
    crashed.observe(KEY, a, T0)
    crashed.observe(KEY, b, T0 + 60)
    survivor = open_store(db, clock)
    assert survivor.drift(KEY) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert survivor.change_events(KEY) == [(KEY, T0 + 60, a.sha256, b.sha256)]
    survivor.close()
    crashed.close()


def test_last_seen_updates_are_coalesced_but_changes_are_not(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock, flush_interval=60)
    last_seen = "SELECT max(last_seen) FROM served"
    history.observe(KEY, a, T0)
    history.observe(KEY, a, T0 + 10)
    assert disk_rows(db, last_seen) == [(T0,)]
    clock.now += 61
    history.observe(KEY, a, T0 + 70)
    assert disk_rows(db, last_seen) == [(T0 + 70,)]
    history.observe(KEY, b, T0 + 80)
    assert disk_rows(db, "SELECT count(*) FROM change_event") == [(1,)]
    history.observe(KEY, b, T0 + 90)
    history.close()
    assert disk_rows(db, last_seen) == [(T0 + 90,)]


def test_forget_hides_an_endpoint_until_seen_again(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    history.observe(KEY, b, T0 + 60)
    history.forget([KEY])
    assert history.drift(KEY) is None
    assert len(history.timeline("relay.contoso.test")) == 2  # history stays
    # Seen again (re-added to the configuration): the counter goes on from the database.
    assert history.observe(KEY, a, T0 + 120) == Drift(a.sha256, T0 + 120, 2, stored(b))
    history.close()


# --- kill -9 ------------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from tlsprobe.probe.x509.facts import facts_from_der
from tlsprobe.exporter.history.store import HistoryStore

db, first, second = sys.argv[1:4]
leaves = [facts_from_der(Path(p).read_bytes()) for p in (first, second)]
key = ("contoso", "relay", "relay.contoso.test", "192.0.2.10", 25)
history = HistoryStore(Path(db), flush_interval=0)
drift = history.drift(key)
at = drift.since + 1 if drift else 1000.0
turn = 1 if drift is not None and drift.fingerprint == leaves[0].sha256 else 0
print("ready", flush=True)
while True:
    history.observe(key, leaves[turn % 2], at)
    at += 1
    turn += 1
"""


def assert_consistent(db: Path, *, every_second: bool = False) -> int:
    history = HistoryStore(db)
    try:
        drift = history.drift(KEY)
        events = history.change_events(KEY)
    finally:
        history.close()
    assert drift is not None
    # The database keeps the newest MAX_EVENTS_PER_ENDPOINT events; changes_total counts all.
    assert len(events) == min(drift.changes_total, retention.MAX_EVENTS_PER_ENDPOINT)
    times = [at for _, at, _, _ in events]
    assert times == sorted(set(times)), "duplicate or out-of-order change events"
    if every_second:  # a change each second: a lost event leaves a gap among the kept ones
        assert [at - times[0] for at in times] == list(range(len(times))), "lost change events"
    for before, after in itertools.pairwise(events):
        assert after[2] == before[3], "change events do not chain old -> new"
    if events:
        assert (events[-1][1], events[-1][3]) == (drift.since, drift.fingerprint)
    return drift.changes_total


@pytest.mark.slow
def test_kill_9_while_writing_never_loses_or_duplicates(
    db: Path, tmp_path: Path, leaves: Leaves
) -> None:
    paths = []
    for i, leaf in enumerate(leaves):
        paths.append(tmp_path / f"leaf{i}.der")
        paths[-1].write_bytes(leaf.der)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(9)
    totals = []
    for _ in range(6):
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), *map(str, paths)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.02, 0.12))
            child.send_signal(signal.SIGKILL)
            child.wait()
        totals.append(assert_consistent(db, every_second=True))
    assert totals == sorted(totals)
    assert totals[-1] > 10  # the children really were writing when killed


# --- full or read-only disk ---------------------------------------------------------------------


def fill_disk(history: HistoryStore) -> None:
    """Cap the file at its current size: the next page it needs makes SQLite report disk full."""
    pages = history._conn.execute("PRAGMA page_count").fetchone()[0]
    history._conn.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(history: HistoryStore) -> None:
    history._conn.execute("PRAGMA max_page_count = 1073741823")


def test_disk_full_keeps_drift_in_memory_and_recovers(
    db: Path, clock: FakeClock, pki: Hierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tlsprobe.exporter.store")
    history = open_store(db, clock, retry_interval=5)
    renewals = [facts_from_der(pki.leaf(("relay.contoso.test",)).der) for _ in range(40)]
    history.observe(KEY, renewals[0], T0)
    fill_disk(history)
    at = T0
    for count, leaf in enumerate(renewals[1:], start=1):
        at += 60
        expected = Drift(leaf.sha256, at, count, stored(renewals[count - 1]))
        assert history.observe(KEY, leaf, at) == expected
        if not history.writable:
            break
    assert not history.writable, "the capped database never filled up"
    assert history.write_errors == 1
    failed_at = count

    # Further changes while full: kept in memory, retried only every retry_interval.
    for leaf in renewals[failed_at + 1 : failed_at + 4]:
        at += 60
        history.observe(KEY, leaf, at)
    assert history.write_errors == 1
    clock.now += 5
    history.observe(KEY, renewals[0], at + 60)
    assert history.write_errors == 2
    assert history.drift(KEY) == Drift(
        renewals[0].sha256, at + 60, failed_at + 4, stored(renewals[failed_at + 3])
    )
    assert len(history.change_events(KEY)) == failed_at + 4  # pending ones included
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # on the transition only
    assert str(db) in warnings[0].getMessage()

    free_disk(history)
    clock.now += 5
    history.observe(KEY, renewals[0], at + 120)
    assert history.writable
    assert any("writable again" in r.getMessage() for r in caplog.records)
    history.close()
    assert assert_consistent(db) == failed_at + 4


def test_read_only_disk_at_runtime_is_reported_not_raised(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock, retry_interval=5)
    history.observe(KEY, a, T0)
    history._conn.execute("PRAGMA query_only = ON")
    assert history.observe(KEY, b, T0 + 60) == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert not history.writable
    assert history.write_errors == 1
    history._conn.execute("PRAGMA query_only = OFF")
    clock.now += 5
    history.observe(KEY, b, T0 + 120)
    assert history.writable
    assert disk_rows(db, "SELECT changes_total FROM endpoint") == [(1,)]
    history.close()


def test_read_only_database_at_start_is_a_state_error(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, leaves: Leaves
) -> None:
    open_store(db, clock).close()
    real_connect = store_db._connect

    def read_only_connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
        conn = real_connect(path, read_only=read_only)
        conn.execute("PRAGMA query_only = ON")
        return conn

    monkeypatch.setattr(store_db, "_connect", read_only_connect)
    with pytest.raises(StateError, match="cannot be written") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


# --- unusable files -----------------------------------------------------------------------------


def test_random_bytes_are_a_state_error_naming_the_file(db: Path, clock: FakeClock) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(random.Random(1).randbytes(16384))
    with pytest.raises(StateError, match="not an SQLite database") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


def test_damaged_pages_are_a_state_error(db: Path, clock: FakeClock, leaves: Leaves) -> None:
    history = open_store(db, clock)
    for i in range(30):
        history.observe((*KEY[:3], f"192.0.2.{i}", 25), leaves[i % 2], T0)
    history.close()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page:-page] = random.Random(2).randbytes(len(data) - 2 * page)
    db.write_bytes(bytes(data))
    with pytest.raises(StateError) as info:
        open_store(db, clock)
    assert str(db) in str(info.value)
    assert "corrupt" in str(info.value) or "malformed" in str(info.value)


def test_a_directory_in_place_of_the_file_is_a_state_error(db: Path, clock: FakeClock) -> None:
    db.mkdir(parents=True)
    with pytest.raises(StateError, match="is a directory") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


def test_a_state_dir_that_cannot_be_created_is_a_state_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    (tmp_path / "state").write_text("a file where the directory should be\n")
    path = history_path(tmp_path / "state" / "sub")
    with pytest.raises(StateError, match="cannot create the state directory"):
        open_store(path, clock)


def test_another_sqlite_database_is_refused(db: Path, clock: FakeClock) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not a tlsprobe history"):
        open_store(db, clock)


def test_a_newer_schema_is_refused(db: Path, clock: FakeClock) -> None:
    open_store(db, clock).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="newer tlsprobe"):
        open_store(db, clock)


# --- timeline -----------------------------------------------------------------------------------


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def entry(address: str, fingerprint: str, first: str, last: str, **kw: object) -> TimelineEntry:
    fields: dict[str, object] = {
        "tenant": "contoso",
        "target": "relay",
        "host": "relay.contoso.test",
        "address": address,
        "port": 25,
        "fingerprint": fingerprint,
        "subject": "CN=relay.contoso.test",
        "issuer": "CN=Contoso CA",
        "names": ("relay.contoso.test", "contoso.test"),
        "not_after": ts("2024-03-01 00:00"),
        "first_seen": ts(first),
        "last_seen": ts(last),
    }
    return TimelineEntry(**(fields | kw))  # type: ignore[arg-type]


def test_format_timeline_one_block_per_endpoint_with_current_marker() -> None:
    entries = [
        entry("192.0.2.10", "aa" * 32, "2024-01-01 10:00", "2024-02-20 10:00"),
        entry("192.0.2.10", "bb" * 32, "2024-01-20 08:30", "2024-01-21 08:30", names=()),
        entry("2001:db8::1", "cc" * 32, "2024-01-05 00:00", "2024-02-20 00:00"),
    ]
    text = format_timeline(entries, now=ts("2024-02-20 12:00"))
    assert text.splitlines() == [
        "192.0.2.10:25  relay.contoso.test  (target contoso/relay)",
        "  2024-01-01 10:00:00Z -> 2024-02-20 10:00:00Z  aaaaaaaaaaaaaaaa  CN=relay.contoso.test"
        "  names=relay.contoso.test,contoso.test  not_after=2024-03-01 (in 10 d)  (current)",
        "  2024-01-20 08:30:00Z -> 2024-01-21 08:30:00Z  bbbbbbbbbbbbbbbb  CN=relay.contoso.test"
        "  names=-  not_after=2024-03-01 (in 10 d)",
        "[2001:db8::1]:25  relay.contoso.test  (target contoso/relay)",
        "  2024-01-05 00:00:00Z -> 2024-02-20 00:00:00Z  cccccccccccccccc  CN=relay.contoso.test"
        "  names=relay.contoso.test,contoso.test  not_after=2024-03-01 (in 10 d)  (current)",
    ]
    expired = format_timeline(entries[:1], now=ts("2024-03-04 00:00"))
    assert "not_after=2024-03-01 (expired 3 d ago)" in expired
    # A certificate whose dates cannot be read is stored with the placeholder 0.0.
    unreadable = format_timeline([replace(entries[0], not_after=0.0)], now=ts("2024-03-04"))
    assert "not_after=(unreadable)" in unreadable and "1970" not in unreadable


def test_history_prints_a_rollback_as_it_was(
    tmp_path: Path, clock: FakeClock, leaves: Leaves, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replaced and later restored certificate: three spans and both changes, not one span
    "first -> last (current)" that hides the replacement."""
    a, b = leaves
    history = open_store(history_path(tmp_path), clock)
    history.observe(KEY, a, T0)
    history.observe(KEY, b, T0 + 60)
    history.observe(KEY, a, T0 + 120)
    history.observe(KEY, a, T0 + 180)
    history.close()
    assert history_command(tmp_path, "relay.contoso.test") == 0
    lines = capsys.readouterr().out.splitlines()
    fingerprints = [line.split()[5] for line in lines if line.startswith("  20")]
    assert fingerprints == [a.sha256[:16], b.sha256[:16], a.sha256[:16]]
    assert lines[3].endswith("(current)  (rollback)")
    assert "(current)" not in lines[1] + lines[2]
    assert lines[4] == "  changes:"
    # Both leaves were issued in the same second: neither expires later, so neither change is
    # a clean renewal, and the history says why.
    assert lines[5].endswith(
        f"{a.sha256[:16]} -> {b.sha256[:16]}  risky: expiry not later:"
        f" {a.not_after:%Y-%m-%d} → {b.not_after:%Y-%m-%d}"
    )
    assert lines[6].endswith(
        f"{b.sha256[:16]} -> {a.sha256[:16]}  (rollback to a certificate served before)"
        f"  risky: expiry not later: {b.not_after:%Y-%m-%d} → {a.not_after:%Y-%m-%d}"
    )
    assert len(lines) == 7


def test_timeline_filters_by_host_target_and_tenant(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    history.observe(OTHER, b, T0 + 1)
    history.observe(("fabrikam", "mx", "mx.fabrikam.test", "192.0.2.99", 25), a, T0 + 2)
    assert [e.address for e in history.timeline("RELAY.contoso.test.")] == [
        "192.0.2.10",
        "192.0.2.11",
    ]
    assert [e.host for e in history.timeline("mx")] == ["mx.fabrikam.test"]
    assert history.timeline("relay.contoso.test", tenant="fabrikam") == []
    [row] = history.timeline("mx.fabrikam.test")
    assert (row.subject, row.issuer, row.names) == (a.subject, a.issuer, a.dns_names)
    assert row.not_after == a.not_after.timestamp()
    history.close()


def test_history_command(
    tmp_path: Path, clock: FakeClock, leaves: Leaves, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert history_command(state, "relay.contoso.test") == 3
    assert "no history database" in capsys.readouterr().err

    a, b = leaves
    history = open_store(history_path(state), clock)
    history.observe(KEY, a, T0)
    history.observe(KEY, b, T0 + 86400)
    history.close()
    assert history_command(state, "relay.contoso.test") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "192.0.2.10:25  relay.contoso.test  (target contoso/relay)"
    assert a.sha256[:16] in out[1]
    assert b.sha256[:16] in out[2]
    assert out[2].endswith("(current)")
    assert not out[1].endswith("(current)")

    assert history_command(state, "unknown.test") == 3
    assert "nothing recorded for unknown.test" in capsys.readouterr().err


def stored(leaf: CertFacts) -> StoredCert:
    return StoredCert(
        leaf.sha256, leaf.subject, leaf.issuer, leaf.dns_names, leaf.not_after.timestamp()
    )


def test_the_write_ahead_log_is_cut_back_after_a_checkpoint(db: Path, clock: FakeClock) -> None:
    """SQLite keeps a WAL file at the largest size it ever reached unless told otherwise: one
    8 MiB transaction, SQLite's own checkpoint after it, then the next write cuts it back."""
    history = open_store(db, clock)
    conn = history._conn
    conn.execute("CREATE TABLE scratch (b BLOB)")
    conn.execute("INSERT INTO scratch VALUES (zeroblob(8 << 20))")
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 8 << 20
    conn.execute("DELETE FROM scratch")
    conn.execute("INSERT INTO scratch VALUES (1)")
    assert wal.stat().st_size <= store_db.WAL_SIZE_LIMIT
    history.close()


# --- the change classifier's inputs across restarts ------------------------------------------


def _checks(**statuses: Status) -> tuple[Check, ...]:
    return tuple(Check(CheckName(name), status, "") for name, status in statuses.items())


def test_a_change_is_classified_against_the_verdict_kept_across_a_restart(
    db: Path, clock: FakeClock, pki: Hierarchy
) -> None:
    """The old leaf's verdict comes back from the database: a hostname check that already
    failed on the old certificate is not newly failing after a restart."""
    old = facts_from_der(pki.leaf(("relay.contoso.test",), days=60).der)
    new = facts_from_der(pki.leaf(("relay.contoso.test",), days=90).der)
    failing = _checks(chain_trusted=Status.OK, hostname=Status.CRITICAL)
    history = open_store(db, clock)
    history.observe(KEY, old, T0, failing)
    history.close()

    reopened = open_store(db, clock)
    drift = reopened.observe(KEY, new, T0 + 60, failing)
    assert drift.change is not None and drift.change.change is ChangeClass.RENEWAL
    reopened.close()
    again = open_store(db, clock)
    kept = again.drift(KEY)
    assert kept is not None and kept.change == drift.change
    again.close()


def test_a_risky_change_keeps_its_reasons_and_sentence(
    db: Path, clock: FakeClock, pki: Hierarchy
) -> None:
    old = facts_from_der(pki.leaf(("relay.contoso.test", "smtp.contoso.test"), days=60).der)
    new = facts_from_der(pki.leaf(("relay.contoso.test",), days=90, client_auth=False).der)
    history = open_store(db, clock)
    history.observe(KEY, old, T0, _checks(chain_trusted=Status.OK))
    drift = history.observe(KEY, new, T0 + 60, _checks(chain_trusted=Status.OK))
    history.close()
    assert drift.change is not None
    assert drift.change.reasons == (ChangeReason.NAMES_REMOVED, ChangeReason.EKU_LOST)
    assert drift.change.text == "names removed: smtp.contoso.test; clientAuth EKU dropped"
    reopened = open_store(db, clock)
    kept = reopened.drift(KEY)
    assert kept is not None and kept.change == drift.change
    reopened.forget([KEY])
    assert reopened.observe(KEY, new, T0 + 120).change == drift.change  # recalled from disk
    reopened.close()


def test_a_schema_2_history_is_migrated_and_its_changes_are_unclassified(
    db: Path, clock: FakeClock, leaves: Leaves
) -> None:
    a, b = leaves
    history = open_store(db, clock)
    history.observe(KEY, a, T0)
    history.observe(KEY, b, T0 + 60)
    history.close()
    conn = sqlite3.connect(db)
    conn.executescript(
        "ALTER TABLE endpoint DROP COLUMN verdict; ALTER TABLE change_event DROP COLUMN change;"
        " ALTER TABLE change_event DROP COLUMN reasons;"
        " ALTER TABLE change_event DROP COLUMN detail;"
        " ALTER TABLE change_event DROP COLUMN previous_failing; PRAGMA user_version = 2;"
    )
    conn.close()
    reopened = open_store(db, clock)
    kept = reopened.drift(KEY)
    assert kept == Drift(b.sha256, T0 + 60, 1, stored(a))
    assert kept is not None and kept.change is None
    # The verdict is not known: a change to a leaf that fails nothing is judged on the facts.
    third = reopened.observe(KEY, a, T0 + 120, _checks(chain_trusted=Status.OK))
    assert third.change is not None and third.change.reasons == (ChangeReason.EXPIRY_EARLIER,)
    reopened.close()
    assert disk_rows(db, "PRAGMA user_version") == [(3,)]


def test_history_and_the_detail_view_say_how_each_change_was_classified(
    db: Path, clock: FakeClock, pki: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    first = facts_from_der(pki.leaf(("relay.contoso.test",), days=60).der)
    renewed = facts_from_der(pki.leaf(("relay.contoso.test",), days=90).der)
    risky = facts_from_der(pki.leaf(("relay.contoso.test",), days=30).der)
    ok = _checks(chain_trusted=Status.OK)
    history = open_store(db, clock)
    history.observe(KEY, first, T0, ok)
    history.observe(KEY, renewed, T0 + 60, ok)
    history.observe(KEY, risky, T0 + 120, ok)
    classes = history.change_classes(KEY)
    history.close()
    assert history_command(db.parent, "relay.contoso.test") == 0
    out = capsys.readouterr().out
    (renewal_line,) = [line for line in out.splitlines() if renewed.sha256[:16] + "  clean" in line]
    assert renewal_line.endswith(f"{first.sha256[:16]} -> {renewed.sha256[:16]}  clean renewal")
    (risky_line,) = [line for line in out.splitlines() if "  risky: " in line]
    assert risky_line.endswith(
        f"-> {risky.sha256[:16]}  risky: expiry not later: "
        f"{renewed.not_after:%Y-%m-%d} → {risky.not_after:%Y-%m-%d}"
    )
    assert [c.change for c in classes.values()] == [ChangeClass.RENEWAL, ChangeClass.RISKY]


def test_a_rotated_intermediate_is_a_renewal_kept_and_printed_as_such(
    db: Path, clock: FakeClock, pki: Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    """R10 then R11 of one CA: recorded as a renewal with its reason, back after a restart,
    and `tlsprobe history` says what rotated."""
    r10, r11 = (Hierarchy(pki.root, make_intermediate(pki.root, cn)) for cn in ("R10", "R11"))
    first = facts_from_der(r10.leaf(("relay.contoso.test",), days=60).der)
    renewed = facts_from_der(r11.leaf(("relay.contoso.test",), days=90).der)
    ok = _checks(chain_trusted=Status.OK)
    history = open_store(db, clock)
    history.observe(KEY, first, T0, ok)
    change = history.observe(KEY, renewed, T0 + 60, ok).change
    history.close()
    assert change is not None and change.change is ChangeClass.RENEWAL
    assert change.reasons == (ChangeReason.INTERMEDIATE_ROTATED,)
    reopened = open_store(db, clock)
    kept = reopened.drift(KEY)
    reopened.close()
    assert kept is not None and kept.change == change
    assert history_command(db.parent, "relay.contoso.test") == 0
    out = capsys.readouterr().out
    assert f"-> {renewed.sha256[:16]}  clean renewal (intermediate rotated: R10 → R11)" in out

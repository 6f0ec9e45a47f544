"""Certificate history in SQLite: which leaf each endpoint served, and when it changed.

The exporter's drift metrics (`cert_changes_total`, `cert_last_change_timestamp_seconds`) are
read from an in-memory dict that this store keeps, so a scrape never touches the disk; the
database is what lets them survive a restart and what `tlsprobe history HOST` prints. Every probe
is written in one transaction, so a kill -9 leaves the history as of the last completed write.
A database that cannot be opened is a `StateError` at start; a write that fails later (disk full,
read-only remount) is kept in memory, reported through `writable` / `write_errors`, and retried,
because losing history must never stop probing or /metrics.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tlsprobe.exporter.history import retention
from tlsprobe.exporter.history.db import (
    HISTORY_FILENAME,
    ChangeEvent,
    Drift,
    StateError,
    StoredCert,
    TimelineEntry,
    Verdict,
    change_columns,
    change_of,
    describe,
    history_path,
    load_state,
    open_for_writing,
    read_cert,
    read_classes,
    read_events,
    read_timeline,
    rollback,
    stored,
    verdict_json,
    verdict_of,
)
from tlsprobe.model import CertFacts, Check, EndpointKey
from tlsprobe.probe.change import Change, LeafRecord, classify, leaf_record
from tlsprobe.probe.x509 import facts as certs

__all__ = [
    "HISTORY_FILENAME",
    "ChangeEvent",
    "Drift",
    "EndpointKey",
    "HistoryStore",
    "StateError",
    "StoredCert",
    "TimelineEntry",
    "history_path",
]

log = logging.getLogger("tlsprobe.exporter.store")

_NAME_STATUS = operator.attrgetter("name", "status")
_REASON = operator.attrgetter("reason")

MAX_PENDING_EVENTS = 100_000
MAX_PENDING_CERT_BYTES = 16 << 20
"""Certificates waiting for an unwritable disk, in PEM bytes; beyond it those no endpoint
serves now are dropped (history cannot be complete until the disk comes back anyway)."""

_UPSERT_ENDPOINT = """
    INSERT INTO endpoint (tenant, target, host, address, port, fingerprint, since, changes_total)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, target, host, address, port) DO UPDATE SET
        fingerprint = excluded.fingerprint,
        since = excluded.since,
        changes_total = excluded.changes_total
    RETURNING id
"""
_UPSERT_SERVED = """
    INSERT INTO served (endpoint_id, fingerprint, first_seen, last_seen) VALUES (?, ?, ?, ?)
    ON CONFLICT (endpoint_id, fingerprint) DO UPDATE SET
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)
"""


@dataclass(slots=True)
class _Pending:
    """Writes not yet on disk. Bounded: the latest state per endpoint, capped change events."""

    certs: dict[str, tuple[str, str, str, str, float, str]] = field(default_factory=dict)
    states: dict[EndpointKey, Drift] = field(default_factory=dict)
    served: dict[tuple[EndpointKey, str], tuple[float, float]] = field(default_factory=dict)
    events: deque[ChangeEvent] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_EVENTS))
    changes: dict[tuple[EndpointKey, float], Change] = field(default_factory=dict)
    """The class of each pending event (same bound: dropped with its event)."""
    verdicts: dict[EndpointKey, Verdict] = field(default_factory=dict)
    dropped_events: int = 0
    cert_bytes: int = 0
    dropped_certs: int = 0

    @property
    def empty(self) -> bool:
        return not (self.certs or self.states or self.served or self.events or self.verdicts)

    def add_cert(self, leaf: CertFacts) -> None:
        if leaf.sha256 not in self.certs:
            row = _cert_row(leaf)
            self.certs[leaf.sha256] = row
            self.cert_bytes += len(row[5])
        if self.cert_bytes > MAX_PENDING_CERT_BYTES:
            self._shed({drift.fingerprint for drift in self.states.values()})

    def _shed(self, current: set[str]) -> None:
        gone = {fp for fp in self.certs if fp not in current}
        for fingerprint in gone:
            self.cert_bytes -= len(self.certs.pop(fingerprint)[5])
        for key in [k for k in self.served if k[1] in gone]:
            del self.served[key]
        self.dropped_certs += len(gone)

    def add_event(self, event: ChangeEvent, change: Change) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1
            dropped = self.events[0]
            self.changes.pop((dropped[0], dropped[1]), None)
        self.events.append(event)
        self.changes[event[0], event[1]] = change

    def see(self, key: EndpointKey, fingerprint: str, seen_at: float) -> None:
        first, last = self.served.get((key, fingerprint), (seen_at, seen_at))
        self.served[key, fingerprint] = (min(first, seen_at), max(last, seen_at))

    def clear(self) -> None:
        self.cert_bytes = 0
        self.certs.clear()
        self.states.clear()
        self.served.clear()
        self.events.clear()
        self.changes.clear()
        self.verdicts.clear()


class HistoryStore:
    """Per-endpoint leaf history with drift counters kept in memory and persisted in SQLite.

    `flush_interval` coalesces last-seen-only updates (a change is always written at once);
    `retry_interval` spaces the retries after a failed write. Safe to call from several threads.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 60.0,
        retry_interval: float = 5.0,
    ) -> None:
        self.path = path
        self._clock = clock
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._lock = threading.RLock()
        self._conn = open_for_writing(path)
        try:
            loaded = load_state(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StateError(describe(path, exc)) from exc
        self._drift, self._ids, self._verdicts = loaded.drift, loaded.ids, loaded.verdicts
        self._pending = _Pending()
        self._writable = True
        self._write_errors = 0
        self._last_flush = clock()
        self._last_attempt = float("-inf")
        self._closed = False

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def write_errors(self) -> int:
        """Failed write attempts since start (each retry that fails counts)."""
        return self._write_errors

    def observe(
        self,
        key: EndpointKey,
        leaf: CertFacts,
        seen_at: float,
        checks: tuple[Check, ...] | None = None,
        *,
        replaces: bool = True,
        issuer_bound: bool = False,
    ) -> Drift:
        """Record that `key` served `leaf` at `seen_at`, judged `checks` (None: not judged);
        returns the endpoint's new drift, whose `change` classifies a change of leaf against
        the old leaf and the verdict it last had (both kept across restarts). `issuer_bound`:
        a connector names the certificate by its issuer (`probe.change.classify`).

        `replaces=False`: another leaf than the current one was seen without replacing it (a
        sender's other node, still presenting a leaf the sender presents: `presented`); its
        served row moves on, the drift and the verdict the next change is classified against
        stay."""
        with self._lock:
            if self._closed:
                raise StateError(f"{self.path}: history store is closed")
            previous = self._drift.get(key) or self._recall(key)
            if not replaces and previous is not None and previous.fingerprint != leaf.sha256:
                self._drift[key] = previous
                self._pending.add_cert(leaf)
                self._pending.see(key, leaf.sha256, seen_at)
                self._maybe_flush(urgent=False)
                return previous
            urgent = previous is None or previous.fingerprint != leaf.sha256
            if previous is None:
                current = Drift(leaf.sha256, seen_at, 0)
            elif urgent:
                old = self._stored_cert(previous.fingerprint)
                change = classify(
                    self._old_record(key, previous.fingerprint),
                    leaf_record(leaf, checks),
                    issuer_bound=issuer_bound,
                )
                current = Drift(leaf.sha256, seen_at, previous.changes_total + 1, old, change)
                event = (key, seen_at, previous.fingerprint, leaf.sha256)
                self._pending.add_event(event, change)
            else:
                current = previous
            self._drift[key] = current
            if checks is not None:
                self._remember_verdict(key, checks)
            self._pending.see(key, leaf.sha256, seen_at)
            if urgent:
                self._pending.states[key] = current
                self._pending.add_cert(leaf)
            self._maybe_flush(urgent=urgent)
            return current

    def drift(self, key: EndpointKey) -> Drift | None:
        return self._drift.get(key)

    def forget(self, keys: Iterable[EndpointKey]) -> None:
        """Drop endpoints from memory (no longer configured); their history stays on disk."""
        with self._lock:
            for key in keys:
                self._drift.pop(key, None)
                self._ids.pop(key, None)
                self._verdicts.pop(key, None)

    def timeline(
        self, host: str, *, tenant: str | None = None, target: str | None = None
    ) -> list[TimelineEntry]:
        """Every certificate the endpoints of `host` (or of the target so named) have served."""
        with self._lock:
            self._maybe_flush(urgent=True)
            return read_timeline(self._conn, host, tenant=tenant, target=target)

    def change_events(self, key: EndpointKey | None = None) -> list[ChangeEvent]:
        """Leaf changes, oldest first per endpoint; includes changes not yet written."""
        with self._lock:
            self._maybe_flush(urgent=True)
            events = read_events(self._conn, key)
            events.extend(e for e in self._pending.events if key is None or e[0] == key)
            return sorted(events, key=lambda e: (e[0], e[1]))

    def change_classes(self, key: EndpointKey) -> dict[tuple[EndpointKey, float], Change]:
        """How each of `key`'s change events was classified; includes those not yet written."""
        with self._lock:
            self._maybe_flush(urgent=True)
            found = read_classes(self._conn, key)
            found.update((k, c) for k, c in self._pending.changes.items() if k[0] == key)
            return found

    def close(self) -> None:
        """Write what is pending if the disk allows, checkpoint the WAL and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flush()
            if not self._pending.empty:
                log.warning(
                    "history %s: closing with %d change events not written",
                    self.path,
                    len(self._pending.events),
                )
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.info("history %s: WAL checkpoint at close failed: %s", self.path, exc)
            self._conn.close()

    def _remember_verdict(self, key: EndpointKey, checks: tuple[Check, ...]) -> None:
        # Every probe passes here: C-level attribute reads, no generator (about 1 µs for a
        # server probe's 11 checks). Only chain_trusted carries a reason.
        reason = next(filter(None, map(_REASON, checks)), None)
        verdict: Verdict = (tuple(map(_NAME_STATUS, checks)), reason)
        if self._verdicts.get(key) != verdict:
            # Written with the next flush: at most flush_interval old after a crash.
            self._verdicts[key] = verdict
            self._pending.verdicts[key] = verdict

    def _old_record(self, key: EndpointKey, fingerprint: str) -> LeafRecord | None:
        """The leaf `key` served before, with the verdict it last had there; None when the
        history does not hold the certificate."""
        row = self._cert_row(fingerprint)
        if not row:
            return None
        try:
            facts = certs.facts_from_der(ssl.PEM_cert_to_DER_cert(row[5]))
        except ValueError:
            return None
        verdict = self._verdicts.get(key)
        record = leaf_record(facts, None)
        if verdict is None:
            return record
        checks, reason = verdict
        return replace(record, checks=MappingProxyType(dict(checks)), chain_reason=reason)

    def _stored_cert(self, fingerprint: str) -> StoredCert | None:
        row = self._cert_row(fingerprint)
        return stored(row) if row else None

    def _cert_row(self, fingerprint: str) -> tuple[Any, ...] | None:
        """A certificate's row (PEM last), pending or on disk; None when not held."""
        row: tuple[Any, ...] | None = self._pending.certs.get(fingerprint)
        if row is None:
            try:
                row = read_cert(self._conn, fingerprint)
            except sqlite3.Error as exc:
                log.info("history %s: cannot read certificate %s: %s", self.path, fingerprint, exc)
                return None
        return row

    def _recall(self, key: EndpointKey) -> Drift | None:
        """State of an endpoint dropped by `forget` and now seen again (pending, else disk)."""
        if key in self._pending.states:
            return self._pending.states[key]
        try:
            row = self._conn.execute(
                "SELECT fingerprint, since, changes_total, verdict, id FROM endpoint"
                " WHERE tenant = ? AND target = ? AND host = ? AND address = ? AND port = ?",
                key,
            ).fetchone()
            last = (
                row
                and self._conn.execute(
                    "SELECT change, reasons, detail, previous_failing FROM change_event"
                    " WHERE endpoint_id = ?"
                    " ORDER BY rowid DESC LIMIT 1",
                    (row[4],),
                ).fetchone()
            )
        except sqlite3.Error as exc:
            # Unreadable now: counting from zero is the only option; say so.
            log.warning("history %s: cannot read state of %s: %s", self.path, key, exc)
            return None
        if not row:
            return None
        events = read_events(self._conn, key)
        old = self._stored_cert(events[-1][2]) if events and events[-1][2] else None
        verdict = verdict_of(row[3])
        if verdict is not None:
            self._verdicts[key] = verdict
        return Drift(row[0], row[1], row[2], old, change_of(last) if last else None)

    def _maybe_flush(self, *, urgent: bool) -> None:
        now = self._clock()
        if not self._writable:
            if now - self._last_attempt < self._retry_interval:
                return
        elif not urgent and now - self._last_flush < self._flush_interval:
            return
        self._flush()

    def _flush(self) -> None:
        """Write everything pending in one transaction; on failure keep it for the next try."""
        if self._pending.empty:
            return
        now = self._clock()
        self._last_attempt = now
        try:
            _write(self._conn, self._pending, self._ids)
        except sqlite3.DatabaseError as exc:
            self._write_errors += 1
            if self._writable:
                self._writable = False
                log.warning(
                    "history %s cannot be written (%s); probing goes on, history is kept in"
                    " memory and retried every %gs",
                    self.path,
                    exc,
                    self._retry_interval,
                )
            return
        if not self._writable:
            self._writable = True
            log.info("history %s is writable again; pending history written", self.path)
        if self._pending.dropped_events:
            log.warning(
                "history %s: %d change events were dropped while the disk was unwritable",
                self.path,
                self._pending.dropped_events,
            )
            self._pending.dropped_events = 0
        self._pending.clear()
        self._last_flush = now


def _write(conn: sqlite3.Connection, pending: _Pending, ids: dict[EndpointKey, int]) -> None:
    """One transaction: certificates, endpoint states, served rows, change events."""
    new_ids: dict[EndpointKey, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT OR IGNORE INTO certificate VALUES (?, ?, ?, ?, ?, ?)",
            pending.certs.values(),
        )
        for key, drift in pending.states.items():
            rows = conn.execute(
                _UPSERT_ENDPOINT, (*key, drift.fingerprint, drift.since, drift.changes_total)
            ).fetchall()
            new_ids[key] = rows[0][0]

        def endpoint_id(key: EndpointKey) -> int:
            known = new_ids.get(key, ids.get(key))
            return known if known is not None else _lookup_id(conn, key)

        conn.executemany(
            _UPSERT_SERVED,
            [
                (endpoint_id(k), fp, first, last)
                for (k, fp), (first, last) in pending.served.items()
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO change_event (endpoint_id, at, old, new, change, reasons,"
            " detail, previous_failing) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (endpoint_id(k), at, old, new, *change_columns(pending.changes.get((k, at))))
                for k, at, old, new in pending.events
            ],
        )
        conn.executemany(
            "UPDATE endpoint SET verdict = ? WHERE id = ?",
            [(verdict_json(v), endpoint_id(k)) for k, v in pending.verdicts.items()],
        )
        for key in pending.states:  # only an endpoint whose certificate changed can grow
            retention.prune(conn, endpoint_id(key))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    ids.update(new_ids)


def _lookup_id(conn: sqlite3.Connection, key: EndpointKey) -> int:
    row = conn.execute(
        "SELECT id FROM endpoint"
        " WHERE tenant = ? AND target = ? AND host = ? AND address = ? AND port = ?",
        key,
    ).fetchone()
    if row is None:
        # Cannot happen: an endpoint's first sighting writes its state with its served row.
        raise sqlite3.IntegrityError(f"no endpoint row for {key}")
    return int(row[0])


def _cert_row(leaf: CertFacts) -> tuple[str, str, str, str, float, str]:
    return (
        leaf.sha256,
        leaf.subject,
        leaf.issuer,
        json.dumps(list(leaf.dns_names)),
        leaf.not_after.timestamp(),
        ssl.DER_cert_to_PEM_cert(leaf.der),
    )

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
import sqlite3
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from tlsprobe.exporter import timeline
from tlsprobe.model import CertFacts

log = logging.getLogger("tlsprobe.exporter.store")

EndpointKey: TypeAlias = tuple[str, str, str, str, int]
"""(tenant, target, host, address, port); address is "" when unknown."""

ChangeEvent: TypeAlias = tuple[EndpointKey, float, str | None, str]
"""(endpoint, at, old fingerprint, new fingerprint)."""

HISTORY_FILENAME = "history.sqlite3"
SCHEMA_VERSION = 1
MAX_PENDING_EVENTS = 100_000

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version holds i).
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE certificate (
        fingerprint TEXT PRIMARY KEY,
        subject     TEXT NOT NULL,
        issuer      TEXT NOT NULL,
        names       TEXT NOT NULL,  -- JSON array of SAN dNSNames
        not_after   REAL NOT NULL,
        pem         TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE endpoint (
        id            INTEGER PRIMARY KEY,
        tenant        TEXT NOT NULL,
        target        TEXT NOT NULL,
        host          TEXT NOT NULL,
        address       TEXT NOT NULL,
        port          INTEGER NOT NULL,
        fingerprint   TEXT NOT NULL REFERENCES certificate (fingerprint),
        since         REAL NOT NULL,
        changes_total INTEGER NOT NULL,
        UNIQUE (tenant, target, host, address, port)
    );
    CREATE INDEX endpoint_host ON endpoint (host);
    CREATE TABLE served (
        endpoint_id INTEGER NOT NULL REFERENCES endpoint (id),
        fingerprint TEXT NOT NULL REFERENCES certificate (fingerprint),
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL,
        PRIMARY KEY (endpoint_id, fingerprint)
    ) WITHOUT ROWID;
    CREATE TABLE change_event (
        endpoint_id INTEGER NOT NULL REFERENCES endpoint (id),
        at          REAL NOT NULL,
        old         TEXT,
        new         TEXT NOT NULL,
        UNIQUE (endpoint_id, at, new)
    );
    """,
)

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
# Filters are `?n IS NULL OR column = ?n`, so one constant statement serves every call.
_SELECT_EVENTS = """
    SELECT e.tenant, e.target, e.host, e.address, e.port, c.at, c.old, c.new
    FROM change_event c JOIN endpoint e ON e.id = c.endpoint_id
    WHERE (?1 IS NULL OR e.tenant = ?1) AND (?2 IS NULL OR e.target = ?2)
        AND (?3 IS NULL OR e.host = ?3) AND (?4 IS NULL OR e.address = ?4)
        AND (?5 IS NULL OR e.port = ?5)
    ORDER BY e.tenant, e.target, e.host, e.address, e.port, c.at
"""
# A host name matches case-insensitively and without its trailing dot; a target name exactly.
_SELECT_TIMELINE = """
    SELECT e.tenant, e.target, e.host, e.address, e.port, s.fingerprint, c.subject, c.issuer,
        c.names, c.not_after, s.first_seen, s.last_seen
    FROM served s
    JOIN endpoint e ON e.id = s.endpoint_id
    JOIN certificate c ON c.fingerprint = s.fingerprint
    WHERE (e.host = ?1 COLLATE NOCASE OR e.target = ?4)
        AND (?2 IS NULL OR e.tenant = ?2) AND (?3 IS NULL OR e.target = ?3)
    ORDER BY e.tenant, e.target, e.host, e.address, e.port, s.first_seen
"""


_SELECT_CERT = (
    "SELECT fingerprint, subject, issuer, names, not_after FROM certificate WHERE fingerprint = ?"
)
# The certificate each endpoint served before its latest change (rowid orders the events).
_SELECT_PREVIOUS = """
    SELECT c.endpoint_id, cert.fingerprint, cert.subject, cert.issuer, cert.names, cert.not_after
    FROM change_event c JOIN certificate cert ON cert.fingerprint = c.old
    WHERE c.rowid IN (SELECT max(rowid) FROM change_event GROUP BY endpoint_id)
"""


class StateError(Exception):
    """The history database cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class StoredCert:
    """What the history keeps of a certificate (the alerts name the old one of a change)."""

    fingerprint: str
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_after: float


@dataclass(frozen=True, slots=True)
class Drift:
    """What the exporter reports about leaf changes of one endpoint."""

    fingerprint: str
    """Current leaf SHA-256 (lower-case hex)."""
    since: float
    """Unix time the current leaf was first seen in its current run."""
    changes_total: int
    """How often the leaf changed; the first sighting is not a change."""
    previous: StoredCert | None = None
    """The leaf served before the current one; None before the first change (or unknown)."""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One certificate an endpoint has served, with when it was first and last seen."""

    tenant: str
    target: str
    host: str
    address: str
    port: int
    fingerprint: str
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_after: float
    first_seen: float
    last_seen: float

    @property
    def key(self) -> EndpointKey:
        return (self.tenant, self.target, self.host, self.address, self.port)


@dataclass(slots=True)
class _Pending:
    """Writes not yet on disk. Bounded: the latest state per endpoint, capped change events."""

    certs: dict[str, tuple[str, str, str, str, float, str]] = field(default_factory=dict)
    states: dict[EndpointKey, Drift] = field(default_factory=dict)
    served: dict[tuple[EndpointKey, str], tuple[float, float]] = field(default_factory=dict)
    events: deque[ChangeEvent] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_EVENTS))
    dropped_events: int = 0

    @property
    def empty(self) -> bool:
        return not (self.certs or self.states or self.served or self.events)

    def add_event(self, event: ChangeEvent) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1
        self.events.append(event)

    def see(self, key: EndpointKey, fingerprint: str, seen_at: float) -> None:
        first, last = self.served.get((key, fingerprint), (seen_at, seen_at))
        self.served[key, fingerprint] = (min(first, seen_at), max(last, seen_at))

    def clear(self) -> None:
        self.certs.clear()
        self.states.clear()
        self.served.clear()
        self.events.clear()


def history_path(state_dir: Path) -> Path:
    return state_dir / HISTORY_FILENAME


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
        self._conn = _open_for_writing(path)
        try:
            self._drift, self._ids = _load_state(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StateError(_describe(path, exc)) from exc
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

    def observe(self, key: EndpointKey, leaf: CertFacts, seen_at: float) -> Drift:
        """Record that `key` served `leaf` at `seen_at`; returns the endpoint's new drift."""
        with self._lock:
            if self._closed:
                raise StateError(f"{self.path}: history store is closed")
            previous = self._drift.get(key) or self._recall(key)
            urgent = previous is None or previous.fingerprint != leaf.sha256
            if previous is None:
                current = Drift(leaf.sha256, seen_at, 0)
            elif urgent:
                old = self._stored_cert(previous.fingerprint)
                current = Drift(leaf.sha256, seen_at, previous.changes_total + 1, old)
                self._pending.add_event((key, seen_at, previous.fingerprint, leaf.sha256))
            else:
                current = previous
            self._drift[key] = current
            if urgent:
                self._pending.certs.setdefault(leaf.sha256, _cert_row(leaf))
                self._pending.states[key] = current
            self._pending.see(key, leaf.sha256, seen_at)
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
            events = _read_events(self._conn, key)
            events.extend(e for e in self._pending.events if key is None or e[0] == key)
            return sorted(events, key=lambda e: (e[0], e[1]))

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

    def _stored_cert(self, fingerprint: str) -> StoredCert | None:
        row = self._pending.certs.get(fingerprint)
        if row is None:
            try:
                row = self._conn.execute(_SELECT_CERT, (fingerprint,)).fetchone()
            except sqlite3.Error as exc:
                log.info("history %s: cannot read certificate %s: %s", self.path, fingerprint, exc)
                return None
        return _stored(row) if row else None

    def _recall(self, key: EndpointKey) -> Drift | None:
        """State of an endpoint dropped by `forget` and now seen again (pending, else disk)."""
        if key in self._pending.states:
            return self._pending.states[key]
        try:
            row = self._conn.execute(
                "SELECT fingerprint, since, changes_total FROM endpoint"
                " WHERE tenant = ? AND target = ? AND host = ? AND address = ? AND port = ?",
                key,
            ).fetchone()
        except sqlite3.Error as exc:
            # Unreadable now: counting from zero is the only option; say so.
            log.warning("history %s: cannot read state of %s: %s", self.path, key, exc)
            return None
        if not row:
            return None
        events = _read_events(self._conn, key)
        old = self._stored_cert(events[-1][2]) if events and events[-1][2] else None
        return Drift(row[0], row[1], row[2], old)

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
            "INSERT OR IGNORE INTO change_event (endpoint_id, at, old, new) VALUES (?, ?, ?, ?)",
            [(endpoint_id(k), at, old, new) for k, at, old, new in pending.events],
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
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


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (SQLITE_FULL); a second rollback is harmless.
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.debug("rollback failed: %s", exc)


def _cert_row(leaf: CertFacts) -> tuple[str, str, str, str, float, str]:
    return (
        leaf.sha256,
        leaf.subject,
        leaf.issuer,
        json.dumps(list(leaf.dns_names)),
        leaf.not_after.timestamp(),
        ssl.DER_cert_to_PEM_cert(leaf.der),
    )


def _load_state(
    conn: sqlite3.Connection,
) -> tuple[dict[EndpointKey, Drift], dict[EndpointKey, int]]:
    drift: dict[EndpointKey, Drift] = {}
    ids: dict[EndpointKey, int] = {}
    previous = {row[0]: _stored(row[1:]) for row in conn.execute(_SELECT_PREVIOUS)}
    rows = conn.execute(
        "SELECT id, tenant, target, host, address, port, fingerprint, since, changes_total"
        " FROM endpoint"
    )
    for row in rows:
        key: EndpointKey = (row[1], row[2], row[3], row[4], row[5])
        ids[key] = row[0]
        drift[key] = Drift(row[6], row[7], row[8], previous.get(row[0]))
    return drift, ids


def _stored(row: Sequence[Any]) -> StoredCert:
    """(fingerprint, subject, issuer, names JSON, not_after, ...) -> StoredCert."""
    return StoredCert(row[0], row[1], row[2], tuple(json.loads(row[3])), float(row[4]))


def _read_events(conn: sqlite3.Connection, key: EndpointKey | None) -> list[ChangeEvent]:
    tenant, target, host, address, port = key if key is not None else (None,) * 5
    rows = conn.execute(_SELECT_EVENTS, (tenant, target, host, address, port))
    return [((r[0], r[1], r[2], r[3], r[4]), r[5], r[6], r[7]) for r in rows]


def read_timeline(
    conn: sqlite3.Connection, host: str, *, tenant: str | None = None, target: str | None = None
) -> list[TimelineEntry]:
    """Timeline rows for a host name or a target name, by endpoint then first sighting."""
    rows = conn.execute(_SELECT_TIMELINE, (host.rstrip("."), tenant, target, host))
    return [_timeline_entry(row) for row in rows]


def _timeline_entry(row: tuple[Any, ...]) -> TimelineEntry:
    tenant, target, host, address, port, fingerprint, subject, issuer, names = row[:9]
    not_after, first_seen, last_seen = row[9:12]
    return TimelineEntry(
        tenant,
        target,
        host,
        address,
        port,
        fingerprint,
        subject,
        issuer,
        tuple(json.loads(names)),
        not_after,
        first_seen,
        last_seen,
    )


# --- opening -----------------------------------------------------------------------------------


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """The one place a connection is made (tests substitute it to simulate a read-only disk)."""
    if read_only:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed), check, configure and migrate; any problem is a StateError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{path}: cannot create the state directory: {exc}") from exc
    if path.is_dir():
        raise StateError(f"{path}: is a directory, not a history database")
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise StateError(_describe(path, exc)) from exc
    try:
        _check_integrity(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warning("history %s: WAL mode unavailable, using %s", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except (sqlite3.Error, StateError) as exc:
        conn.close()
        if isinstance(exc, StateError):
            raise
        raise StateError(_describe(path, exc)) from exc
    return conn


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        # quick_check reports several lines; the StateError stays one line.
        detail = " ".join("; ".join(problems).split())
        raise StateError(
            f"{path}: database is corrupt ({detail[:200]}); move it aside to start a new history"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION; always ends with a write, proving the file writable."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{path}: written by a newer tlsprobe (schema {version}, this one knows"
                f" {SCHEMA_VERSION})"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise StateError(f"{path}: an SQLite database, but not a tlsprobe history")
        for script in _MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


_HINTS = {
    "SQLITE_NOTADB": "not an SQLite database (corrupt, or another file); move it aside",
    "SQLITE_CORRUPT": "database is corrupt; move it aside to start a new history",
    "SQLITE_READONLY": "cannot be written (read-only file or file system)",
    "SQLITE_CANTOPEN": "cannot be opened (missing directory, permissions?)",
    "SQLITE_PERM": "permission denied",
    "SQLITE_FULL": "disk full",
    "SQLITE_BUSY": "locked by another process (is another tlsprobe using this state dir?)",
    "SQLITE_IOERR": "I/O error",
}


def _describe(path: Path, exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    hint = next((h for prefix, h in _HINTS.items() if name.startswith(prefix)), "unusable")
    return f"{path}: {hint} ({exc})"


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection for `tlsprobe history`, safe while the exporter writes."""
    if not path.is_file():
        raise StateError(f"{path}: no history database (has the exporter run with this state dir?)")
    try:
        conn = _connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise StateError(_describe(path, exc)) from exc
    try:
        _check_integrity(conn, path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StateError(_describe(path, exc)) from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StateError(f"{path}: unexpected schema version {version} (want {SCHEMA_VERSION})")
    return conn


# --- the history command -----------------------------------------------------------------------


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _expiry(not_after: float, now: float) -> str:
    days = (not_after - now) / 86400
    date = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%d")
    if days < 0:
        return f"{date} (expired {-days:.0f} d ago)"
    return f"{date} (in {days:.0f} d)"


def _socket(address: str, port: int) -> str:
    if not address:
        return f"?:{port}"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def format_timeline(
    entries: Sequence[TimelineEntry], now: float, events: Sequence[ChangeEvent] = ()
) -> str:
    """One block per endpoint: its spans as they were (a rollback is a span of its own, the
    current one is marked), then every change event."""
    blocks: dict[EndpointKey, list[TimelineEntry]] = {}
    for entry in entries:
        blocks.setdefault(entry.key, []).append(entry)
    lines: list[str] = []
    for key, served in blocks.items():
        tenant, target, host, address, port = key
        scope = f"{tenant}/{target}" if tenant else target
        lines.append(f"{_socket(address, port)}  {host}  (target {scope})")
        mine = [e for e in events if e[0] == key]
        for span in timeline.spans(served, mine):
            entry = span.cert
            marker = "  (current)" if span.current else ""
            marker += "  (rollback)" if span.rollback else ""
            lines.append(
                f"  {_when(span.start)} -> {_when(span.end)}"
                f"  {entry.fingerprint[:16]}  {entry.subject}"
                f"  names={','.join(entry.names) or '-'}"
                f"  not_after={_expiry(entry.not_after, now)}{marker}"
            )
        if mine:
            lines.append("  changes:")
            for change in timeline.changes(mine):
                rollback = "  (rollback to a certificate served before)" if change.rollback else ""
                old = (change.old or "?")[:16]
                lines.append(f"    {_when(change.at)}  {old} -> {change.new[:16]}{rollback}")
    return "\n".join(lines)


def history_command(state_dir: Path, host: str) -> int:
    """`tlsprobe history HOST`: 0 when something is recorded, 3 when not (or no database)."""
    path = history_path(state_dir)
    try:
        conn = open_read_only(path)
    except StateError as exc:
        print(f"tlsprobe history: {exc}", file=sys.stderr)
        return 3
    try:
        entries = read_timeline(conn, host)
        events = [
            e for key in dict.fromkeys(e.key for e in entries) for e in _read_events(conn, key)
        ]
    except sqlite3.Error as exc:
        print(f"tlsprobe history: {_describe(path, exc)}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    if not entries:
        print(f"tlsprobe history: nothing recorded for {host} in {path}", file=sys.stderr)
        return 3
    print(format_timeline(entries, time.time(), events))
    return 0

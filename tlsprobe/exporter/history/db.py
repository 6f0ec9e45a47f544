"""The history database file: its schema, opening it safely, and reading it back.

SQLite in WAL mode, one file under the state directory (`HISTORY_FILENAME`).  Opening checks
integrity and migrates the schema with a write, so an unusable file is a `StateError` at start
(naming the file and what is wrong), never a failure later.  `open_read_only` serves
`tlsprobe history`, safely while the exporter writes.  The writing side is `store.HistoryStore`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from tlsprobe.model import ChainReason, ChangeClass, ChangeReason, EndpointKey, Status
from tlsprobe.probe.change import Change

log = logging.getLogger("tlsprobe.exporter.store")

ChangeEvent: TypeAlias = tuple[EndpointKey, float, str | None, str]
"""(endpoint, at, old fingerprint, new fingerprint)."""

HISTORY_FILENAME = "history.sqlite3"
SCHEMA_VERSION = 3
WAL_SIZE_LIMIT = 4 << 20
"""Bytes the write-ahead log file is cut back to after a checkpoint (SQLite checkpoints at
about 4 MiB of log by itself)."""

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
    # Finding certificates no endpoint keeps any more (retention.py).
    """
    CREATE INDEX served_fingerprint ON served (fingerprint);
    """,
    # The change classifier's inputs and outputs (probe/change.py): the endpoint's last verdict
    # (JSON {"checks": {name: status}, "reason": chain reason or null}; NULL: not known, as
    # after an upgrade) and each change's class, reasons (comma-joined) and sentence.
    """
    ALTER TABLE endpoint ADD COLUMN verdict TEXT;
    ALTER TABLE change_event ADD COLUMN change TEXT;
    ALTER TABLE change_event ADD COLUMN reasons TEXT;
    ALTER TABLE change_event ADD COLUMN detail TEXT;
    ALTER TABLE change_event ADD COLUMN previous_failing TEXT;
    """,
)

# Filters are `?n IS NULL OR column = ?n`, so one constant statement serves every call.
_SELECT_EVENTS = """
    SELECT e.tenant, e.target, e.host, e.address, e.port, c.at, c.old, c.new
    FROM change_event c JOIN endpoint e ON e.id = c.endpoint_id
    WHERE (?1 IS NULL OR e.tenant = ?1) AND (?2 IS NULL OR e.target = ?2)
        AND (?3 IS NULL OR e.host = ?3) AND (?4 IS NULL OR e.address = ?4)
        AND (?5 IS NULL OR e.port = ?5)
    ORDER BY e.tenant, e.target, e.host, e.address, e.port, c.at
"""
_SELECT_CLASSES = """
    SELECT e.tenant, e.target, e.host, e.address, e.port, c.at, c.change, c.reasons, c.detail,
        c.previous_failing
    FROM change_event c JOIN endpoint e ON e.id = c.endpoint_id
    WHERE c.change IS NOT NULL AND (?1 IS NULL OR e.tenant = ?1)
        AND (?2 IS NULL OR e.target = ?2) AND (?3 IS NULL OR e.host = ?3)
        AND (?4 IS NULL OR e.address = ?4) AND (?5 IS NULL OR e.port = ?5)
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
    "SELECT fingerprint, subject, issuer, names, not_after, pem FROM certificate"
    " WHERE fingerprint = ?"
)
# The certificate each endpoint served before its latest change (rowid orders the events).
_SELECT_PREVIOUS = """
    SELECT c.endpoint_id, cert.fingerprint, cert.subject, cert.issuer, cert.names, cert.not_after
    FROM change_event c JOIN certificate cert ON cert.fingerprint = c.old
    WHERE c.rowid IN (SELECT max(rowid) FROM change_event GROUP BY endpoint_id)
"""
# How each endpoint's latest change was classified (NULL for changes before schema 3).
_SELECT_LAST_CHANGE = """
    SELECT endpoint_id, change, reasons, detail, previous_failing FROM change_event
    WHERE rowid IN (SELECT max(rowid) FROM change_event GROUP BY endpoint_id)
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
    change: Change | None = field(default=None, compare=False)
    """How the latest change was classified; None before the first change, or for a change
    recorded by a tlsprobe that did not classify. Not compared: it follows from the change
    the other fields record."""


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


def history_path(state_dir: Path) -> Path:
    return state_dir / HISTORY_FILENAME


def rollback(conn: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (SQLITE_FULL); a second rollback is harmless.
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.debug("rollback failed: %s", exc)


Verdict: TypeAlias = tuple[tuple[tuple[str, Status], ...], ChainReason | None]
"""What the classifier needs of an endpoint's last verdict: (check, status) pairs and the
chain_trusted reason."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """The state `load_state` reads at start."""

    drift: dict[EndpointKey, Drift]
    ids: dict[EndpointKey, int]
    verdicts: dict[EndpointKey, Verdict]


def load_state(conn: sqlite3.Connection) -> Loaded:
    loaded = Loaded({}, {}, {})
    previous = {row[0]: stored(row[1:]) for row in conn.execute(_SELECT_PREVIOUS)}
    changes = {row[0]: change_of(row[1:]) for row in conn.execute(_SELECT_LAST_CHANGE)}
    rows = conn.execute(
        "SELECT id, tenant, target, host, address, port, fingerprint, since, changes_total,"
        " verdict FROM endpoint"
    )
    for row in rows:
        key: EndpointKey = (row[1], row[2], row[3], row[4], row[5])
        loaded.ids[key] = row[0]
        loaded.drift[key] = Drift(row[6], row[7], row[8], previous.get(row[0]), changes.get(row[0]))
        verdict = verdict_of(row[9])
        if verdict is not None:
            loaded.verdicts[key] = verdict
    return loaded


def change_of(row: Sequence[Any]) -> Change | None:
    """(change, reasons, detail, previous_failing) columns -> Change; None for a change not
    classified."""
    try:
        kind = ChangeClass(row[0])
        reasons = tuple(ChangeReason(r) for r in row[1].split(",") if r)
        details = tuple(d for d in (row[2] or "").split("; ") if d)
        failing = tuple(c for c in (row[3] or "").split(",") if c)
    except (ValueError, TypeError, AttributeError):
        return None
    return Change(kind, reasons, details, failing)


def change_columns(change: Change | None) -> tuple[str | None, ...]:
    if change is None:
        return (None, None, None, None)
    return (
        change.change.value,
        ",".join(change.reasons),
        "; ".join(change.details),
        ",".join(change.previous_failing),
    )


def verdict_json(verdict: Verdict) -> str:
    checks, reason = verdict
    return json.dumps({"checks": {name: int(status) for name, status in checks}, "reason": reason})


def verdict_of(text: str | None) -> Verdict | None:
    """The verdict column back; None when absent or unreadable (then: not known)."""
    if not text:
        return None
    try:
        value = json.loads(text)
        checks = tuple((str(n), Status(int(s))) for n, s in value["checks"].items())
        reason = ChainReason(value["reason"]) if value.get("reason") else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return checks, reason


def stored(row: Sequence[Any]) -> StoredCert:
    """(fingerprint, subject, issuer, names JSON, not_after, ...) -> StoredCert."""
    return StoredCert(row[0], row[1], row[2], tuple(json.loads(row[3])), float(row[4]))


def read_cert(conn: sqlite3.Connection, fingerprint: str) -> tuple[Any, ...] | None:
    """The certificate row `stored` reads (its PEM last), or None when the history does not
    hold it."""
    row: tuple[Any, ...] | None = conn.execute(_SELECT_CERT, (fingerprint,)).fetchone()
    return row


def read_events(conn: sqlite3.Connection, key: EndpointKey | None) -> list[ChangeEvent]:
    tenant, target, host, address, port = key if key is not None else (None,) * 5
    rows = conn.execute(_SELECT_EVENTS, (tenant, target, host, address, port))
    return [((r[0], r[1], r[2], r[3], r[4]), r[5], r[6], r[7]) for r in rows]


def read_classes(
    conn: sqlite3.Connection, key: EndpointKey | None
) -> dict[tuple[EndpointKey, float], Change]:
    """How each classified change event of `key` (None: every endpoint) was classified, by
    (endpoint, time); events from before schema 3 are not in it."""
    tenant, target, host, address, port = key if key is not None else (None,) * 5
    found: dict[tuple[EndpointKey, float], Change] = {}
    for row in conn.execute(_SELECT_CLASSES, (tenant, target, host, address, port)):
        change = change_of(row[6:])
        if change is not None:
            found[(row[0], row[1], row[2], row[3], row[4]), row[5]] = change
    return found


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


def open_for_writing(path: Path) -> sqlite3.Connection:
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
        raise StateError(describe(path, exc)) from exc
    try:
        _check_integrity(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            log.warning("history %s: WAL mode unavailable, using %s", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint that resets the log also cuts its file back to this size: without it
        # the file keeps the largest size it ever reached.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except (sqlite3.Error, StateError) as exc:
        conn.close()
        if isinstance(exc, StateError):
            raise
        raise StateError(describe(path, exc)) from exc
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
        rollback(conn)
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


def describe(path: Path, exc: sqlite3.Error) -> str:
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
        raise StateError(describe(path, exc)) from exc
    try:
        _check_integrity(conn, path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StateError(describe(path, exc)) from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StateError(f"{path}: unexpected schema version {version} (want {SCHEMA_VERSION})")
    return conn

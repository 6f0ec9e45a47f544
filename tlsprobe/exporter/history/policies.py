"""Drift history of DNS policies: TLSA record sets per endpoint and MTA-STS policies per domain.

Certificates have their timeline in `store`; TLSA records and MTA-STS policy ids change on
their own schedule and break mail just as surely, so each change is kept here (SQLite, in the
state directory beside the certificate history, in its own file so the two schemas evolve
apart). Only changes are written. Everything is bounded, so that one hostile zone can neither
fill the disk nor push the other subjects' history out: a value is kept up to
`MAX_VALUE_CHARS` (a longer one ends with its length and digest, so a change past the cut is
still a change), each subject (a TLSA owner, a policy domain) keeps its newest
`MAX_ROWS_PER_SUBJECT` changes, and over `MAX_ROWS` changes or `MAX_BYTES` of values in all,
the subject holding the most gives up its oldest change first. A database that cannot be
written costs the history, never a probe: errors are logged once per kind.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("tlsprobe.exporter.policyhistory")

POLICY_HISTORY_FILE = "policy-history.sqlite"
MAX_ROWS = 10000
"""Changes kept in all (and subjects whose current value is remembered)."""
MAX_ROWS_PER_SUBJECT = 100
MAX_VALUE_CHARS = 2048
"""About 28 TLSA records, or an MTA-STS summary with a few dozen mx patterns."""
MAX_BYTES = 16 * 1024 * 1024
"""Of old and new values over all changes kept."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_current (
    kind TEXT NOT NULL, subject TEXT NOT NULL, value TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE TABLE IF NOT EXISTS policy_change (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    old TEXT NOT NULL, new TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    at: float
    kind: str
    """`tlsa` (subject: the TLSA owner) or `mta_sts` (subject: the policy domain)."""
    subject: str
    old: str
    new: str


class PolicyHistory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.executescript(_SCHEMA)
        self.errors = 0
        self._ledger: _Ledger | None = None

    def observe(self, kind: str, subject: str, value: str, at: float) -> bool:
        """Record `value` as current; True when it replaced a different earlier value."""
        value = bounded(value)
        try:
            row = self._conn.execute(
                "SELECT value FROM policy_current WHERE kind = ? AND subject = ?", (kind, subject)
            ).fetchone()
            if row is not None and row[0] == value:
                return False
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.execute(
                    "INSERT OR REPLACE INTO policy_current VALUES (?, ?, ?, ?)",
                    (kind, subject, value, at),
                )
                if row is not None:
                    change_id = self._conn.execute(
                        "INSERT INTO policy_change (at, kind, subject, old, new) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (at, kind, subject, row[0], value),
                    ).lastrowid
                    assert change_id is not None
                    self._trim(kind, subject, change_id, _size(row[0]) + _size(value))
                self._conn.execute(
                    "DELETE FROM policy_current WHERE rowid IN (SELECT rowid FROM "
                    "policy_current ORDER BY since DESC LIMIT -1 OFFSET ?)",
                    (MAX_ROWS,),
                )
        except sqlite3.Error as exc:
            self._ledger = None  # what the file holds is read again at the next change
            self.errors += 1
            if self.errors == 1:
                log.error("policy history not written: %s", exc)
            return False
        return row is not None

    def _trim(self, kind: str, subject: str, change_id: int, size: int) -> None:
        """The subject's newest changes only; then, while over the totals, the subject with
        the most changes (rows) or the most bytes gives up its oldest. What is kept is
        counted in memory (`_Ledger`, read from the file once), so a change costs its own
        rows, not a read of every value kept (16 MiB at the cap: 30 ms on the probing loop)."""
        if self._ledger is None:
            self._ledger = _Ledger.read(self._conn)  # the new change included
        else:
            self._ledger.add(kind, subject, change_id, size)
        doomed = self._ledger.evict((kind, subject))
        self._conn.executemany("DELETE FROM policy_change WHERE id = ?", [(i,) for i in doomed])

    def close(self) -> None:
        self._conn.close()


class _Ledger:
    """The changes kept, per subject, oldest first, as (id, bytes of old and new): at most
    `MAX_ROWS` plus one entries, mirroring `policy_change`."""

    def __init__(self) -> None:
        self.changes: dict[tuple[str, str], deque[tuple[int, int]]] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        self.count = 0
        self.total = 0

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> _Ledger:
        ledger = cls()
        for change_id, kind, subject, size in conn.execute(
            "SELECT id, kind, subject, LENGTH(CAST(old AS BLOB)) + LENGTH(CAST(new AS BLOB)) "
            "FROM policy_change ORDER BY id"
        ):
            ledger.add(kind, subject, change_id, size)
        return ledger

    def add(self, kind: str, subject: str, change_id: int, size: int) -> None:
        key = (kind, subject)
        self.changes.setdefault(key, deque()).append((change_id, size))
        self.sizes[key] = self.sizes.get(key, 0) + size
        self.count, self.total = self.count + 1, self.total + size

    def evict(self, subject: tuple[str, str]) -> list[int]:
        """The ids to delete, oldest first: the subject's beyond `MAX_ROWS_PER_SUBJECT`, then
        until at most `MAX_ROWS` rows and `MAX_BYTES` remain, each time from the subject with
        the most rows (over the row cap) or the most bytes."""
        doomed: list[int] = []
        while len(self.changes.get(subject, ())) > MAX_ROWS_PER_SUBJECT:
            doomed.append(self._pop(subject))
        while self.count > MAX_ROWS or self.total > MAX_BYTES:
            if self.count > MAX_ROWS:
                key = max(self.changes, key=lambda k: len(self.changes[k]))
            else:
                key = max(self.sizes, key=lambda k: self.sizes[k])
            doomed.append(self._pop(key))
        return doomed

    def _pop(self, key: tuple[str, str]) -> int:
        change_id, size = self.changes[key].popleft()
        if not self.changes[key]:
            del self.changes[key], self.sizes[key]
        else:
            self.sizes[key] -= size
        self.count, self.total = self.count - 1, self.total - size
        return change_id


def _size(value: str) -> int:
    """What SQLite's LENGTH(CAST(value AS BLOB)) gives: its UTF-8 bytes."""
    return len(value.encode("utf-8", "surrogatepass"))


def bounded(value: str) -> str:
    """`value`, or its first `MAX_VALUE_CHARS` with its length and digest (so that values
    differing only past the cut still differ)."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{value[:MAX_VALUE_CHARS]}... ({len(value)} characters, sha256 {digest})"


def changes_for(path: Path, host: str) -> list[PolicyChange]:
    """Changes of the TLSA records of `host` and of the MTA-STS policy of its domains."""
    if not path.is_file():
        return []
    host = host.lower().rstrip(".")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT at, kind, subject, old, new FROM policy_change ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [PolicyChange(*row) for row in rows if _concerns(row[1], row[2], host)]


def _concerns(kind: str, subject: str, host: str) -> bool:
    if kind == "tlsa":
        return subject.split(".", 2)[-1] == host
    return host == subject or host.endswith(f".{subject}")


def format_changes(changes: list[PolicyChange]) -> str:
    lines = ["DNS policy changes"]
    for change in changes:
        when = datetime.fromtimestamp(change.at, UTC).strftime("%Y-%m-%d %H:%MZ")
        lines.append(f"  {when}  {change.kind:<8} {change.subject}")
        lines.append(f"    was {change.old or '(none)'}")
        lines.append(f"    now {change.new or '(none)'}")
    return "\n".join(lines)

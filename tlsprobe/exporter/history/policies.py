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
                    self._conn.execute(
                        "INSERT INTO policy_change (at, kind, subject, old, new) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (at, kind, subject, row[0], value),
                    )
                    self._trim(kind, subject)
                self._conn.execute(
                    "DELETE FROM policy_current WHERE rowid IN (SELECT rowid FROM "
                    "policy_current ORDER BY since DESC LIMIT -1 OFFSET ?)",
                    (MAX_ROWS,),
                )
        except sqlite3.Error as exc:
            self.errors += 1
            if self.errors == 1:
                log.error("policy history not written: %s", exc)
            return False
        return row is not None

    def _trim(self, kind: str, subject: str) -> None:
        """The subject's newest changes only; then, while over the totals, the subject with
        the most changes (rows) or the most bytes gives up its oldest."""
        self._conn.execute(
            "DELETE FROM policy_change WHERE id IN (SELECT id FROM policy_change WHERE kind = ? "
            "AND subject = ? ORDER BY id DESC LIMIT -1 OFFSET ?)",
            (kind, subject, MAX_ROWS_PER_SUBJECT),
        )
        rows = self._conn.execute(
            "SELECT id, kind, subject, LENGTH(CAST(old AS BLOB)) + LENGTH(CAST(new AS BLOB)) "
            "FROM policy_change ORDER BY id"
        ).fetchall()
        self._conn.executemany(
            "DELETE FROM policy_change WHERE id = ?", [(i,) for i in _evictions(rows)]
        )

    def close(self) -> None:
        self._conn.close()


def _evictions(rows: list[tuple[int, str, str, int]]) -> list[int]:
    """The ids to delete, oldest first, until at most `MAX_ROWS` rows and `MAX_BYTES` remain:
    each time from the subject with the most rows (over the row cap) or the most bytes."""
    changes: dict[tuple[str, str], deque[tuple[int, int]]] = {}
    for change_id, kind, subject, size in rows:
        changes.setdefault((kind, subject), deque()).append((change_id, size))
    sizes = {key: sum(size for _, size in kept) for key, kept in changes.items()}
    count, total = len(rows), sum(sizes.values())
    doomed: list[int] = []
    while count > MAX_ROWS or total > MAX_BYTES:
        if count > MAX_ROWS:
            key = max(changes, key=lambda k: len(changes[k]))
        else:
            key = max(sizes, key=lambda k: sizes[k])
        change_id, size = changes[key].popleft()
        if not changes[key]:
            del changes[key]
        sizes[key] -= size
        doomed.append(change_id)
        count, total = count - 1, total - size
    return doomed


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

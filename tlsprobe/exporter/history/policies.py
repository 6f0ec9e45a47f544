"""Drift history of DNS policies: TLSA record sets per endpoint and MTA-STS policies per domain.

Certificates have their timeline in `store`; TLSA records and MTA-STS policy ids change on
their own schedule and break mail just as surely, so each change is kept here (SQLite, in the
state directory beside the certificate history, in its own file so the two schemas evolve
apart). Only changes are written, and the table is cut to the newest `MAX_ROWS`. A database
that cannot be written costs the history, never a probe: errors are logged once per kind.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("tlsprobe.exporter.policyhistory")

POLICY_HISTORY_FILE = "policy-history.sqlite"
MAX_ROWS = 10000
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
                    self._conn.execute(
                        "DELETE FROM policy_change WHERE id <= "
                        "(SELECT MAX(id) FROM policy_change) - ?",
                        (MAX_ROWS,),
                    )
        except sqlite3.Error as exc:
            self.errors += 1
            if self.errors == 1:
                log.error("policy history not written: %s", exc)
            return False
        return row is not None

    def close(self) -> None:
        self._conn.close()


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

"""How much certificate history one endpoint may keep in the database, and the pruning.

Policy: an endpoint keeps the first certificate it ever served and its most recently seen
others, `MAX_CERTIFICATES_PER_ENDPOINT` in all, and its newest `MAX_EVENTS_PER_ENDPOINT` change
events; a certificate that no endpoint keeps leaves the database. `changes_total` on the
endpoint row still counts every change. Without this, a server presenting a new certificate on
every connection added a certificate row (with its PEM) and a change event per probe, for good.
Pruning runs inside the write transaction, for the endpoints whose certificate changed (the
only ones whose history can have grown), so it costs nothing in the steady state.
"""

from __future__ import annotations

import sqlite3

MAX_CERTIFICATES_PER_ENDPOINT = 16
"""Distinct certificates kept per endpoint: the first ever seen and the 15 most recent others."""
MAX_EVENTS_PER_ENDPOINT = 1000
"""Change events kept per endpoint, the newest."""

_DROPPED_SERVED = """
    SELECT fingerprint FROM served WHERE endpoint_id = ?1
        AND fingerprint NOT IN (
            SELECT fingerprint FROM served WHERE endpoint_id = ?1
            ORDER BY first_seen, fingerprint LIMIT 1)
        AND fingerprint NOT IN (
            SELECT fingerprint FROM served WHERE endpoint_id = ?1
            ORDER BY last_seen DESC, fingerprint LIMIT ?2)
"""
_DELETE_ORPHAN_CERTIFICATE = """
    DELETE FROM certificate WHERE fingerprint = ?1
        AND NOT EXISTS (SELECT 1 FROM served WHERE fingerprint = ?1)
        AND NOT EXISTS (SELECT 1 FROM endpoint WHERE fingerprint = ?1)
"""
_PRUNE_EVENTS = """
    DELETE FROM change_event WHERE endpoint_id = ?1 AND rowid NOT IN (
        SELECT rowid FROM change_event WHERE endpoint_id = ?1 ORDER BY at DESC LIMIT ?2)
"""


def prune(conn: sqlite3.Connection, endpoint: int) -> None:
    """Hold one endpoint's history to the policy; call inside the write transaction."""
    keep_recent = MAX_CERTIFICATES_PER_ENDPOINT - 1
    gone = [row[0] for row in conn.execute(_DROPPED_SERVED, (endpoint, keep_recent))]
    for fingerprint in gone:
        conn.execute(
            "DELETE FROM served WHERE endpoint_id = ? AND fingerprint = ?", (endpoint, fingerprint)
        )
        conn.execute(_DELETE_ORPHAN_CERTIFICATE, (fingerprint,))
    conn.execute(_PRUNE_EVENTS, (endpoint, MAX_EVENTS_PER_ENDPOINT))

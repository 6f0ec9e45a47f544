"""`tlsprobe history HOST`: the certificates an endpoint served, read from the exporter's
history database without disturbing it (read-only, safe while the exporter writes).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tlsprobe.exporter.history import timeline
from tlsprobe.exporter.history.db import (
    ChangeEvent,
    StateError,
    TimelineEntry,
    describe,
    history_path,
    open_read_only,
    read_classes,
    read_events,
    read_timeline,
)
from tlsprobe.model import UNREADABLE, EndpointKey, readable_time
from tlsprobe.probe.change import Change
from tlsprobe.probe.names import host_port


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _expiry(not_after: float, now: float) -> str:
    if not readable_time(not_after):
        return UNREADABLE
    days = (not_after - now) / 86400
    date = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%d")
    if days < 0:
        return f"{date} (expired {-days:.0f} d ago)"
    return f"{date} (in {days:.0f} d)"


def _socket(address: str, port: int) -> str:
    if not address:
        return f"?:{port}"
    return host_port(address, port)


def format_timeline(
    entries: Sequence[TimelineEntry],
    now: float,
    events: Sequence[ChangeEvent] = (),
    classes: Mapping[tuple[EndpointKey, float], Change] | None = None,
) -> str:
    """One block per endpoint: its spans as they were (a rollback is a span of its own, the
    current one is marked), then every change event with its class (`classes`)."""
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
                kind = (classes or {}).get((key, change.at))
                words = ""
                if kind is not None:
                    words = f"  risky: {kind.text}" if kind.risky else "  clean renewal"
                    if kind.details and not kind.risky:
                        words += f" ({kind.text})"
                lines.append(f"    {_when(change.at)}  {old} -> {change.new[:16]}{rollback}{words}")
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
        keys = list(dict.fromkeys(e.key for e in entries))
        events = [e for key in keys for e in read_events(conn, key)]
        classes = {k: c for key in keys for k, c in read_classes(conn, key).items()}
    except sqlite3.Error as exc:
        print(f"tlsprobe history: {describe(path, exc)}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    if not entries:
        print(f"tlsprobe history: nothing recorded for {host} in {path}", file=sys.stderr)
        return 3
    print(format_timeline(entries, time.time(), events, classes))
    return 0

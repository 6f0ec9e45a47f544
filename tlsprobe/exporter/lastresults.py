"""The last result of every endpoint on disk, so that a restarted exporter serves it at once.

Without it a fresh exporter shows no endpoint series until its first cycle, Prometheus sees the
series vanish, and pages that are still true resolve while `for:` timers start over. At start
the exporter loads these results (for the targets still configured), publishes them unchanged
(`tlsprobe_last_probe_timestamp_seconds` is the time each was taken, so their age is plain) and
probes as usual; each new result replaces its restored one. An endpoint that a cycle no longer
finds (an address that left the zone, or the address-less row of a discovery that failed and
then succeeded) is forgotten here too, so that a restart restores only current endpoints.

`state_dir/results.sqlite3` holds one row per endpoint, and one per sender of the send side
(its last judged session, target `sender:NAME`), and the last canary outcome of each sender
that has one (table `last_canary`), so that a restart resolves no sender or canary page
either, nor starts its `for:` over. Results are collected in memory and
written every `FLUSH_INTERVAL` seconds and at stop, in one transaction, from a worker thread;
a result whose verdict did not change since the last write only moves its timestamp, so the
steady state writes a few bytes per probe. A kill -9 loses at most one interval of results
(the certificate history, which drives the drift alerts, is written at once by `store`).
A write that fails is logged and retried at the next flush; it never stops probing.

Every message is stored clipped (`MAX_STORED_MESSAGE` characters; a relay's 160 MB refusal once
made a 321 MB file), and at open a row larger than `MAX_ROW_BYTES` (written before that bound)
is dropped, and the file is compacted (VACUUM) when most of it is free pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Set
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tlsprobe.exporter.history.store import HistoryStore, StateError
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.state import SENDER_TARGET, CanaryState, result_key, state_for
from tlsprobe.model import (
    CanaryReason,
    CertFacts,
    Check,
    CheckName,
    ConnectorRef,
    Endpoint,
    Mode,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe.x509.facts import facts_from_der

if TYPE_CHECKING:  # types only: reading the results file needs no config parser, no send side
    from tlsprobe.exporter.config import Config
    from tlsprobe.exporter.senders import SenderKey

log = logging.getLogger("tlsprobe.exporter.lastresults")

RESULTS_FILENAME = "results.sqlite3"
FLUSH_INTERVAL = 15.0
FORMAT = 1
MAX_STORED_MESSAGE = 4096
"""Characters kept of each message (a probe error, a check's, a canary's)."""
MAX_ROW_BYTES = 1 << 20
"""A stored row larger than this is dropped at open: only a row from before the message bound
can be (ten certificates and their checks take a few hundred KiB at most)."""
_COMPACT_FREE_BYTES = 1 << 20
"""Free pages beyond this, and more than half the file, are given back by VACUUM at open."""

Key = tuple[str, str, str, str, str]
"""EndpointState.label_values: (tenant, target, host, address, port)."""

_SCHEMA = """
    CREATE TABLE IF NOT EXISTS last_result (
        tenant TEXT NOT NULL, target TEXT NOT NULL, host TEXT NOT NULL,
        address TEXT NOT NULL, port TEXT NOT NULL,
        started_at REAL NOT NULL,
        phases TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (tenant, target, host, address, port)
    ) WITHOUT ROWID
"""
_CANARY_SCHEMA = """
    CREATE TABLE IF NOT EXISTS last_canary (
        tenant TEXT NOT NULL, sender TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (tenant, sender)
    ) WITHOUT ROWID
"""
_DELETE = (
    "DELETE FROM last_result WHERE tenant = ? AND target = ? AND host = ? AND address = ?"
    " AND port = ?"
)
_CANARY_UPSERT = """
    INSERT INTO last_canary VALUES (?, ?, ?)
    ON CONFLICT (tenant, sender) DO UPDATE SET body = excluded.body
"""
_UPSERT = """
    INSERT INTO last_result VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, target, host, address, port) DO UPDATE SET
        started_at = excluded.started_at, phases = excluded.phases, body = excluded.body
"""
_TOUCH = """
    UPDATE last_result SET started_at = ?, phases = ?
    WHERE tenant = ? AND target = ? AND host = ? AND address = ? AND port = ?
"""


class ResultStore:
    """Last results by endpoint: `put` on the event loop, `flush` from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._swap = threading.Lock()
        self._pending: dict[Key, ProbeResult] = {}
        self._forgotten: set[Key] = set()
        self._canaries: dict[SenderKey, CanaryState] = {}
        self._written: dict[Key, str] = {}
        self._failing = False
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(_SCHEMA)
            self._conn.execute(_CANARY_SCHEMA)
            self._drop_oversized()
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot be used for last results ({exc})") from exc

    def _drop_oversized(self) -> None:
        """Rows past `MAX_ROW_BYTES` go unread, and the file gives their space back."""
        dropped = 0
        for table in ("last_result", "last_canary"):
            cursor = self._conn.execute(
                f"DELETE FROM {table} WHERE length(CAST(body AS BLOB)) > ?",  # noqa: S608
                (MAX_ROW_BYTES,),
            )
            dropped += max(cursor.rowcount, 0)
        if dropped:
            log.warning("last results %s: %d oversized rows dropped", self.path, dropped)
        pages, free, size = (
            self._conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        if free * size > _COMPACT_FREE_BYTES and 2 * free > pages:
            self._conn.execute("VACUUM")

    def put(self, key: Key, result: ProbeResult) -> None:
        # A lock of its own, held for a dict operation only: the event loop never waits for a
        # flush's disk write, and a flush never iterates a dict the loop is adding to.
        with self._swap:
            self._pending[key] = result
            self._forgotten.discard(key)

    def forget(self, keys: Iterable[Key]) -> None:
        """Endpoints a cycle no longer found (an early DNS failure's address-less row, an
        address that left the zone): their rows go with the next flush, so that a restart
        restores only the current endpoints."""
        with self._swap:
            for key in keys:
                self._pending.pop(key, None)
                self._forgotten.add(key)

    def put_canary(self, key: SenderKey, state: CanaryState) -> None:
        """A sender's latest canary outcome, written with the next flush."""
        with self._swap:
            self._canaries[key] = state

    def load_canaries(self) -> dict[SenderKey, CanaryState]:
        """Every stored canary outcome that can still be read (a row that cannot is skipped)."""
        with self._lock:
            rows = self._conn.execute("SELECT tenant, sender, body FROM last_canary").fetchall()
        loaded = {}
        for tenant, sender, body in rows:
            state = decode_canary(body)
            if state is not None:
                loaded[(tenant, sender)] = state
        return loaded

    def load(self) -> list[tuple[Key, ProbeResult]]:
        """Every stored result that can still be read (a row that cannot is skipped)."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM last_result").fetchall()
        loaded = []
        shared = _Shared()
        for row in rows:
            key: Key = tuple(row[:5])
            result = decode(row[7], row[5], row[6], shared)
            if result is not None:
                loaded.append((key, result))
                self._written[key] = _digest(row[7])
        return loaded

    def prune(self, keep: Iterable[Key]) -> None:
        """Drop the rows of endpoints no longer configured."""
        wanted = set(keep)
        with self._lock:
            keys = self._conn.execute(
                "SELECT tenant, target, host, address, port FROM last_result"
            ).fetchall()
            gone = [k for k in keys if tuple(k) not in wanted]
            self._conn.executemany(_DELETE, gone)
            senders = {(k[0], k[2]) for k in wanted if k[1].startswith(SENDER_TARGET)}
            stored = self._conn.execute("SELECT tenant, sender FROM last_canary").fetchall()
            self._conn.executemany(
                "DELETE FROM last_canary WHERE tenant = ? AND sender = ?",
                [k for k in stored if tuple(k) not in senders],
            )

    def flush(self) -> None:
        """Write what was put since the last flush; on failure keep it for the next one."""
        with self._lock:
            with self._swap:
                pending, self._pending = self._pending, {}
                canaries, self._canaries = self._canaries, {}
                forgotten, self._forgotten = self._forgotten, set()
            if not pending and not canaries and not forgotten:
                return
            try:
                self._write(pending, canaries, forgotten)
            except sqlite3.Error as exc:
                with self._swap:
                    self._pending = pending | self._pending
                    self._canaries = canaries | self._canaries
                    self._forgotten |= forgotten - self._pending.keys()
                if not self._failing:
                    log.warning("last results %s cannot be written: %s", self.path, exc)
                self._failing = True
                return
            if self._failing:
                log.info("last results %s are written again", self.path)
            self._failing = False

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._conn.close()

    def _write(
        self,
        pending: dict[Key, ProbeResult],
        canaries: dict[SenderKey, CanaryState],
        forgotten: Set[Key] = frozenset(),
    ) -> None:
        upserts, touches, digests = [], [], {}
        for key, result in pending.items():
            body = encode(result)
            digest = _digest(body)
            phases = json.dumps(dict(result.phases))
            if self._written.get(key) == digest:
                touches.append((result.started_at, phases, *key))
            else:
                upserts.append((*key, result.started_at, phases, body))
                digests[key] = digest
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_UPSERT, upserts)
            self._conn.executemany(_TOUCH, touches)
            self._conn.executemany(
                _CANARY_UPSERT, [(*key, encode_canary(c)) for key, c in canaries.items()]
            )
            self._conn.executemany(_DELETE, list(forgotten))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._written.update(digests)
        for key in forgotten:
            self._written.pop(key, None)


def _clip(text: str) -> str:
    """A stored message: the whole of any real one, a bounded start of a hostile one."""
    if len(text) <= MAX_STORED_MESSAGE:
        return text
    return text[: MAX_STORED_MESSAGE - 3] + "..."


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


# --- the record --------------------------------------------------------------------------------


def encode(result: ProbeResult) -> str:
    """The verdict of a result as JSON: everything but the time taken and the phase timings."""
    endpoint = result.endpoint
    record: dict[str, Any] = {
        "format": FORMAT,
        "endpoint": [
            endpoint.host,
            endpoint.port,
            endpoint.mode.value,
            endpoint.address,
            endpoint.sni,
            endpoint.ehlo_name,
            endpoint.target,
        ],
        "address": result.address,
        "status": int(result.status),
        "error": [result.error.kind.value, _clip(result.error.message)] if result.error else None,
        "tls": [result.tls.version, result.tls.cipher] if result.tls else None,
        "chain": [base64.b64encode(c.der).decode() for c in result.chain],
        "checks": [
            [str(c.name), int(c.status), _clip(c.message), _clip(c.symptom), c.reason]
            for c in result.checks
        ],
    }
    if result.connector is not None:
        ref = result.connector
        record["connector"] = [ref.direction, ref.name, ref.rule]
    return json.dumps(record, separators=(",", ":"))


def decode(
    body: str, started_at: float, phases: str, shared: _Shared | None = None
) -> ProbeResult | None:
    """The result `encode` wrote, or None when it cannot be read back (logged). Rows decoded
    with one `shared` share their equal certificates and checks (both immutable)."""
    try:
        return _decode(json.loads(body), started_at, json.loads(phases), shared or _Shared())
    except Exception as exc:  # a stored row must never stop the start
        log.info("a stored last result cannot be read, skipped: %s", exc)
        return None


class _Shared:
    """What equal rows of one read have in common: a fleet's endpoints send the same chain and
    get the same checks, so 10,000 rows hold a few hundred distinct ones. Parsing each distinct
    certificate and building each distinct check once makes a read several times cheaper. Lives
    for one read: never larger than what that read returns."""

    def __init__(self) -> None:
        self.facts: dict[str, CertFacts] = {}
        self.checks: dict[tuple[Any, ...], Check] = {}

    def certificate(self, der: str) -> CertFacts:
        facts = self.facts.get(der)
        if facts is None:
            facts = self.facts[der] = facts_from_der(base64.b64decode(der))
        return facts

    def check(self, row: list[Any]) -> Check:
        name, status, message, symptom, reason = row
        key = (name, status, message, symptom, reason)
        try:
            return self.checks[key]
        except KeyError:
            check = self.checks[key] = Check(
                CheckName(name), Status(status), message, symptom, reason
            )
        except TypeError:  # an unhashable field: decoded as it is, not shared
            check = Check(CheckName(name), Status(status), message, symptom, reason)
        return check


def _decode(
    record: dict[str, Any], started_at: float, phases: dict[str, float], shared: _Shared
) -> ProbeResult:
    if record.get("format") != FORMAT:
        raise ValueError(f"unknown format {record.get('format')!r}")
    host, port, mode, address, sni, ehlo_name, target = record["endpoint"]
    error = record["error"]
    tls = record["tls"]
    return ProbeResult(
        endpoint=Endpoint(host, int(port), Mode(mode), address, sni, ehlo_name, target),
        address=record["address"],
        started_at=float(started_at),
        status=Status(record["status"]),
        error=ProbeError(Reason(error[0]), error[1]) if error else None,
        tls=TlsInfo(tls[0], tls[1]) if tls else None,
        chain=tuple(map(shared.certificate, record["chain"])),
        checks=tuple(map(shared.check, record["checks"])),
        connector=ConnectorRef(*map(str, record["connector"])) if record.get("connector") else None,
        phases=MappingProxyType({str(k): float(v) for k, v in phases.items()}),
    )


def encode_canary(state: CanaryState) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "success": state.success,
            "at": state.at,
            "round_trip": state.round_trip,
            "reason": state.reason.value if state.reason else None,
            "message": _clip(state.message),
            "last_success_at": state.last_success_at,
        },
        separators=(",", ":"),
    )


def decode_canary(body: str) -> CanaryState | None:
    """The outcome `encode_canary` wrote, or None when it cannot be read back (logged)."""
    try:
        record = json.loads(body)
        if record.get("format") != FORMAT:
            raise ValueError(f"unknown format {record.get('format')!r}")
        round_trip, reason = record["round_trip"], record["reason"]
        return CanaryState(
            success=bool(record["success"]),
            at=float(record["at"]),
            round_trip=None if round_trip is None else float(round_trip),
            reason=None if reason is None else CanaryReason(reason),
            message=str(record["message"]),
            last_success_at=float(record["last_success_at"]),
        )
    except Exception as exc:  # a stored row must never stop the start
        log.info("a stored canary outcome cannot be read, skipped: %s", exc)
        return None


def read_rows(path: Path) -> list[tuple[Key, ProbeResult]]:
    """The current rows of a results file, opened read-only (a running exporter may be writing
    it): what `restore` would publish, before it picks the configured ones. A row that cannot
    be read is skipped; a missing file is an `OSError`."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("SELECT * FROM last_result").fetchall()
    finally:
        conn.close()
    loaded = []
    shared = _Shared()
    for row in rows:
        result = decode(row[7], row[5], row[6], shared)
        if result is not None:
            loaded.append((tuple(row[:5]), result))
    return _current(loaded)


# --- start-up -----------------------------------------------------------------------------------


def restore(
    store: ResultStore, config: Config, results: LatestResults, history: HistoryStore | None
) -> tuple[int, list[tuple[Key, ProbeResult]]]:
    """Publish the stored results of the configured targets; returns how many, and the stored
    verdicts of the configured senders (rows `senders.result_key`) for the send side."""
    targets = {(t.tenant, t.name): t for t in config.targets}
    senders = {s.key for s in config.send.senders} if config.send else set()
    restored: list[Key] = []
    sender_rows: list[tuple[Key, ProbeResult]] = []
    for key, result in _current(store.load()):
        if key[1].startswith(SENDER_TARGET):
            if (key[0], key[2]) in senders:
                sender_rows.append((key, result))
            continue
        target = targets.get((key[0], key[1]))
        if target is None:
            continue
        state = state_for(target, result)
        if history is not None:
            tenant, name, host, address, port = key
            state = replace(state, drift=history.drift((tenant, name, host, address, int(port))))
        results.put(state)
        restored.append(key)
    # Every configured sender's rows stay (its canary outcome may be stored without a verdict).
    configured = [result_key(s) for s in config.send.senders] if config.send else []
    store.prune([*restored, *configured])
    return len(restored), sender_rows


def _current(rows: list[tuple[Key, ProbeResult]]) -> list[tuple[Key, ProbeResult]]:
    """Rows a running exporter would still show. Files written before endpoints were forgotten
    as they went can hold both a target's address-less row (discovery failed: no endpoint) and
    rows with addresses; a cycle publishes one kind or the other, so only the newer kind of
    each target is current."""
    newest: dict[tuple[str, str, bool], float] = {}
    for key, result in rows:
        side = (key[0], key[1], key[3] == "")
        newest[side] = max(newest.get(side, 0.0), result.started_at)
    return [
        (key, result)
        for key, result in rows
        if newest[(key[0], key[1], key[3] == "")] >= newest.get((key[0], key[1], key[3] != ""), 0.0)
    ]

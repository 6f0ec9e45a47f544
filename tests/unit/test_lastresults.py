"""The last-results store: a result read back equals the one written; unchanged verdicts only
move their timestamp; a row that cannot be read is skipped, never raised."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Hierarchy
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.lastresults import (
    MAX_STORED_MESSAGE,
    ResultStore,
    decode,
    decode_canary,
    encode,
    encode_canary,
    restore,
)
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.state import CanaryState
from tlsprobe.model import (
    CanaryReason,
    Capture,
    Endpoint,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    TlsInfo,
)
from tlsprobe.probe.prober import judge
from tlsprobe.probe.smtp.reply import MESSAGE_CHARS
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
KEY = ("contoso", "relay", "mail.contoso.test", "127.0.0.1", "25")
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
ENDPOINT = Endpoint(host="mail.contoso.test", address="127.0.0.1", sni="mail.contoso.test")


def result_for(
    pki: Hierarchy, trust: TrustStore, *names: str, error: ProbeError | None = None
) -> ProbeResult:
    leaf = pki.leaf(names)
    capture = Capture(
        address="127.0.0.1",
        chain_der=tuple(c.public_bytes(Encoding.DER) for c in pki.chain(leaf)) if not error else (),
        tls=None if error else TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        error=error,
        phases=MappingProxyType({"connect": 0.001, "total": 0.02}),
    )
    return judge(ENDPOINT, capture, POLICY, trust, started_at=NOW.timestamp(), now=NOW)


def test_a_result_reads_back_equal(pki: Hierarchy, trust: TrustStore) -> None:
    for result in (
        result_for(pki, trust, "mail.contoso.test"),
        result_for(pki, trust, "www.fabrikam.example"),
        result_for(pki, trust, "x", error=ProbeError(Reason.TIMEOUT, "no banner in 30 s")),
    ):
        back = decode(encode(result), result.started_at, '{"connect": 0.001, "total": 0.02}')
        assert back is not None
        assert replace(back, transcript=result.transcript) == result


def test_rows_read_together_share_equal_parts_and_read_back_equal(
    pki: Hierarchy, trust: TrustStore, tmp_path: Path
) -> None:
    # A fleet: endpoints sending the same chain get equal certificates and checks; a store's
    # read builds each once, and every row still reads back equal to what was written.
    results = [result_for(pki, trust, "mail.contoso.test")] * 2
    results.append(result_for(pki, trust, "www.fabrikam.example"))
    store = ResultStore(tmp_path / "results.sqlite3")
    for n, result in enumerate(results):
        store.put((*KEY[:3], f"127.0.0.{n + 1}", "25"), result)
    store.flush()
    loaded = dict(store.load())
    store.close()
    back = [loaded[(*KEY[:3], f"127.0.0.{n + 1}", "25")] for n in range(3)]
    for result, read in zip(results, back, strict=True):
        assert replace(read, transcript=result.transcript) == result
    assert back[0].chain[0] is back[1].chain[0]
    assert all(a is b for a, b in zip(back[0].checks, back[1].checks, strict=True))
    assert back[0].checks != back[2].checks  # only equal ones are shared


def test_a_check_with_an_unhashable_field_still_reads_back(
    pki: Hierarchy, trust: TrustStore
) -> None:
    body = encode(result_for(pki, trust, "x", error=ProbeError(Reason.TIMEOUT, "late")))
    record = json.loads(body)
    record["checks"] = [["starttls", 2, ["not", "text"], "", None]]
    back = decode(json.dumps(record), 1.0, "{}")
    assert back is not None
    assert repr(back.checks[0].message) == "['not', 'text']"  # as it was stored


def test_unreadable_rows_are_skipped() -> None:
    assert decode("{", 1.0, "{}") is None
    assert decode('{"format": 99}', 1.0, "{}") is None
    assert decode('{"format": 1, "endpoint": []}', 1.0, "{}") is None


def test_an_unchanged_verdict_only_moves_its_timestamp(
    tmp_path: Path, pki: Hierarchy, trust: TrustStore
) -> None:
    path = tmp_path / "results.sqlite3"
    store = ResultStore(path)
    first = result_for(pki, trust, "mail.contoso.test")
    store.put(KEY, first)
    store.flush()
    later = replace(first, started_at=first.started_at + 300)
    store.put(KEY, later)
    store.close()
    # closing(): sqlite3's own context manager commits but leaves the connection open, which
    # Python 3.13 reports as a ResourceWarning wherever the garbage collector happens to run.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT started_at, body FROM last_result").fetchall()
    assert rows == [(later.started_at, encode(first))]
    again = ResultStore(path)
    [(key, loaded)] = again.load()
    assert key == KEY and loaded.started_at == later.started_at
    again.prune([])
    assert again.load() == []
    again.close()


def test_a_failed_write_is_kept_for_the_next_flush(
    tmp_path: Path, pki: Hierarchy, trust: TrustStore
) -> None:
    store = ResultStore(tmp_path / "results.sqlite3")
    store.put(KEY, result_for(pki, trust, "mail.contoso.test"))
    store._conn.execute("PRAGMA query_only = ON")
    store.flush()  # logged, not raised
    assert store.load() == []
    store._conn.execute("PRAGMA query_only = OFF")
    store.flush()
    assert [key for key, _ in store.load()] == [KEY]
    store.close()


FAILED_CANARY = CanaryState(
    False, 1796000000.5, None, CanaryReason.MISSING, "not received within 60 s", 1795990000.0
)
GOOD_CANARY = CanaryState(True, 1796000100.25, 0.042, last_success_at=1796000100.25)


def test_a_canary_outcome_reads_back_equal_after_a_reopen(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.sqlite3")
    store.put_canary(("contoso", "relay-1"), FAILED_CANARY)
    store.put_canary(("contoso", "relay-2"), GOOD_CANARY)
    store.close()
    again = ResultStore(tmp_path / "results.sqlite3")
    assert again.load_canaries() == {
        ("contoso", "relay-1"): FAILED_CANARY,
        ("contoso", "relay-2"): GOOD_CANARY,
    }
    # Pruned with the senders no longer configured (a sender's key in the results' form).
    again.prune([("contoso", "sender:relay-2", "relay-2", "", "")])
    assert again.load_canaries() == {("contoso", "relay-2"): GOOD_CANARY}
    again.close()


def test_unreadable_canary_rows_are_skipped() -> None:
    assert decode_canary("{") is None
    assert decode_canary('{"format": 99}') is None
    assert decode_canary('{"format": 1, "success": false}') is None
    assert decode_canary(encode_canary(FAILED_CANARY)) == FAILED_CANARY


def test_a_file_holding_both_sides_of_a_dns_failure_restores_the_newer(
    tmp_path: Path, pki: Hierarchy, trust: TrustStore
) -> None:
    """Files written before endpoints were forgotten as they went: a target's address-less
    failure row beside rows with addresses. Only the newer kind is current."""
    config = parse_config(
        {"tenants": {"contoso": {"targets": [{"name": "relay", "host": "mail.contoso.test"}]}}},
        base_dir=tmp_path,
    )
    failure = replace(
        result_for(pki, trust, "x", error=ProbeError(Reason.DNS, "NXDOMAIN")),
        address=None,
        endpoint=replace(ENDPOINT, address=None),
    )
    healthy = result_for(pki, trust, "mail.contoso.test")
    failed_key = (*KEY[:3], "", "25")
    for failure_at, healthy_at, expected in ((1.0, 2.0, "127.0.0.1"), (3.0, 2.0, "")):
        store = ResultStore(tmp_path / f"results-{failure_at}.sqlite3")
        store.put(failed_key, replace(failure, started_at=failure_at))
        store.put(KEY, replace(healthy, started_at=healthy_at))
        store.flush()
        results = LatestResults()
        count, _ = restore(store, config, results, None)
        store.close()
        assert count == 1
        assert [s.key[3] for s in results.snapshot()] == [expected]


def test_messages_are_stored_bounded(pki: Hierarchy, trust: TrustStore, tmp_path: Path) -> None:
    """A relay's 160 MB refusal became the stored canary message (a 321 MB file); a probe
    error's text is the peer's too. What is stored is bounded, whoever built the value."""
    huge = "z" * 2_000_000
    store = ResultStore(tmp_path / "results.sqlite3")
    store.put(KEY, result_for(pki, trust, error=ProbeError(Reason.PROTOCOL, huge)))
    refused = CanaryState(False, 1.0, None, CanaryReason.SUBMIT_REFUSED, huge)
    store.put_canary(("contoso", "relay-1"), refused)
    store.close()
    assert (tmp_path / "results.sqlite3").stat().st_size < 200_000
    reopened = ResultStore(tmp_path / "results.sqlite3")
    [(_, result)] = reopened.load()
    assert result.error is not None and len(result.error.message) <= MAX_STORED_MESSAGE
    state = reopened.load_canaries()[("contoso", "relay-1")]
    assert len(state.message) <= MESSAGE_CHARS
    reopened.close()


def test_an_oversized_row_from_before_the_bound_is_dropped_and_its_space_given_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.sqlite3"
    ResultStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        huge = '"message":"' + "z" * 8_000_000 + '"'
        body = encode_canary(GOOD_CANARY).replace('"message":""', huge)
        conn.execute("INSERT INTO last_canary VALUES ('contoso', 'relay-1', ?)", (body,))
        conn.commit()
    assert path.stat().st_size > 8_000_000
    store = ResultStore(path)
    assert store.load_canaries() == {}
    store.close()
    assert path.stat().st_size < 1_000_000

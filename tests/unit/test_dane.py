"""DANE judging: TLSA records against chains built in the test, every usage/selector/type;
the DANE-TA verdict cache (per chain, record and names; bounded; missed on change)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Hierarchy, Issued, KeyKind, make_hierarchy
from tlsprobe import policyreport
from tlsprobe.model import Check, CheckName, DnssecStatus, Status, Tlsa, TlsaMatch, overall_status
from tlsprobe.probe.dns import dane, danecache
from tlsprobe.probe.dns.dane import TlsaAnswer, association, parse_tlsa
from tlsprobe.probe.x509 import trust

HOST = "mail.contoso.test"
NAME = "_25._tcp.mail.contoso.test"


def record(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> Tlsa:
    data = association(cert, selector, mtype)
    assert data is not None
    return Tlsa(usage, selector, mtype, data)


def judge(
    records: list[Tlsa],
    chain: tuple[x509.Certificate, ...],
    *,
    status: DnssecStatus = DnssecStatus.SECURE,
    mx_status: DnssecStatus | None = DnssecStatus.SECURE,
    host: str = HOST,
    next_hop: str | None = "contoso.test",
) -> tuple[Check | None, tuple[TlsaMatch, ...]]:
    answer = TlsaAnswer(NAME, status, tuple(records), base=host)
    check, findings = dane.judge(
        answer,
        [c.public_bytes(Encoding.DER) for c in chain],
        host=host,
        next_hop=next_hop,
        mx_status=mx_status,
        now=datetime.now(UTC),
    )
    return check, tuple(v.match for v in findings.records)


@pytest.fixture(scope="module")
def leaf(pki: Hierarchy) -> Issued:
    return pki.leaf([HOST])


@pytest.fixture(scope="module")
def rotated(pki: Hierarchy) -> Issued:
    """The same name under a new key: what a renewal with a fresh key serves."""
    return pki.leaf([HOST], key=KeyKind.EC_P256)


def test_3_1_1_matching_with_a_staged_next_key_is_ok(
    pki: Hierarchy, leaf: Issued, rotated: Issued
) -> None:
    records = [record(3, 1, 1, leaf.cert), record(3, 1, 1, rotated.cert)]
    check, matches = judge(records, pki.chain(leaf))
    assert check is not None and check.status is Status.OK, check
    assert matches == (TlsaMatch.MATCHED, TlsaMatch.NEXT_KEY)
    assert "next key staged" in check.message


def test_a_single_matching_key_warns_about_rollover(pki: Hierarchy, leaf: Issued) -> None:
    check, matches = judge([record(3, 1, 1, leaf.cert)], pki.chain(leaf))
    assert check is not None and check.status is Status.WARNING
    assert "only one key covered" in check.message
    assert matches == (TlsaMatch.MATCHED,)


def test_rotated_key_without_tlsa_update_is_critical_and_names_record_and_served_key(
    pki: Hierarchy, leaf: Issued, rotated: Issued
) -> None:
    published = record(3, 1, 1, leaf.cert)
    check, matches = judge([published], pki.chain(rotated))
    assert check is not None and check.status is Status.CRITICAL
    assert published.data.hex()[:10] in check.message
    served = association(rotated.cert, 1, 1)
    assert served is not None and served.hex() in check.message
    assert check.symptom
    assert matches == (TlsaMatch.NO_MATCH,)


def test_3_1_1_survives_a_renewal_with_the_same_key(pki: Hierarchy, leaf: Issued) -> None:
    renewed = pki.leaf([HOST], days=120)
    assert renewed.der != leaf.der
    check, _ = judge(
        [record(3, 1, 1, leaf.cert), record(2, 1, 1, pki.intermediate.cert)], pki.chain(renewed)
    )
    assert check is not None and check.status is Status.OK


def test_3_0_1_hashes_the_whole_certificate_so_a_renewal_breaks_it(
    pki: Hierarchy, leaf: Issued
) -> None:
    """RFC 7671 5.1: selector 0 pins the certificate; a same-key renewal no longer matches."""
    renewed = pki.leaf([HOST], days=120)
    check, matches = judge([record(3, 0, 1, leaf.cert)], pki.chain(renewed))
    assert check is not None and check.status is Status.CRITICAL
    assert matches == (TlsaMatch.NO_MATCH,)


def test_2_1_1_on_the_intermediate_plus_3_1_1_is_ok(pki: Hierarchy, leaf: Issued) -> None:
    records = [record(3, 1, 1, leaf.cert), record(2, 1, 1, pki.intermediate.cert)]
    check, matches = judge(records, pki.chain(leaf))
    assert check is not None and check.status is Status.OK, check
    assert matches == (TlsaMatch.MATCHED, TlsaMatch.MATCHED)


@pytest.mark.parametrize(("selector", "mtype"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)])
def test_every_selector_and_matching_type_of_dane_ta(
    pki: Hierarchy, leaf: Issued, selector: int, mtype: int
) -> None:
    check, matches = judge([record(2, selector, mtype, pki.intermediate.cert)], pki.chain(leaf))
    assert matches == (TlsaMatch.MATCHED,)
    assert check is not None and check.status is Status.WARNING  # one key: no rollover


def test_dane_ta_checks_the_name_against_mx_and_next_hop(pki: Hierarchy) -> None:
    other = pki.leaf(["relay.fabrikam.test"])
    check, matches = judge([record(2, 1, 1, pki.intermediate.cert)], pki.chain(other))
    assert matches == (TlsaMatch.NO_MATCH,)
    assert check is not None and check.status is Status.CRITICAL
    # The next-hop domain is a reference identifier (RFC 7672 3.2.3) when the MX is secure.
    domain_cert = pki.leaf(["contoso.test"])
    _, ok = judge([record(2, 1, 1, pki.intermediate.cert)], pki.chain(domain_cert))
    assert ok == (TlsaMatch.MATCHED,)


def test_dane_ta_needs_the_anchor_in_the_chain_sent(pki: Hierarchy, leaf: Issued) -> None:
    check, matches = judge([record(2, 1, 1, pki.intermediate.cert)], (leaf.cert,))
    assert matches == (TlsaMatch.NO_MATCH,)
    assert check is not None and check.status is Status.CRITICAL


def test_dane_ee_ignores_names_and_dates(pki: Hierarchy) -> None:
    expired = pki.leaf(
        ["elsewhere.test"],
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2021, 1, 1, tzinfo=UTC),
    )
    _, matches = judge([record(3, 1, 1, expired.cert)], pki.chain(expired))
    assert matches == (TlsaMatch.MATCHED,)


def test_only_pkix_usages_is_a_warning_not_a_match(pki: Hierarchy, leaf: Issued) -> None:
    records = [record(1, 1, 1, leaf.cert), record(0, 1, 1, pki.root.cert)]
    check, matches = judge(records, pki.chain(leaf))
    assert matches == (TlsaMatch.UNUSABLE, TlsaMatch.UNUSABLE)
    assert check is not None and check.status is Status.WARNING
    assert "no usable TLSA record" in check.message


def test_malformed_records_are_unusable(pki: Hierarchy, leaf: Issued) -> None:
    records = [Tlsa(3, 1, 1, b"\x01" * 20), Tlsa(3, 2, 1, b"\x01" * 32), Tlsa(3, 1, 1, b"")]
    check, matches = judge(records, pki.chain(leaf))
    assert matches == (TlsaMatch.UNUSABLE,) * 3
    assert check is not None and check.status is Status.WARNING


def test_a_malformed_record_beside_a_good_one_does_not_hide_the_match(
    pki: Hierarchy, leaf: Issued
) -> None:
    records = [Tlsa(3, 1, 1, b"\x01" * 20), record(3, 1, 1, leaf.cert), record(3, 1, 2, leaf.cert)]
    check, matches = judge(records, pki.chain(leaf))
    assert matches == (TlsaMatch.UNUSABLE, TlsaMatch.MATCHED, TlsaMatch.MATCHED)
    # Two records for the same key are still one key: no rollover scheme.
    assert check is not None and check.status is Status.WARNING


def test_bogus_is_critical_with_the_extended_error(pki: Hierarchy, leaf: Issued) -> None:
    answer = TlsaAnswer(NAME, DnssecStatus.BOGUS, detail="EDE 6 (DNSSEC Bogus)")
    check, findings = dane.judge(
        answer, [leaf.der], host=HOST, next_hop=None, mx_status=None, now=datetime.now(UTC)
    )
    # RFC 7672 2.1.1: validating senders defer all mail to the host.
    assert check is not None and check.status is Status.CRITICAL
    assert "bogus" in check.message and "EDE 6" in check.message
    assert findings.applicable
    assert overall_status([check]) is Status.CRITICAL


def test_a_bogus_mx_answer_is_critical(pki: Hierarchy, leaf: Issued) -> None:
    check, _ = judge([record(3, 1, 1, leaf.cert)], pki.chain(leaf), mx_status=DnssecStatus.BOGUS)
    assert check is not None and check.status is Status.CRITICAL
    assert "MX lookup" in check.message and "bogus" in check.message
    # The TLSA records are fine here: what senders wait for is an MX answer that validates.
    assert "TLSA records are fixed" not in check.symptom
    assert "MX" in check.symptom, check.symptom


def test_a_failed_lookup_makes_an_otherwise_healthy_result_unknown(leaf: Issued) -> None:
    answer = TlsaAnswer(NAME, DnssecStatus.FAILED, detail="TLSA lookup timed out")
    check, findings = dane.judge(
        answer, [leaf.der], host=HOST, next_hop=None, mx_status=None, now=datetime.now(UTC)
    )
    assert check is not None and check.status is Status.UNKNOWN
    assert not findings.applicable
    ok = Check(CheckName.HOSTNAME, Status.OK, "fine")
    # Not "OK": a sender seeing the same failure defers; not critical: it may be ours alone.
    assert overall_status([ok, check]) is Status.UNKNOWN
    assert overall_status([Check(CheckName.NOT_EXPIRED, Status.WARNING, "soon"), check]) is (
        Status.WARNING
    )
    # Other unknowns are "not judged" and leave the roll-up alone.
    unjudged = Check(CheckName.HOSTNAME, Status.UNKNOWN, "probed by IP address")
    assert overall_status([ok, unjudged]) is Status.OK


def test_no_records_is_not_applicable(leaf: Issued) -> None:
    answer = TlsaAnswer(NAME, DnssecStatus.SECURE)
    check, findings = dane.judge(
        answer, [leaf.der], host=HOST, next_hop=None, mx_status=None, now=datetime.now(UTC)
    )
    assert check is None and not findings.applicable


@pytest.mark.parametrize(
    ("status", "mx_status"),
    [(DnssecStatus.INSECURE, DnssecStatus.SECURE), (DnssecStatus.SECURE, DnssecStatus.INSECURE)],
)
def test_tlsa_in_an_insecure_zone_or_behind_an_insecure_mx_is_a_warning(
    pki: Hierarchy, leaf: Issued, status: DnssecStatus, mx_status: DnssecStatus
) -> None:
    check, _ = judge(
        [record(3, 1, 1, leaf.cert)], pki.chain(leaf), status=status, mx_status=mx_status
    )
    assert check is not None and check.status is Status.WARNING
    assert "senders" in check.message


def test_parse_tlsa() -> None:
    assert parse_tlsa("3 1 1 ab CD") == Tlsa(3, 1, 1, b"\xab\xcd")
    for bad in ("3 1 1", "3 1 x ab", "300 1 1 ab", "3 1 1 abc"):
        with pytest.raises(ValueError):
            parse_tlsa(bad)
    assert Tlsa(3, 1, 1, b"\xab").text == "3 1 1 ab"


# --- the DANE-TA verdict cache ------------------------------------------------------------


def matches(
    records: list[Tlsa], chain: tuple[x509.Certificate, ...], next_hop: str = "contoso.test"
) -> tuple[TlsaMatch, ...]:
    return judge(records, chain, next_hop=next_hop)[1]


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the path verifications DANE-TA judging runs (one per cache miss)."""
    danecache.clear()
    calls: list[int] = []
    real = trust.check_trust

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(dane, "check_trust", counting)
    yield calls
    danecache.clear()


def test_a_repeated_dane_ta_judgement_is_answered_from_the_cache(
    pki: Hierarchy, verifications: list[int]
) -> None:
    leaf = pki.leaf([HOST])
    records = [record(2, 1, 1, pki.intermediate.cert)]
    assert matches(records, pki.chain(leaf)) == (TlsaMatch.MATCHED,)
    assert matches(records, pki.chain(leaf)) == (TlsaMatch.MATCHED,)
    assert len(verifications) == 1
    assert danecache.entries() == 1


def test_a_changed_record_chain_or_name_misses(pki: Hierarchy, verifications: list[int]) -> None:
    leaf = pki.leaf([HOST])
    spki = record(2, 1, 1, pki.intermediate.cert)
    assert matches([spki], pki.chain(leaf)) == (TlsaMatch.MATCHED,)
    # Another record for the same issuer: judged afresh, not taken from the first's entry.
    whole = record(2, 0, 1, pki.intermediate.cert)
    assert matches([whole], pki.chain(leaf)) == (TlsaMatch.MATCHED,)
    assert len(verifications) == 2
    # A renewal (a new chain): judged afresh, and its verdict is its own. This leaf carries
    # only the next-hop name, so it matches through the next hop and fails under another one.
    renewed = pki.leaf(["contoso.test"])
    assert matches([spki], pki.chain(renewed)) == (TlsaMatch.MATCHED,)
    assert matches([spki], pki.chain(renewed), next_hop="fabrikam.test") == (TlsaMatch.NO_MATCH,)
    assert len(verifications) == 4


def test_a_record_set_changed_to_another_issuer_no_longer_matches(
    pki: Hierarchy, verifications: list[int]
) -> None:
    leaf = pki.leaf([HOST])
    assert matches([record(2, 1, 1, pki.intermediate.cert)], pki.chain(leaf)) == (
        TlsaMatch.MATCHED,
    )
    other = make_hierarchy("Other CA")
    assert matches([record(2, 1, 1, other.intermediate.cert)], pki.chain(leaf)) == (
        TlsaMatch.NO_MATCH,
    )


def test_the_cache_is_bounded(
    pki: Hierarchy, verifications: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(danecache._CACHE, "max_entries", 3)
    records = [record(2, 1, 1, pki.intermediate.cert)]
    for serial in range(8):
        leaf = pki.leaf([HOST, f"n{serial}.contoso.test"])
        assert matches(records, pki.chain(leaf)) == (TlsaMatch.MATCHED,)
        assert danecache.entries() <= 3
    assert len(verifications) == 8
    assert danecache.entries() == 3


def test_thirteen_hundred_records_give_bounded_messages_and_reports(
    pki: Hierarchy, leaf: Issued
) -> None:
    records = tuple(Tlsa(3, 1, 1, n.to_bytes(32, "big")) for n in range(1, 1301))
    answer = TlsaAnswer(NAME, DnssecStatus.SECURE, records, base=HOST)
    check, findings = dane.judge(
        answer,
        [c.public_bytes(Encoding.DER) for c in pki.chain(leaf)],
        host=HOST,
        next_hop=None,
        mx_status=DnssecStatus.SECURE,
        now=datetime.now(UTC),
    )
    assert check is not None and check.status is Status.CRITICAL
    assert len(check.message) < 1000 and "and 1297 more" in check.message
    data = policyreport.dane_json(findings)
    assert len(data["records"]) == 20 and data["records_total"] == 1300
    assert len(json.dumps(data)) < 6000
    lines = policyreport.dane_lines(findings)
    assert len(lines) < 50 and "and 1280 more records" in lines[-2]
    unusable = TlsaAnswer(NAME, DnssecStatus.SECURE, tuple(Tlsa(1, 1, 1, r.data) for r in records))
    check, _ = dane.judge(
        unusable, [leaf.der], host=HOST, next_hop=None, mx_status=None, now=datetime.now(UTC)
    )
    assert check is not None and check.status is Status.WARNING and len(check.message) < 1000

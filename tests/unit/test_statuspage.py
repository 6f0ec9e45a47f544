"""The status page's caches and the certificate timeline the detail view and history print.

The page is cached like /metrics: within its TTL it is not rebuilt at all (not even a
snapshot is taken), and a rebuild renders only the rows whose endpoint has a new result.
The timeline is built from change events, so a rollback shows as its own span.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.broken import MAKERS
from tests.support.pki import Hierarchy
from tlsprobe.exporter.config.send import SenderConfig
from tlsprobe.exporter.history.store import Drift, TimelineEntry
from tlsprobe.exporter.history.timeline import changes, spans
from tlsprobe.exporter.pages import status as statuspage
from tlsprobe.exporter.pages.detail import detail_html
from tlsprobe.exporter.pages.senders import senders_section
from tlsprobe.exporter.pages.status import PAGE_TTL, StatusPage
from tlsprobe.exporter.state import EndpointState, SenderState
from tlsprobe.model import Capture, ChangeClass, ChangeReason, Endpoint, Policy, Status, TlsInfo
from tlsprobe.probe.change import Change
from tlsprobe.probe.prober import judge
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)


def states(pki: Hierarchy, trust: TrustStore, count: int) -> list[EndpointState]:
    leaf = pki.leaf(["mail.contoso.test"])
    capture = Capture(
        address="127.0.0.1",
        chain_der=tuple(c.public_bytes(Encoding.DER) for c in pki.chain(leaf)),
        tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        phases=MappingProxyType({"total": 0.01}),
    )
    policy = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
    out = []
    for i in range(count):
        endpoint = Endpoint(host="mail.contoso.test", address=f"127.0.0.{i + 1}")
        result = judge(endpoint, capture, policy, trust, started_at=NOW.timestamp(), now=NOW)
        out.append(EndpointState("contoso", f"relay{i}", result))
    return out


def test_the_page_is_rebuilt_once_per_ttl_and_only_new_rows_are_rendered(
    pki: Hierarchy, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = states(pki, trust, 5)
    rendered: list[str] = []
    real = statuspage.render_row

    def counting(state: EndpointState, *args: object) -> str:
        rendered.append(state.target)
        return real(state, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(statuspage, "render_row", counting)
    snapshots = 0

    def snapshot() -> list[EndpointState]:
        nonlocal snapshots
        snapshots += 1
        return fleet

    page = StatusPage()
    now = NOW.timestamp()
    first = page.render(snapshot, now, started_at=0.0)
    assert len(rendered) == 5 and snapshots == 1
    assert page.render(snapshot, now + PAGE_TTL / 2, started_at=0.0) is first
    assert snapshots == 1  # within the TTL not even a snapshot is taken

    fleet[2] = replace(fleet[2], result=replace(fleet[2].result, started_at=now + 1))
    rendered.clear()
    again = page.render(snapshot, now + PAGE_TTL, started_at=0.0)
    assert rendered == ["relay2"]  # the four unchanged rows came from the cache
    assert again != first and b"relay2" in again


def entry(fingerprint: str, first: float, last: float) -> TimelineEntry:
    return TimelineEntry(
        "contoso", "relay", "mail.contoso.test", "127.0.0.1", 25, fingerprint,
        f"CN={fingerprint}", "CN=CA", ("mail.contoso.test",), 2e9, first, last,
    )  # fmt: skip


KEY = ("contoso", "relay", "mail.contoso.test", "127.0.0.1", 25)


def test_a_rollback_is_a_span_of_its_own() -> None:
    # A from 100, replaced by B at 200, A restored at 300 and last seen at 400: the served
    # rows alone say "A 100 -> 400, B 200 -> 250", hiding the rollback.
    served = [entry("a", 100, 400), entry("b", 200, 250)]
    events = [(KEY, 200.0, "a", "b"), (KEY, 300.0, "b", "a")]
    got = [
        (s.cert.fingerprint, s.start, s.end, s.current, s.rollback) for s in spans(served, events)
    ]
    assert got == [
        ("a", 100, 200, False, False),
        ("b", 200, 300, False, False),
        ("a", 300, 400, True, True),
    ]
    assert [(c.old, c.new, c.rollback) for c in changes(events)] == [
        ("a", "b", False),
        ("b", "a", True),
    ]


def test_without_changes_the_served_certificate_is_one_span() -> None:
    [span] = spans([entry("a", 100, 400)], [])
    assert (span.start, span.end, span.current, span.rollback) == (100, 400, True, False)
    assert spans([], []) == []


def test_the_detail_view_shows_no_invented_dates_for_unreadable_validity(
    pki: Hierarchy, trust: TrustStore
) -> None:
    """A leaf whose notAfter is month 13: the facts hold the epoch as placeholder; the page
    says the dates cannot be read instead of showing 1970 and some -20,000 days left."""
    leaf = pki.leaf(["mail.contoso.test"])
    capture = Capture(
        address="127.0.0.1",
        chain_der=(MAKERS["month-13"](leaf.der, pki.intermediate.key), pki.intermediate.der),
        tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        phases=MappingProxyType({"total": 0.01}),
    )
    policy = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
    endpoint = Endpoint(host="mail.contoso.test", address="127.0.0.1")
    result = judge(endpoint, capture, policy, trust, started_at=NOW.timestamp(), now=NOW)
    state = EndpointState("contoso", "relay", result)
    tenant, target, host, address, _ = state.label_values
    seen = NOW.timestamp()
    stored = TimelineEntry(
        tenant, target, host, address, 25, "ab" * 32, "CN=?", "CN=?", (), 0.0, seen - 60, seen
    )
    page = detail_html(state, spans([stored], []), [], NOW.timestamp(), 0)
    assert page.count("(unreadable)") == 2  # the chain's row and the history's
    assert "1970" not in page
    assert page.count("days left") == 1  # the intermediate's
    page_bytes = StatusPage().render(lambda: [state], NOW.timestamp(), started_at=0.0)
    assert b"-20" not in page_bytes  # not some -20,000 days left


def test_the_pages_say_how_the_latest_change_was_classified(
    pki: Hierarchy, trust: TrustStore
) -> None:
    renewal = Change(ChangeClass.RENEWAL)
    risky = Change(
        ChangeClass.RISKY,
        (ChangeReason.ISSUER_CHANGED, ChangeReason.EKU_LOST),
        ("issuer changed: R11 → E6", "clientAuth EKU dropped"),
    )
    first, second = states(pki, trust, 2)
    leaf = first.result.leaf
    assert leaf is not None
    renewed = replace(first, drift=Drift(leaf.sha256, NOW.timestamp(), 1, None, renewal))
    changed = replace(second, drift=Drift(leaf.sha256, NOW.timestamp(), 2, None, risky))
    page = StatusPage().render(lambda: [renewed, changed], NOW.timestamp(), 0.0).decode()
    assert "1 changes; clean renewal (no page)" in page
    assert (
        "2 changes; <b>risky</b> (paged): issuer changed: R11 → E6; clientAuth EKU dropped" in page
    )
    assert "What pages" in page and "What does not: a clean renewal" in page
    detail = detail_html(changed, [], [], NOW.timestamp(), 0.0)
    assert "Latest change (" in detail and "<b>risky</b> (paged): issuer changed" in detail
    assert "clean renewal (no page)" in detail_html(renewed, [], [], NOW.timestamp(), 0.0)
    rotated = Change(
        ChangeClass.RENEWAL,
        (ChangeReason.INTERMEDIATE_ROTATED,),
        ("intermediate rotated: R10 → R11",),
    )
    sibling = replace(first, drift=Drift(leaf.sha256, NOW.timestamp(), 3, None, rotated))
    page = StatusPage().render(lambda: [sibling], NOW.timestamp(), 0.0).decode()
    assert "3 changes; clean renewal (no page): intermediate rotated: R10 → R11" in page


def test_the_status_page_marks_a_sender_whose_verdict_is_stale(
    pki: Hierarchy, trust: TrustStore
) -> None:
    """As TlsprobeSenderSilent does: the last session is older than session_expected_within."""
    leaf = pki.leaf(("relay.contoso.test",))
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    now = datetime.now(UTC)
    session = Session("192.0.2.10", 2525, now.timestamp(), helo="r", tls=tls, chain_der=(leaf.der,))
    result = judge_session(session, Policy(), trust, now=now, name="relay-1")
    peers = ("192.0.2.10/32",)
    sender = SenderConfig("contoso", "relay-1", peers, Policy(), session_expected_within=900)
    state = SenderState(sender, result)
    colours = dict.fromkeys(Status, "#000")
    fresh = senders_section([state], now.timestamp() + 600, colours).html
    stale = senders_section([state], now.timestamp() + 3900, colours).html
    assert "STALE" not in fresh
    assert "(STALE: none for 1 h 5 min, expected within 15 min)" in stale

"""The status page's caches and the certificate timeline the detail view and history print.

The page is cached like /metrics: within its TTL it is not rebuilt at all (not even a
snapshot is taken), and a rebuild renders only the rows whose endpoint has a new result.
The timeline is built from change events, so a rollback shows as its own span.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.broken import MAKERS
from tests.support.pki import Hierarchy
from tlsprobe.exporter import forecast
from tlsprobe.exporter.config.send import SenderConfig
from tlsprobe.exporter.history.store import Drift, TimelineEntry
from tlsprobe.exporter.history.timeline import changes, spans
from tlsprobe.exporter.pages import breaks
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


class Snapshots:
    """A snapshot function that counts how often the page takes one."""

    def __init__(self, fleet: list[EndpointState]) -> None:
        self.fleet = fleet
        self.taken = 0

    def __call__(self) -> list[EndpointState]:
        self.taken += 1
        return self.fleet


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
    forecasts: list[str] = []
    real_forecast = forecast.forecast

    def forecasting(items: Iterable[forecast.Watched], *args: Any) -> list[forecast.Entry]:
        items = list(items)
        forecasts.extend(item.name for item in items)
        return real_forecast(items, *args)

    monkeypatch.setattr(forecast, "forecast", forecasting)
    snapshot = Snapshots(fleet)
    page = StatusPage()
    now = NOW.timestamp()
    first = page.render(snapshot, now, started_at=0.0)
    assert len(rendered) == 5 and snapshot.taken == 1
    assert page.render(snapshot, now + PAGE_TTL / 2, started_at=0.0) is first
    assert snapshot.taken == 1  # within the TTL not even a snapshot is taken

    fleet[2] = replace(fleet[2], result=replace(fleet[2].result, started_at=now + 1))
    rendered.clear()
    again = page.render(snapshot, now + PAGE_TTL, started_at=0.0)
    assert rendered == ["relay2"]  # the four unchanged rows came from the cache
    assert forecasts == [f"relay{i}" for i in range(5)] + ["relay2"]  # their forecasts too
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


# --- the page at MSP scale: tenants, search, paging, the forecast and its timeline ----------

HOSTILE = '<script>alert("x")</script>&\'"'


def fleet_of(
    pki: Hierarchy,
    trust: TrustStore,
    tenants: dict[str, int],
    *,
    days: float = 90,
    names: tuple[str, ...] = ("mail.contoso.test",),
) -> list[EndpointState]:
    """`count` endpoints per tenant, one certificate of `days` for all, every tenth one
    unreachable-looking (a hostname mismatch: critical), the rest OK."""
    good = pki.leaf(names, days=days)
    policy = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
    out = []
    for tenant, count in tenants.items():
        for i in range(count):
            host = "mail.contoso.test" if i % 10 else "other.fabrikam.test"
            capture = Capture(
                address=f"127.0.{i // 250}.{i % 250 + 1}",
                chain_der=tuple(c.public_bytes(Encoding.DER) for c in pki.chain(good)),
                tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
                phases=MappingProxyType({"total": 0.01}),
            )
            endpoint = Endpoint(host=host, address=capture.address)
            result = judge(endpoint, capture, policy, trust, started_at=NOW.timestamp(), now=NOW)
            out.append(EndpointState(tenant, f"relay{i}", result))
    return out


def view_of(query: dict[str, str]) -> statuspage.View:
    return statuspage.View.parse(query)


def rows(page: bytes) -> list[str]:
    """The endpoint rows' targets (second cell), in page order, failing and OK alike."""
    return re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td><td><a ", page.decode())


def test_a_tenant_view_shows_only_that_tenant(pki: Hierarchy, trust: TrustStore) -> None:
    fleet = fleet_of(pki, trust, {"contoso": 3, "fabrikam": 2})
    page = StatusPage().render(
        lambda: fleet, NOW.timestamp(), 0.0, view=view_of({"tenant": "fabrikam"})
    )
    text = page.decode()
    assert text.count("<tr><td>fabrikam</td>") == 2
    assert "<td>contoso</td>" not in text  # neither a row nor an entry of What breaks when
    assert text.count("</small></td><td>fabrikam</td>") == 1  # relay0's hostname, now
    assert "tenant fabrikam: 1 ok, 1 critical" in text
    assert 'class="tenants"' not in text  # the summary is for the view of every tenant
    everyone = StatusPage().render(lambda: fleet, NOW.timestamp(), 0.0).decode()
    assert everyone.count("<tr><td>contoso</td>") == 3
    assert '<a href="/?tenant=fabrikam">fabrikam</a></td><td>2</td><td>0</td><td>1</td>' in (
        everyone
    )  # endpoints, unknown, critical: the summary links to the tenant's view


def test_an_unknown_tenant_is_an_empty_view_that_says_so_escaped(
    pki: Hierarchy, trust: TrustStore
) -> None:
    fleet = fleet_of(pki, trust, {"contoso": 3})
    page = StatusPage().render(
        lambda: fleet, NOW.timestamp(), 0.0, view=view_of({"tenant": HOSTILE})
    )
    text = page.decode()
    assert rows(page) == []
    assert "No endpoints in tenant &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "<script>" not in text and 'value="&lt;script&gt;' in text  # the form keeps it


def test_the_search_matches_target_host_address_and_names(
    pki: Hierarchy, trust: TrustStore
) -> None:
    fleet = fleet_of(
        pki, trust, {"contoso": 30}, names=("mail.contoso.test", "smtp.woodgrove.test")
    )
    page = StatusPage()

    def search(q: str, **more: str) -> list[str]:
        return rows(
            page.render(lambda: fleet, NOW.timestamp(), 0.0, view=view_of({"q": q, **more}))
        )

    assert search("relay17") == ["relay17"]  # target
    assert sorted(search("OTHER.fabrikam")) == ["relay0", "relay10", "relay20"]  # host, any case
    assert search("127.0.0.6 ") == ["relay5"]  # address
    assert len(search("woodgrove")) == 30  # a name of the certificate
    assert sorted(search("woodgrove relay2")) == ["relay2", *(f"relay2{i}" for i in range(10))]
    assert search("relay1 fabrikam") == ["relay10"]  # every word must match
    assert search("relay1", tenant="fabrikam") == []
    text = page.render(lambda: fleet, NOW.timestamp(), 0.0, view=view_of({"q": HOSTILE})).decode()
    assert "No endpoint matches the search." in text and "<script>" not in text


def test_failing_rows_come_first_and_ok_rows_are_collapsed(
    pki: Hierarchy, trust: TrustStore
) -> None:
    fleet = fleet_of(pki, trust, {"contoso": 20})
    text = StatusPage().render(lambda: fleet, NOW.timestamp(), 0.0).decode()
    table, collapsed = text.split("<details>", 1)
    assert sorted(rows(table.encode())) == ["relay0", "relay10"]  # the critical ones
    assert "<summary>18 OK endpoints on this page</summary>" in collapsed
    assert len(rows(collapsed.encode())) == 18


def test_paging_is_bounded_and_keeps_the_filter(pki: Hierarchy, trust: TrustStore) -> None:
    size = statuspage.PAGE_SIZE
    fleet = fleet_of(pki, trust, {"contoso": 2 * size + 5, "fabrikam": 3})
    page = StatusPage()

    def at(**query: str) -> bytes:
        return page.render(lambda: fleet, NOW.timestamp(), 0.0, view=view_of(query))

    first, second, last = (
        at(tenant="contoso"),
        at(tenant="contoso", page="2"),
        at(tenant="contoso", page="3"),
    )
    assert len(rows(first)) == len(rows(second)) == size and len(rows(last)) == 5
    assert set(rows(first)) | set(rows(second)) | set(rows(last)) == {
        f"relay{i}" for i in range(2 * size + 5)
    }
    assert 'href="/?tenant=contoso&amp;page=2" rel="next"' in first.decode()
    assert 'href="/?tenant=contoso&amp;page=2" rel="prev"' in last.decode()
    assert f"Endpoints {2 * size + 1}-{2 * size + 5} of {2 * size + 5}, page 3 of 3" in (
        last.decode()
    )
    # Out of range: beyond the last page is the last; garbage, zero and negatives the first.
    for beyond in ("4", "999999999", "9" * 50):
        assert rows(at(tenant="contoso", page=beyond)) == rows(last), beyond
    for bad in ("0", "-1", "x", "1e3", "²", ""):
        assert rows(at(tenant="contoso", page=bad)) == rows(first), bad
    assert view_of({"q": "x" * 10_000}).q == "x" * statuspage.MAX_QUERY
    assert len(view_of({"tenant": "t" * 10_000}).tenant or "") == statuspage.MAX_TENANT


def test_pages_are_cached_per_view_and_the_cache_is_bounded(
    pki: Hierarchy, trust: TrustStore
) -> None:
    snapshot = Snapshots(fleet_of(pki, trust, {"contoso": 3, "fabrikam": 2}))
    page = StatusPage()
    now = NOW.timestamp()
    contoso = page.render(snapshot, now, 0.0, view=view_of({"tenant": "contoso"}))
    fabrikam = page.render(snapshot, now, 0.0, view=view_of({"tenant": "fabrikam"}))
    assert contoso != fabrikam and snapshot.taken == 1  # one snapshot serves every view
    assert page.render(snapshot, now + 1, 0.0, view=view_of({"tenant": "contoso"})) is contoso
    for i in range(3 * statuspage.MAX_VIEWS):
        page.render(snapshot, now + 1, 0.0, view=view_of({"q": f"search {i}"}))
    assert len(page._pages) == statuspage.MAX_VIEWS and snapshot.taken == 1
    # A view first asked late in the snapshot's TTL is of that snapshot, and expires with it.
    late = page.render(snapshot, now + PAGE_TTL - 1, 0.0, view=view_of({"q": "late"}))
    assert f"Generated {statuspage.when(now)}".encode() in late
    assert page.render(snapshot, now + PAGE_TTL, 0.0, view=view_of({"q": "late"})) is not late
    assert snapshot.taken == 2


def test_ten_thousand_endpoints_render_one_bounded_page(pki: Hierarchy, trust: TrustStore) -> None:
    fleet = fleet_of(pki, trust, {f"tenant{t}": 100 for t in range(100)})
    assert len(fleet) == 10_000
    body = StatusPage().render(lambda: fleet, NOW.timestamp(), 0.0)
    assert len(rows(body)) == statuspage.PAGE_SIZE
    assert body.count(b"<rect ") == breaks.LIMIT
    assert b"And 9950 more expiring later." in body
    assert b"and 950 more (<code>tlsprobe forecast</code>" in body  # 1000 critical hostnames
    assert len(body) < 600_000, len(body)  # about 100 rows of a few KB, not 10,000


def test_the_forecast_section_is_the_forecast_functions_and_the_timeline_marks_thresholds(
    pki: Hierarchy, trust: TrustStore
) -> None:
    fleet = fleet_of(pki, trust, {"contoso": 3}, days=20)
    text = StatusPage().render(lambda: fleet, NOW.timestamp(), 0.0).decode()
    entries = forecast.forecast(forecast.watched(fleet), NOW)
    assert len(entries) == 4  # relay0's hostname now, and three leaves within 30 days
    for entry in entries:
        assert f"<td>{html.escape(entry.what)}</td>" in text.replace(' class="w"', "")
    # A 20-day leaf: warns from 20/3 - 20/12 = 5 days left, critical from 20/6 = 3.3 days
    # (lifetime-aware): two marks on each of its three bars, one title each saying so.
    assert text.count('stroke-width="3"') == 6
    assert text.count("warns under 5 days left, critical under 3") == 3


def test_hostile_names_are_escaped_in_the_html_and_the_svg(
    pki: Hierarchy, trust: TrustStore
) -> None:
    import xml.etree.ElementTree as ET

    [state] = fleet_of(pki, trust, {HOSTILE + "\x01": 1}, days=20)
    state = replace(state, target=HOSTILE)
    text = StatusPage().render(lambda: [state], NOW.timestamp(), 0.0).decode()
    assert "<script>" not in text
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)  # well-formed XML (no control character): text, not markup
    labels = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(label.startswith(HOSTILE[:20]) for label in labels)
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles and HOSTILE in titles[0]

"""Cross-tenant attribution (MC1226222): findings from certificates seen and connector domains."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from tests.support.pki import Hierarchy, Issued
from tlsprobe.exporter.config.send import SenderConfig
from tlsprobe.exporter.exchange import attribution
from tlsprobe.exporter.exchange.attribution import (
    OVERLAP,
    SHARED,
    SHARED_NAME,
    Presented,
    findings,
)
from tlsprobe.exporter.exposition.send import sender_samples
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.state import EndpointState, SenderState
from tlsprobe.model import CheckName, Policy, ProbeResult, Status, TlsInfo
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509 import o365
from tlsprobe.probe.x509.evaluate import TrustStore


def seen(tenant: str, fingerprint: str, *names: str, source: str = "target relay") -> Presented:
    return Presented(tenant, fingerprint, names, source)


def pairs(found: tuple[attribution.Finding, ...]) -> set[tuple[str, str, str]]:
    return {(f.tenant, f.other_tenant, f.reason) for f in found}


def test_a_wildcard_connector_in_one_tenant_and_a_literal_in_another_overlap_both_ways() -> None:
    patterns = {"contoso": "*.contoso.com", "fabrikam": "relay.contoso.com"}
    found = findings(
        [seen("fabrikam", "bb", "relay.contoso.com"), seen("contoso", "aa", "mx.contoso.com")],
        patterns,
    )
    assert pairs(found) == {("fabrikam", "contoso", OVERLAP), ("contoso", "fabrikam", OVERLAP)}
    (message,) = {f.message for f in found}
    assert "tenant fabrikam (target relay) names 'relay.contoso.com'" in message
    assert "tenant contoso's connector '*.contoso.com' also accepts" in message
    assert "its own send connector" in message


def test_one_certificate_for_two_tenants_is_shared_whoever_presents_it() -> None:
    found = findings(
        [
            seen("contoso", "aa", "relay.example.net"),
            seen("fabrikam", "aa", "relay.example.net", source="sender relay-1"),
        ],
        {"contoso": "*.contoso.com", "fabrikam": "*.fabrikam.com"},
    )
    assert pairs(found) == {("contoso", "fabrikam", SHARED), ("fabrikam", "contoso", SHARED)}
    assert all("target relay" in f.message and "sender relay-1" in f.message for f in found)


@pytest.mark.parametrize(
    "presented",
    [
        # Its own connector matching, twice, is no finding; nor is a top-level target.
        [seen("contoso", "aa", "relay.contoso.com"), seen("contoso", "aa", "relay.contoso.com")],
        [seen("contoso", "aa", "relay.contoso.com"), seen("", "aa", "relay.contoso.com")],
        # Label-aligned: evilcontoso.com is not under contoso.com.
        [seen("fabrikam", "bb", "relay.evilcontoso.com")],
    ],
)
def test_no_finding_within_one_tenant(presented: list[Presented]) -> None:
    assert findings(presented, {"contoso": "*.contoso.com", "fabrikam": None}) == ()


def test_findings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribution, "MAX_FINDINGS", 3)
    many = [seen(f"t{i}", "aa", "relay.example.net") for i in range(10)]
    assert len(findings(many, {})) == 3


def test_two_certificates_with_one_name_in_two_tenants_share_it_without_any_connector() -> None:
    """Renewed separately, one per tenant, both named for the relay: Exchange Online tells the
    tenants apart by nothing the certificates carry."""
    found = findings(
        [seen("contoso", "aa", "Relay.MSP.example."), seen("fabrikam", "bb", "relay.msp.example")],
        {},
    )
    assert pairs(found) == {
        ("contoso", "fabrikam", SHARED_NAME),
        ("fabrikam", "contoso", SHARED_NAME),
    }
    assert {f.fingerprint for f in found} == {"aa", "bb"}  # each side names its own
    assert all("both name 'relay.msp.example'" in f.message for f in found)


def test_connector_overlap_tries_only_the_patterns_that_can_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An MSP's exporter: 300 tenants of 20 relays each, every tenant its own names. A pattern
    is tried only on a certificate one of whose names it could accept (the name itself, or
    `*.` one of its suffixes), not every tenant's pattern on every certificate (6,000 x 299
    tries, 4.8 s CPU on the review machine, each time the certificates seen change)."""
    calls = 0
    real = o365.match_connector

    def counting(pattern: o365.ConnectorPattern, names: Iterable[str]) -> o365.ConnectorMatch:
        nonlocal calls
        calls += 1
        return real(pattern, names)

    monkeypatch.setattr(o365, "match_connector", counting)
    items = [
        seen(f"t{k}", f"{k:04x}{i:04x}", f"h{i}.t{k}.test", source=f"target h{i}")
        for k in range(300)
        for i in range(20)
    ]
    patterns = {f"t{k}": f"*.t{k}.test" for k in range(300)}
    patterns["t7"] = "h3.t8.test"  # one literal across tenants: the only overlap
    found = findings(items, patterns)
    assert pairs(found) == {("t8", "t7", OVERLAP), ("t7", "t8", OVERLAP)}
    assert calls == 1


def test_one_tenants_certificates_sharing_a_name_are_no_finding() -> None:
    """4,000 certificates of one tenant all naming mail.contoso.test: no pair across tenants,
    and one more tenant's certificate of that name pairs with each of them (bounded)."""
    items = [seen("a", f"{i:064x}", "mail.contoso.test", f"h{i}.contoso.test") for i in range(4000)]
    assert findings(items, {}) == ()
    found = findings([*items, seen("b", "f" * 64, "mail.contoso.test")], {})
    assert {f.reason for f in found} == {SHARED_NAME}
    assert len(found) == attribution.MAX_FINDINGS


@pytest.mark.parametrize("seed", range(5))
def test_indexed_overlap_finds_what_trying_every_pattern_finds(seed: int) -> None:
    """The index changes the cost, never the answer: random names and patterns (literal,
    wildcard, wildcard certificate names, deeper names) against the brute-force loop."""
    import random

    rnd = random.Random(seed)
    labels = ["a", "b", "mx", "relay"]
    domains = ["contoso.test", "fabrikam.test", "sub.contoso.test"]

    def name() -> str:
        wildcard = ["*"] if rnd.random() < 0.3 else []
        host = [rnd.choice(labels) for _ in range(rnd.randint(0, 2))]
        return ".".join([*wildcard, *host, rnd.choice(domains)])

    tenants = [f"t{k}" for k in range(8)]
    patterns = {t: name() for t in tenants}
    items = [
        seen(rnd.choice(tenants), f"{i:064x}", *(name() for _ in range(rnd.randint(1, 3))))
        for i in range(60)
    ]
    expected: set[attribution.Finding] = set()
    parsed = {t: o365.ConnectorPattern.parse(p) for t, p in patterns.items()}
    for item in items:
        for tenant, pattern in parsed.items():
            matched = o365.match_connector(pattern, item.names).matched
            if tenant != item.tenant and matched is not None:
                expected.update(attribution._overlap(item, tenant, str(pattern), matched))
    found = {f for f in findings(items, patterns) if f.reason == OVERLAP}
    assert len(expected) > 10  # the draw does overlap: the comparison is not of two empty sets
    assert found == expected


def test_the_states_a_finding_names_are_marked_critical_on_both_sides(
    pki: Hierarchy, trust: TrustStore
) -> None:
    """A relay serving one certificate for contoso and sending with it for fabrikam: the
    contoso endpoint and the fabrikam sender each get a critical `cross_tenant` check naming
    the other tenant, with Exchange Online's symptom; an endpoint with its own certificate is
    left as it is, and marking finds the named endpoint by key, not by a pass over all."""
    now = datetime.now(UTC)
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")

    def judged(leaf: Issued, name: str) -> ProbeResult:
        session = Session(
            "127.0.0.1", 2525, now.timestamp(), helo="r", tls=tls, chain_der=(leaf.der,)
        )
        return judge_session(session, Policy(), trust, now=now, name=name)

    shared, own = pki.leaf(("relay.contoso.test",)), pki.leaf(("mx.contoso.test",))
    relay = EndpointState("contoso", "relay", judged(shared, "relay"))
    mx = EndpointState("contoso", "mx", judged(own, "mx"))
    config = SenderConfig("fabrikam", "relay", ("127.0.0.1/32",), Policy())
    sender = SenderState(config, judged(shared, "relay"))
    assert relay.result.check(CheckName.CROSS_TENANT) is None  # never from one probe
    results = LatestResults()
    for state in (mx, relay):
        results.put(state)

    marks = attribution.Attribution()
    found = marks.current(results.snapshot(), [sender], {})
    assert {(f.tenant, f.other_tenant) for f in found} == {
        ("contoso", "fabrikam"),
        ("fabrikam", "contoso"),
    }
    assert marks.endpoints == (relay.key,)
    states = {s.target: s for s in results.snapshot_marked(marks.endpoints, marks.mark)}
    assert states["mx"] is mx
    for marked, other in (
        (states["relay"].result, "fabrikam"),
        (marks.mark(sender).result, "contoso"),
    ):
        assert marked is not None
        check = marked.check(CheckName.CROSS_TENANT)
        assert check is not None and check.status is Status.CRITICAL
        assert f"tenant {other}" in check.message and shared.sha256[:16] in check.message
        assert "550 5.7.64 TenantAttribution" in check.symptom
        assert marked.status is Status.CRITICAL and not marked.o365_ready
    assert marks.mark(relay) is states["relay"]  # made once per published state
    samples = {
        (name, labels[-1]): value for name, labels, value in sender_samples(marks.mark(sender))
    }
    assert samples["tlsprobe_sender_status", "relay"] == 2.0
    assert samples["tlsprobe_sender_check_status", "cross_tenant"] == 2.0
    assert samples["tlsprobe_sender_o365_ready", "relay"] == 0.0

"""Cross-tenant attribution (MC1226222): findings from certificates seen and connector domains."""

from __future__ import annotations

import pytest

from tlsprobe.exporter.exchange import attribution
from tlsprobe.exporter.exchange.attribution import (
    OVERLAP,
    SHARED,
    SHARED_NAME,
    Presented,
    findings,
)


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

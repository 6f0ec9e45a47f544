"""Exchange Online as the source of truth, end to end in the exporter.

An imported tenant (exports written here, `tlsprobe import-exo --write`) is probed on loopback
and judged by its outbound connector's `DomainValidation`; two tenants relaying through one
server with one certificate are each critical, both named (MC1226222).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.exporter import fetch, in_process
from tests.support.pki import Hierarchy
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import eventually
from tlsprobe.cli.main import main
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.links import detail_path


def values(text: str, name: str, **labels: str) -> list[float]:
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


def base_config(tmp_path: Path, ca_file: Path, tenants: dict[str, Any]) -> Path:
    path = tmp_path / "tlsprobe.yml"
    data = {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "defaults": {"interval": "2s", "timeout": "800ms", "retries": 0, "ca_file": str(ca_file)},
        "tenants": tenants,
    }
    path.write_text("# typed by hand\n" + yaml.safe_dump(data))
    return path


async def probed(exporter: Exporter, *targets: str) -> None:
    def done() -> bool:
        return set(targets) <= {s.target for s in exporter.results.snapshot()}

    await eventually(done, f"results of {targets}")


async def both_probed(exporter: Exporter) -> None:
    await probed(exporter, "relay")
    await eventually(lambda: len(exporter.results.snapshot()) == 2, "both tenants")


def exports(tmp_path: Path, tls_domain: str) -> list[str]:
    """The tenant's exports as Windows PowerShell writes them (UTF-8 BOM, enums as numbers)."""
    files = {
        "accepted.json": [{"DomainName": "contoso.test", "DomainType": 0, "Default": True}],
        "inbound.json": {
            "Name": "From contoso relay",
            "Enabled": True,
            "ConnectorType": 1,  # TenantConnectorType.OnPremises
            "TlsSenderCertificateName": "*.contoso.test",
        },
        "outbound.json": {
            "Name": "To contoso on-prem",
            "Enabled": True,
            "ConnectorType": 1,
            "UseMXRecord": False,
            "SmartHosts": "relay.contoso.test",
            "RecipientDomains": "contoso.test",
            "TlsSettings": 4,
            "TlsDomain": tls_domain,
        },
    }
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data), encoding="utf-8-sig")
    return [str(tmp_path / name) for name in files]


@pytest.mark.parametrize(("tls_domain", "ready"), [("*.contoso.test", 1.0), ("fabrikam.test", 0.0)])
async def test_an_imported_tenant_is_judged_by_its_outbound_connector(
    tmp_path: Path, ca_file: Path, pki: Hierarchy, tls_domain: str, ready: float
) -> None:
    leaf = pki.leaf(["www.contoso.test"])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        relay = {"name": "relay", "host": "relay.contoso.test", "address": "127.0.0.1"}
        config = base_config(
            tmp_path,
            ca_file,
            {
                "contoso": {
                    "exchange_online": "exo.yml",
                    "targets": [{**relay, "port": server.port}],
                }
            },
        )
        argv = ["import-exo", "--tenant", "contoso", "--config", str(config), "--write"]
        assert main([*argv, *exports(tmp_path, tls_domain)]) == 0
        async with in_process(config) as exporter, aiohttp.ClientSession() as http:
            await probed(exporter, "relay")
            _, text = await fetch(http, f"{exporter.url}/metrics")
            _, page = await fetch(http, f"{exporter.url}/")

    rule = f"TlsSettings DomainValidation, TlsDomain {tls_domain}"
    connector = {"direction": "outbound", "connector": "To contoso on-prem", "rule": rule}
    assert values(text, "tlsprobe_o365_connector_info", target="relay", **connector) == [1.0]
    assert values(text, "tlsprobe_o365_ready", target="relay") == [ready]
    outbound = values(text, "tlsprobe_check_status", target="relay", check="outbound_connector")
    assert outbound == [0.0 if ready else 2.0]
    # A smart host an outbound connector names is dialled by that name: the check is real.
    assert values(text, "tlsprobe_check_status", target="relay", check="hostname") == [2.0]
    cell = "<br><small>outbound To contoso on-prem</small>"
    expected = f"yes{cell}</td>" if ready else f"no{cell}<br><small>outbound_connector</small>"
    assert expected in page


async def test_one_relay_certificate_shared_by_two_tenants_is_critical_on_both(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """One on-premises relay serving both tenants with one certificate: Exchange Online
    attributes each message to one tenant only."""
    leaf = pki.leaf(["relay.contoso.test", "relay.fabrikam.test"])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        relay = {"host": "relay.contoso.test", "address": "127.0.0.1", "port": server.port}
        config = base_config(
            tmp_path,
            ca_file,
            {
                "contoso": {
                    "accepted_domains": ["contoso.test"],
                    "certificate_domain": "*.contoso.test",
                    "targets": [{"name": "relay", **relay}],
                },
                "fabrikam": {
                    "accepted_domains": ["fabrikam.test"],
                    "certificate_domain": "relay.fabrikam.test",
                    "targets": [{"name": "relay", **relay, "host": "relay.fabrikam.test"}],
                },
            },
        )
        async with in_process(config) as exporter, aiohttp.ClientSession() as http:
            await both_probed(exporter)
            _, text = await fetch(http, f"{exporter.url}/metrics")
            _, page = await fetch(http, f"{exporter.url}/")
            _, probe = await fetch(http, f"{exporter.url}/probe?target=relay&tenant=fabrikam")
            details = {}
            for state in exporter.results.snapshot():
                path = detail_path(state.label_values)
                _, details[state.tenant] = await fetch(http, f"{exporter.url}{path}")

    # Each endpoint the finding names is critical itself, on both tenants, naming the other.
    for tenant, other in (("contoso", "fabrikam"), ("fabrikam", "contoso")):
        assert values(text, "tlsprobe_status", tenant=tenant, target="relay") == [2.0]
        check = values(text, "tlsprobe_check_status", tenant=tenant, check="cross_tenant")
        assert check == [2.0]
        assert values(text, "tlsprobe_o365_ready", tenant=tenant, target="relay") == [0.0]
        assert f"tenant {other}" in details[tenant]
        assert "cross_tenant" in details[tenant]
        assert "550 5.7.64 TenantAttribution" in details[tenant]
    assert values(probe, "tlsprobe_status", tenant="fabrikam") == [2.0]
    assert values(probe, "tlsprobe_check_status", tenant="fabrikam", check="cross_tenant") == [2.0]

    found = {
        (s.labels["tenant"], s.labels["other_tenant"], s.labels["reason"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tlsprobe_cross_tenant_attribution"
    }
    assert found == {
        ("contoso", "fabrikam", "shared_certificate"),
        ("fabrikam", "contoso", "shared_certificate"),
        ("contoso", "fabrikam", "connector_overlap"),
        ("fabrikam", "contoso", "connector_overlap"),
    }
    assert values(text, "tlsprobe_cross_tenant_attribution", fingerprint_sha256=leaf.sha256)
    assert "Cross-tenant attribution (MC1226222): critical" in page
    assert "tenant contoso (target relay) and tenant fabrikam (target relay)" in page
    assert "give each tenant its own send connector on the relay" in page


async def test_status_page_counts_both_tenants_of_a_shared_relay_as_critical(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """Two tenants whose relay is fine for each alone (its name under each connector and
    accepted domain) but serves one certificate to both: the page's header counts both
    endpoints critical, and each row names `cross_tenant` and the other tenant."""
    leaf = pki.leaf(["relay.contoso.test", "relay.fabrikam.test"])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        relay = {"address": "127.0.0.1", "port": server.port}
        tenants = {
            name: {
                "accepted_domains": [f"{name}.test"],
                "certificate_domain": f"*.{name}.test",
                "targets": [{"name": "relay", "host": f"relay.{name}.test", **relay}],
            }
            for name in ("contoso", "fabrikam")
        }
        config = base_config(tmp_path, ca_file, tenants)
        async with in_process(config) as exporter, aiohttp.ClientSession() as http:
            await both_probed(exporter)
            _, page = await fetch(http, f"{exporter.url}/")
            _, tenant_page = await fetch(http, f"{exporter.url}/?tenant=contoso")
            _, text = await fetch(http, f"{exporter.url}/metrics")

    # Alone, each would be OK: only the cross-tenant check fails.
    failing = {
        (s.labels["tenant"], s.labels["check"])
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tlsprobe_check_status" and s.value == 2.0
    }
    assert failing == {("contoso", "cross_tenant"), ("fabrikam", "cross_tenant")}
    assert "as Exchange Online sees them: 2 critical." in page
    rows = [
        line for line in page.splitlines() if line.startswith("<tr><td>") and "CRITICAL" in line
    ]
    assert len(rows) == 2
    for row, other in zip(sorted(rows), ("fabrikam", "contoso"), strict=True):
        assert "<small>cross_tenant</small>" in row  # the O365 column's failing rules
        assert f"tenant {other}" in row
    # The failing checks' table: the check, Exchange Online's symptom and the runbook.
    assert "see the README section &quot;cross_tenant&quot;" in page
    assert "550 5.7.64 TenantAttribution" in page
    assert "; tenant contoso: 1 critical" in tenant_page

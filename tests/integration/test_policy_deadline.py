"""One deadline covers a probe and its DNS policies (DANE, MTA-STS), in the CLI and the
exporter's `/probe`.

A loopback DNS server answers the names these lookups need only after a delay: each answer
alone comes within the resolver's lifetime, but the chain of them (the host's address, then
its TLSA records; the `_mta-sts` TXT record, then the policy host) cannot finish within the
probe's timeout. The verdict must come by that timeout and say that the deadline cut the
lookups, instead of waiting for every lookup in turn (13 s for `--timeout 5` before).
Assertions are on verdicts, never on durations: the delays only ever lengthen the chain.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.dnsserver import SLOW, TIMEOUT, Behaviours, DnsTestServer
from tests.support.exporter import fetch as get
from tests.support.exporter import in_process
from tests.support.pki import Hierarchy, Issued
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tlsprobe.cli.main import main as cli_main
from tlsprobe.probe import policies
from tlsprobe.probe.dns import dnssec
from tlsprobe.probe.dns.dane import association
from tlsprobe.probe.dns.mtasts_fetch import FetchSettings

DOMAIN = "slow.test"
HOST = f"mx.{DOMAIN}"
DELAY = 0.7
"""Each slow answer's delay; two in a row exceed the 1 s deadline."""
GUARD = 30.0
"""Hang guard only: far beyond the deadline and the resolver's 5 s lifetime."""


@pytest.fixture
def leaf(pki: Hierarchy) -> Issued:
    return pki.leaf([HOST])


@pytest.fixture
def port() -> int:
    return unused_port()


@pytest.fixture
def dns_server(leaf: Issued, port: int) -> Iterator[DnsTestServer]:
    spki = association(leaf.cert, 1, 1)
    assert spki is not None
    owner = f"_{port}._tcp.{HOST}"
    zone = {
        (HOST, "A"): ["127.0.0.1"],
        (owner, "TLSA"): [f"3 1 1 {spki.hex()}"],
        (DOMAIN, "MX"): [f"10 {HOST}."],
        (f"_mta-sts.{DOMAIN}", "TXT"): ['"v=STSv1; id=1;"'],
    }
    behaviours: Behaviours = {
        (HOST, "A"): SLOW,
        (owner, "TLSA"): SLOW,
        (f"_mta-sts.{DOMAIN}", "TXT"): SLOW,
        f"mta-sts.{DOMAIN}": TIMEOUT,
    }
    with DnsTestServer(zone, behaviours) as server:
        server.slow_seconds = DELAY
        yield server


async def test_cli_dane_lookups_end_at_the_probe_deadline(
    pki: Hierarchy,
    leaf: Issued,
    port: int,
    dns_server: DnsTestServer,
    ca_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        "check",
        f"{HOST}:{port}",
        "--address=127.0.0.1",
        f"--ca-file={ca_file}",
        "--dane",
        f"--resolver=127.0.0.1:{dns_server.port}",
        "--timeout=1",
        "--json",
    ]
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key), port=port):
        async with asyncio.timeout(GUARD):
            code = await asyncio.to_thread(cli_main, args)
    data = json.loads(capsys.readouterr().out)
    dane = next(c for c in data["checks"] if c["name"] == "dane")
    assert dane["status"] == "unknown", dane
    assert "deadline" in dane["message"]
    assert data["dane"]["dnssec"] == "failed"
    assert code == 3  # a failed TLSA lookup leaves the healthy endpoint unknown


async def test_mta_sts_lookups_and_fetch_share_one_deadline(dns_server: DnsTestServer) -> None:
    resolver = dnssec.make_validating_resolver(["127.0.0.1"], port=dns_server.port, timeout=5.0)
    async with asyncio.timeout(GUARD):
        found = await policies.domain_policy(DOMAIN, resolver, FetchSettings(), timeout=1.0)
    # The TXT record took most of the second; the fetch may not have a second of its own.
    assert found.policy is None and "deadline" in found.error, found


async def test_probe_endpoint_ends_dns_policies_within_the_scrape_timeout(
    pki: Hierarchy,
    leaf: Issued,
    port: int,
    dns_server: DnsTestServer,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    target = {
        "name": "slow",
        "host": HOST,
        "address": "127.0.0.1",
        "port": port,
        "dane": True,
        "mta_sts_domain": DOMAIN,
    }
    config = {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": "5s"},
        "defaults": {"interval": "5m", "timeout": "10s", "ca_file": str(ca_file)},
        "tenants": {"contoso": {"targets": [target]}},
    }
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key), port=port):
        result = await debug_probe(tmp_path, config, "slow")  # a 1.5 s probe
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["dane"]["status"] == "unknown" and "deadline" in checks["dane"]["message"]
    assert checks["mta_sts"]["status"] == "unknown"
    assert "deadline" in checks["mta_sts"]["message"]


@pytest.mark.parametrize("silent", ["mx", "host"])
async def test_probe_endpoint_ends_discovery_within_the_scrape_timeout(
    silent: str, ca_file: Path, tmp_path: Path
) -> None:
    """Discovery is part of what /probe does: an MX or host lookup that never answers ends at
    the scrape's deadline as a DNS failure that says so, not at the resolver's 5 s lifetime
    (which outlasted a 2 s scrape)."""
    target: dict[str, object] = {"name": "silent", "port": unused_port()}
    target |= {"mx": DOMAIN} if silent == "mx" else {"host": HOST}
    config = {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": 0, "timeout": "5s", "hosts_file": False},
        "defaults": {"interval": "5m", "timeout": "10s", "ca_file": str(ca_file)},
        "tenants": {"contoso": {"targets": [target]}},
    }
    with DnsTestServer({}, {DOMAIN: TIMEOUT, HOST: TIMEOUT}) as dns_server:
        config["dns"]["port"] = dns_server.port  # type: ignore[index]
        result = await debug_probe(tmp_path, config, "silent")  # a 1.5 s deadline
    assert result["error"]["kind"] == "dns", result["error"]
    assert "1.5 s deadline" in result["error"]["message"], result["error"]


async def debug_probe(tmp_path: Path, config: Mapping[str, object], name: str) -> dict[str, Any]:
    """The JSON result of `/probe?target=NAME&debug=true` from an exporter running `config`,
    asked with a 2 s scrape timeout (a 1.5 s deadline)."""
    path = tmp_path / "tlsprobe.yml"
    path.write_text(json.dumps(config))
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    async with (
        in_process(path) as exporter,
        aiohttp.ClientSession() as http,
        asyncio.timeout(GUARD),
    ):
        status, text = await get(
            http, f"{exporter.url}/probe", params={"target": name, "debug": "true"}, headers=headers
        )
    assert status == 200, text
    result: dict[str, Any] = json.loads(
        text.split("Result (JSON)\n", 1)[1].split("\n\nEffective", 1)[0]
    )
    return result

"""A restart restores the endpoints the exporter showed when it stopped, and no others.

A target's first cycle fails its DNS lookup (one address-less endpoint, `reason=dns`); the
zone is fixed and the next cycle replaces that endpoint with the real one. Restarted, the
exporter must show the real endpoint only, not the failure beside it until its first cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.dnsserver import DnsTestServer
from tests.support.exporter import in_process
from tests.support.pki import Hierarchy
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import eventually
from tlsprobe.exporter.app import Exporter
from tlsprobe.model import Reason

HOST = "relay.restart.test"


def addresses(exporter: Exporter) -> list[str]:
    return sorted(s.key[3] for s in exporter.results.snapshot())


async def test_a_replaced_endpoint_is_not_restored(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    leaf = pki.leaf([HOST])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as smtp:
        with DnsTestServer({}) as dns:  # HOST: NXDOMAIN for now
            config = {
                "state_dir": str(tmp_path / "state"),
                "web": {"listen": f"127.0.0.1:{unused_port()}"},
                "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": "2s"},
                "defaults": {"interval": "1s", "timeout": "800ms", "retries": 0},
                "tenants": {
                    "contoso": {
                        "targets": [
                            {
                                "name": "relay",
                                "host": HOST,
                                "port": smtp.port,
                                "ca_file": str(ca_file),
                            }
                        ]
                    }
                },
            }
            path = tmp_path / "tlsprobe.yml"
            path.write_text(json.dumps(config))
            async with in_process(path) as exporter:
                await eventually(lambda: addresses(exporter) == [""], "the DNS failure")
                (failed,) = exporter.results.snapshot()
                assert failed.result.error is not None
                assert failed.result.error.kind is Reason.DNS
                dns.zone[(HOST, "A")] = ["127.0.0.1"]
                await eventually(lambda: addresses(exporter) == ["127.0.0.1"], "the endpoint")
            async with in_process(path) as restarted:
                # Before its first cycle: what the store restored, and nothing else.
                restored = addresses(restarted)
    assert restored == ["127.0.0.1"]

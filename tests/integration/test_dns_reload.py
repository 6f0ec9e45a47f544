"""A reload that changes the `dns:` section applies it without a restart.

The exporter starts with `dns:` pointing at a loopback port nobody answers on, so its MX target
cannot be discovered. The configuration file is then pointed at a real validating resolver
(the DNSSEC laboratory: NSD serving `dane.test` signed at test time, Unbound validating it) and
reloaded: the next cycle discovers the MX through it, probes the loopback SMTP server, and
judges DANE through the same new resolver (the TLSA lookups of the DNS policies, not only
discovery, follow the reload).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import dnslab
from tests.support.exporter import in_process
from tests.support.gates import Gate, unavailable
from tests.support.pki import Hierarchy, Issued
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tlsprobe.model import Status
from tlsprobe.probe.dns.dane import association

DOMAIN = "dane.test"
MX = f"mx1.{DOMAIN}"


@pytest.fixture(scope="module")
def smtp_port() -> int:
    return unused_port()


@pytest.fixture(scope="module")
def lab(
    pki: Hierarchy, smtp_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dnslab.DnsLab, Issued]]:
    """The laboratory, and the leaf whose key its one TLSA record names."""
    if not dnslab.available():
        unavailable(Gate.DNSLAB, "nsd and unbound are not installed (Debian: nsd, unbound)")
    leaf = pki.leaf([MX])
    data = association(leaf.cert, 1, 1)
    assert data is not None
    dns = dnslab.DnsLab(tmp_path_factory.mktemp("dnsreload"))
    dns.publish(
        ["mx1 A 127.0.0.1", "@ MX 10 mx1", f"_{smtp_port}._tcp.mx1 TLSA 3 1 1 {data.hex()}"]
    )
    with dns:
        yield dns, leaf


def config(tmp_path: Path, ca_file: Path, smtp_port: int, dns_port: int) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": "1s"},
        "defaults": {"interval": "1h", "timeout": "5s", "retries": 0, "ca_file": str(ca_file)},
        "targets": [{"name": "mail", "mx": DOMAIN, "port": smtp_port, "networks": ["127.0.0.0/8"]}],
    }


async def test_a_changed_dns_section_applies_on_reload(
    lab: tuple[dnslab.DnsLab, Issued],
    pki: Hierarchy,
    ca_file: Path,
    smtp_port: int,
    tmp_path: Path,
) -> None:
    dns, served = lab
    path = tmp_path / "tlsprobe.yml"
    silent = unused_port()
    path.write_text(yaml.safe_dump(config(tmp_path, ca_file, smtp_port, silent)))
    server = SmtpTestServer(ServerTls(pki.chain(served), served.key), port=smtp_port)
    async with server, in_process(path) as exporter:
        (target,) = exporter.config.targets
        (before,) = await exporter.probe_now(target)
        assert before.error is not None and before.endpoint.host == DOMAIN
        path.write_text(yaml.safe_dump(config(tmp_path, ca_file, smtp_port, dns.port)))
        assert await exporter.reload() is None
        assert exporter.config.dns.port == dns.port
        (after,) = await exporter.probe_now(exporter.config.targets[0])
    assert after.error is None, after.error
    assert (after.endpoint.host, after.endpoint.address) == (MX, "127.0.0.1")
    dane = after.check("dane")
    assert dane is not None and after.dane is not None
    assert after.dane.status.value == "secure"
    # The one record matches the key served: only the missing rollover scheme is left to say.
    assert dane.status is Status.WARNING and "only one key covered" in dane.message, dane.message

"""`tlsprobe serve` resolves a configured host as `tlsprobe check` does: the hosts file, then
DNS. MX hosts stay DNS-only (senders resolve them through DNS). Names are loopback only: a
hosts file the test writes, and `localhost`, which `check` finds through the system's."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsserver import DnsTestServer
from tests.support.exporter import in_process
from tests.support.pki import Hierarchy
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import eventually
from tlsprobe.cli.main import main as cli_main
from tlsprobe.exporter.app import Exporter
from tlsprobe.model import Reason, Status
from tlsprobe.probe.dns.hostsfile import MAX_BYTES, HostsFile

HOST = "relay.hosts.test"


def config(tmp_path: Path, dns: DnsTestServer, target: dict[str, Any], **dns_keys: Any) -> Path:
    """A fresh state directory each time: no restored result stands in for a probe."""
    run = len(list(tmp_path.glob("state-*")))
    data = {
        "state_dir": str(tmp_path / f"state-{run}"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": "2s", **dns_keys},
        "defaults": {"interval": "1s", "timeout": "800ms", "retries": 0},
        "tenants": {"contoso": {"targets": [{"name": "relay", "addresses": "one", **target}]}},
    }
    (tmp_path / f"state-{run}").mkdir()
    path = tmp_path / "tlsprobe.yml"
    path.write_text(json.dumps(data))
    return path


async def first_result(exporter: Exporter) -> Any:
    await eventually(exporter.results.snapshot, "a result")
    return exporter.results.snapshot()[0].result


async def test_a_host_in_the_hosts_file_is_probed_like_check_probes_it(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    leaf = pki.leaf([HOST])
    hosts = tmp_path / "hosts"
    hosts.write_text(f"# test hosts\n127.0.0.1\t{HOST} relay\nnot-an-address {HOST}\n")
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as smtp:
        with DnsTestServer({}) as dns:  # DNS knows nothing of HOST
            target = {"host": HOST, "port": smtp.port, "ca_file": str(ca_file)}
            async with in_process(config(tmp_path, dns, target, hosts_file=str(hosts))) as ex:
                result = await first_result(ex)
            assert (result.address, result.error) == ("127.0.0.1", None)
            assert result.check("chain_trusted").status is Status.OK
            # Without the hosts file it is DNS only, and the error says so.
            async with in_process(config(tmp_path, dns, target, hosts_file=False)) as ex:
                result = await first_result(ex)
    assert result.error is not None and result.error.kind is Reason.DNS
    assert "DNS only" in result.error.message and "full name" in result.error.message


async def test_localhost_resolves_for_check_and_serve_alike(
    tmp_path: Path, pki: Hierarchy, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "127.0.0.1" not in HostsFile().lookup("localhost"):
        pytest.skip("the system hosts file does not list localhost")
    leaf = pki.leaf(["localhost"])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as smtp:
        code = await asyncio.to_thread(
            cli_main, ["check", f"localhost:{smtp.port}", f"--ca-file={ca_file}", "--json"]
        )
        checked = json.loads(capsys.readouterr().out)
        with DnsTestServer({}) as dns:
            target = {"host": "localhost", "port": smtp.port, "ca_file": str(ca_file)}
            async with in_process(config(tmp_path, dns, target)) as exporter:
                served = await first_result(exporter)
    assert checked["error"] is None and code in (0, 1), checked
    assert served.error is None and served.address == "127.0.0.1"


def test_the_hosts_file_is_read_bounded_and_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("::1 a.test\n127.0.0.2 a.test A.TEST.\n127.0.0.2 b.test # comment\n")
    hosts = HostsFile(path)
    assert hosts.lookup("A.test.") == ("127.0.0.2", "::1")
    path.write_text("127.0.0.3 b.test\n" + "#" * MAX_BYTES + "\n127.0.0.4 late.test\n")
    assert hosts.lookup("b.test") == ("127.0.0.3",)
    assert hosts.lookup("a.test") == () and hosts.lookup("late.test") == ()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for odd in (fifo, Path("/dev/zero"), tmp_path, tmp_path / "missing"):
        assert HostsFile(odd).lookup("a.test") == ()

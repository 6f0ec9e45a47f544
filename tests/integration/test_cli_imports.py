"""What the short-lived commands import: start-up is most of a `tlsprobe check`'s cost.

Nagios, Icinga and Checkmk start `tlsprobe check` once per service and interval, so a check that
loads the exporter's configuration (YAML and its schema), aiohttp or dnspython's resolver pays
for them every time. Each command here runs for real, as a subprocess (a probe of a loopback
server, a listener nobody connects to, a history read), and reports the modules it ended with.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.support.pki import Hierarchy, Issued
from tests.support.servers import ServerTls, SmtpTestServer, check_argv, unused_port

HOST = "mail.contoso.test"

# Prints nothing of its own: runs `python -m tlsprobe ARGS` and, at exit, writes sys.modules.
_RUN = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w", encoding="utf-8").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "tlsprobe"
runpy.run_module("tlsprobe", run_name="__main__", alter_sys=True)
"""

NOT_FOR_A_CHECK = (
    "tlsprobe.exporter",
    "tlsprobe.alerting",
    "tlsprobe.demo",
    "tlsprobe.cli.commands",
    "tlsprobe.cli.listen",
    "aiohttp",
    "yaml",
    "dns",
    "importlib.metadata",
    "tlsprobe.probe.dns",
)
NOT_FOR_LISTEN = tuple(m for m in NOT_FOR_A_CHECK if m != "tlsprobe.cli.listen")
NOT_FOR_HISTORY = ("tlsprobe.exporter.config", "aiohttp", "yaml", "dns", "importlib.metadata")


async def modules_of(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RUN,
        str(out),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    code = await asyncio.wait_for(process.wait(), timeout=30)
    return code, set(json.loads(out.read_text(encoding="utf-8")))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.fixture(scope="module")
def good_leaf(pki: Hierarchy) -> Issued:
    return pki.leaf((HOST,))


def check_args(port: int, ca_file: Path, *extra: str) -> list[str]:
    return [*check_argv(HOST, port, ca_file, "probe.test", 2.0), *extra]


async def test_check_imports_no_exporter_yaml_aiohttp_or_resolver(
    pki: Hierarchy, good_leaf: Issued, ca_file: Path, tmp_path: Path
) -> None:
    tls = ServerTls([good_leaf.cert, pki.intermediate.cert], good_leaf.key)
    async with SmtpTestServer(tls) as server:
        code, modules = await modules_of(tmp_path, *check_args(server.port, ca_file, "--json"))
        assert server.handshakes == 1
    assert code == 0
    assert "tlsprobe.probe.prober" in modules
    assert loaded(modules, NOT_FOR_A_CHECK) == []


async def test_check_with_dane_imports_the_resolver(
    pki: Hierarchy, good_leaf: Issued, ca_file: Path, tmp_path: Path
) -> None:
    """The other side: DNS machinery comes when an option asks for it (and the run above would
    have shown it), here a resolver on a loopback port where nothing answers."""
    tls = ServerTls([good_leaf.cert, pki.intermediate.cert], good_leaf.key)
    resolver = f"127.0.0.1:{unused_port()}"
    async with SmtpTestServer(tls) as server:
        args = check_args(server.port, ca_file, "--dane", "--resolver", resolver)
        _, modules = await modules_of(tmp_path, *args)
    assert "dns.resolver" in modules
    assert loaded(modules, ("tlsprobe.exporter", "yaml", "aiohttp")) == []


async def test_listen_imports_no_exporter_yaml_aiohttp_or_resolver(tmp_path: Path) -> None:
    port = unused_port()
    code, modules = await modules_of(tmp_path, "listen", f"127.0.0.1:{port}", "--timeout", "0.3")
    assert code == 3  # nobody connected: UNKNOWN after the wait, so the listener really ran
    assert "tlsprobe.probe.send.receiver" in modules
    assert loaded(modules, NOT_FOR_LISTEN) == []


async def test_history_reads_the_state_without_the_configuration(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    code, modules = await modules_of(tmp_path, "history", HOST, "--state-dir", str(state))
    assert code == 3  # no history database yet, said in one line
    assert "tlsprobe.cli.history" in modules
    assert loaded(modules, NOT_FOR_HISTORY) == []

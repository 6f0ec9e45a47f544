"""The Nagios-family examples in deploy/nagios/: Icinga 2, Checkmk (MRPE) and NRPE.

Icinga 2's own validator (`icinga2 daemon -C`) judges the CheckCommand and its apply rule, and
every option the CheckCommand passes must be one `tlsprobe check` takes. The NRPE and MRPE
lines run as the agents run them (through /bin/sh) against the real Postfix on loopback: the
line exactly as shipped, with only the example's names and port swapped for the test server's
and its trust anchor and address added; the exit code and the first line follow the plugin
conventions and the perfdata parses strictly with the thresholds tlsprobe applied.
"""

from __future__ import annotations

import getpass
import grp
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gates import Gate, system_tool, unavailable
from tests.support.nagios import parse_first_line
from tlsprobe.cli import main as cli

NAGIOS = Path(__file__).resolve().parents[2] / "deploy" / "nagios"
ICINGA = NAGIOS / "icinga2.conf"
NRPE = NAGIOS / "nrpe.cfg"
MRPE = NAGIOS / "mrpe.cfg"
PROGRAM = "/usr/local/bin/tlsprobe"

HOST_WITH_VARS = """
object Host "relay.contoso.com" {
  check_command = "dummy"
  vars.tlsprobe_certificate_domain = "*.contoso.com"
  vars.tlsprobe_accepted_domains = [ "contoso.com" ]
}
object Host "web.contoso.com" {
  check_command = "dummy"
}
"""


def _validate(tmp_path: Path, example: str) -> subprocess.CompletedProcess[str]:
    icinga2 = system_tool("icinga2", Gate.ICINGA)
    (tmp_path / "tlsprobe.conf").write_text(example)
    main = tmp_path / "icinga2.conf"
    main.write_text(f'include <itl>\ninclude "tlsprobe.conf"\n{HOST_WITH_VARS}')
    cache = tmp_path / "cache"
    cache.mkdir()
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    command = [icinga2, "daemon", "-C", "-c", str(main), f"-DCacheDir={cache}"]
    return subprocess.run(
        [*command, f"-DRunAsUser={user}", f"-DRunAsGroup={group}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_icinga2_validates_the_shipped_example(tmp_path: Path) -> None:
    completed = _validate(tmp_path, ICINGA.read_text())
    out = completed.stdout + completed.stderr
    assert completed.returncode == 0, out
    # The apply rule matches the host with connector vars and only it.
    assert "Instantiated 1 Service." in out
    assert "warning/" not in out, out


def test_icinga2_validation_rejects_a_broken_example(tmp_path: Path) -> None:
    # The validator has teeth: an unknown attribute in the CheckCommand fails it.
    broken = ICINGA.read_text().replace("timeout = 60s", "timeout_seconds = 60")
    completed = _validate(tmp_path, broken)
    assert completed.returncode != 0
    assert "timeout_seconds" in completed.stdout + completed.stderr


def _check_options() -> set[str]:
    parser = cli.make_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    check = sub.choices["check"]  # type: ignore[index]
    return {flag for action in check._actions for flag in action.option_strings}


def test_icinga2_command_passes_only_options_tlsprobe_check_takes() -> None:
    passed = set(re.findall(r'^\s*"(--[a-z-]+)"\s*=', ICINGA.read_text(), re.MULTILINE))
    assert {"--certificate-domain", "--accepted-domain", "--timeout"} <= passed
    assert passed <= _check_options(), passed - _check_options()


def _shipped_line(path: Path) -> str:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, lines
    return lines[0]


def _nrpe_command() -> str:
    name, equals, command = _shipped_line(NRPE).partition("]=")
    assert name.startswith("command[") and equals
    return command


def _mrpe_command() -> str:
    # `NAME (interval=N) COMMAND...`: the service name, optional parameters, the command.
    name, rest = _shipped_line(MRPE).split(" ", 1)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", name)
    return re.sub(r"^\([^)]*\)\s*", "", rest)


@pytest.fixture(scope="module")
def postfix() -> tuple[str, int, str]:
    service = os.environ.get("TLSPROBE_TEST_POSTFIX")
    ca_file = os.environ.get("TLSPROBE_TEST_POSTFIX_CA")
    if not service or not ca_file:
        unavailable(Gate.POSTFIX, "TLSPROBE_TEST_POSTFIX / TLSPROBE_TEST_POSTFIX_CA unset")
    address, _, port = service.rpartition(":")
    return address.strip("[]"), int(port), ca_file


@pytest.mark.postfix
@pytest.mark.parametrize("command", [_nrpe_command, _mrpe_command], ids=["nrpe", "mrpe"])
def test_the_agent_command_line_checks_a_real_postfix(
    command: object, postfix: tuple[str, int, str]
) -> None:
    address, port, ca_file = postfix
    assert callable(command)
    line: str = command()
    assert line.startswith(PROGRAM + " check relay.contoso.com:25 ")
    line = (
        line.replace(PROGRAM, f"{shlex.quote(sys.executable)} -m tlsprobe")
        .replace("relay.contoso.com:25", f"mail.tlsprobe.test:{port}")
        .replace("contoso.com", "tlsprobe.test")
    )
    line += f" --address {address} --ca-file {shlex.quote(ca_file)}"
    completed = subprocess.run(
        ["/bin/sh", "-c", line], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = parse_first_line(completed.stdout)
    assert output.state == "OK"
    days = output.perfdata["days_left"]
    assert days.value > 7
    assert (days.warn, days.crit, days.minimum, days.maximum) == ("21", "7", None, None)
    total = output.perfdata["total"]
    assert (total.uom, total.minimum, total.maximum) == ("s", 0.0, 30.0)
    assert 0 < total.value < 30

"""Skip gates: a test that needs what this machine may lack skips, unless the run requires it.

Each gate reads one environment variable, `TLSPROBE_REQUIRE_<GATE>`: set to 1, a missing
requirement fails the test instead of skipping it. `.ci/run` sets the variables of everything it
installs or is (root), so CI cannot go green by skipping; README.md lists the gates.
"""

from __future__ import annotations

import importlib
import os
import shutil
from enum import StrEnum
from types import ModuleType
from typing import NoReturn

import pytest


class Gate(StrEnum):
    """What a test may need from the machine; the value names the environment variable."""

    POSTFIX = "TLSPROBE_REQUIRE_POSTFIX"
    """A Postfix on loopback, named by TLSPROBE_TEST_POSTFIX(_CA) (.ci/postfix.sh starts it)."""
    PROMETHEUS = "TLSPROBE_REQUIRE_PROMETHEUS"
    """prometheus, promtool, prometheus-alertmanager, amtool, prometheus-blackbox-exporter."""
    ROOT = "TLSPROBE_REQUIRE_ROOT"
    """Mounting a tmpfs (the full-disk test); port 443 on loopback (the MTA-STS policy server)."""
    SYSTEMD = "TLSPROBE_REQUIRE_SYSTEMD"
    """systemd-analyze with offline security analysis (systemd 252 or newer)."""
    KUBECTL = "TLSPROBE_REQUIRE_KUBECTL"
    """kubectl, to render the kustomization."""
    IPV6 = "TLSPROBE_REQUIRE_IPV6"
    """A bindable ::1."""
    MDWE = "TLSPROBE_REQUIRE_MDWE"
    """The kernel's PR_SET_MDWE (Linux 6.3 or newer)."""
    UVLOOP = "TLSPROBE_REQUIRE_UVLOOP"
    """uvloop, the optional event loop (`pip install -e '.[uvloop]'`)."""
    DNSLAB = "TLSPROBE_REQUIRE_DNSLAB"
    """nsd and unbound, for the DNSSEC laboratory of the DANE and MTA-STS tests."""
    BROWSER = "TLSPROBE_REQUIRE_BROWSER"
    """Chromium (Debian package `chromium`), for the page tests in a real browser."""
    ICINGA = "TLSPROBE_REQUIRE_ICINGA"
    """icinga2 (Debian package), to validate the shipped Icinga 2 example."""


def required(gate: Gate) -> bool:
    return os.environ.get(gate.value) == "1"


def unavailable(gate: Gate, reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it when the run requires `gate`."""
    if required(gate):
        pytest.fail(f"{gate.value}=1 but {reason}")
    pytest.skip(f"{reason} (set {gate.value}=1 to fail instead)")


# The Prometheus tools by what the tests call them: executable names (Debian's first), package.
_PROMETHEUS_TOOLS = {
    "prometheus": (("prometheus",), "prometheus"),
    "promtool": (("promtool",), "prometheus"),
    "alertmanager": (("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager"),
    "amtool": (("amtool",), "prometheus-alertmanager"),
    "blackbox_exporter": (
        ("prometheus-blackbox-exporter", "blackbox_exporter"),
        "prometheus-blackbox-exporter",
    ),
}
_SYSTEM_PATH = os.pathsep.join(("/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"))


def find_tool(name: str) -> str | None:
    """The path of an executable on PATH or in the system directories, or None."""
    return shutil.which(name) or shutil.which(name, path=_SYSTEM_PATH)


def prometheus_tool(name: str) -> str:
    """The path of `prometheus`, `promtool`, `alertmanager`, `amtool` or `blackbox_exporter`;
    skips (fails under TLSPROBE_REQUIRE_PROMETHEUS=1) without it."""
    executables, package = _PROMETHEUS_TOOLS[name]
    for executable in executables:
        path = find_tool(executable)
        if path is not None:
            return path
    unavailable(Gate.PROMETHEUS, f"{name} is not installed (Debian package: {package})")


def prometheus_tool_or_none(name: str) -> str | None:
    """`prometheus_tool` for what a test only compares against when present: None when absent,
    unless the run requires the Prometheus tools."""
    if required(Gate.PROMETHEUS):
        return prometheus_tool(name)
    executables, _ = _PROMETHEUS_TOOLS[name]
    return next((path for path in map(find_tool, executables) if path is not None), None)


def importable(module: str, gate: Gate) -> ModuleType:
    """An optional third-party module; skips (fails when `gate` is required) without it. Never
    for the project's own modules: those must import, or the test fails."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(gate, f"could not import {module!r}: {exc}")


def system_tool(name: str, gate: Gate) -> str:
    """The path of `name`; skips (fails when `gate` is required) without it."""
    path = find_tool(name)
    if path is None:
        unavailable(gate, f"{name} is not installed")
    return path

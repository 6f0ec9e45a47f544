"""The floors CI installs (.ci/floors.txt) are the lowest versions pyproject.toml allows: a floor
raised in one and not the other would test a version users cannot get, or leave one untested."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(?:,.*)?", requirement.strip())
        if match:
            found[match[1].lower()] = match[2]
    return found


def _pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "floors.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip().lower(): version.strip() for name, version in pins}


def test_the_ci_floors_are_the_lowest_versions_allowed() -> None:
    pins = _pins()
    assert set(pins) == {"dnspython", "aiohttp", "prometheus-client"}
    floors = _floors()
    for name, version in pins.items():
        # pyproject says 2.7, the pin 2.7.0: the same lowest release.
        assert re.fullmatch(re.escape(floors[name]) + r"(\.0)*", version), (name, version)

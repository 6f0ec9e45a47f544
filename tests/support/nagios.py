"""A strict reader of Nagios plugin output, for tests: the first line's status and perfdata.

Perfdata follows the Monitoring Plugins guidelines: space-separated
`'label'=value[UOM];[warn];[crit];[min];[max]`; value, min and max are numbers of the class
[-0-9.], UOM is one of the guidelines' units (none, s, ms, us, %, B, KB, MB, TB, c), warn and
crit are thresholds (plain numbers or ranges). Anything else is a `ValueError`, so a test that
parses an output also proves that Icinga, Checkmk or NRPE would read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = rf"@?(?:~|{_NUMBER})?:?(?:{_NUMBER})?"
_FIGURE = re.compile(
    rf"(?P<label>[^'=\s]+|'[^'=]+')=(?P<value>{_NUMBER})(?P<uom>s|ms|us|%|B|KB|MB|TB|c)?"
    rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUMBER})?"
    rf"(?:;(?P<max>{_NUMBER})?)?)?)?)?"
)
_FIRST_LINE = re.compile(r"(?P<service>[A-Z0-9_]+) (?P<state>OK|WARNING|CRITICAL|UNKNOWN) - ")


@dataclass(frozen=True)
class Figure:
    label: str
    value: float
    uom: str
    warn: str
    crit: str
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class PluginOutput:
    state: str
    text: str
    perfdata: dict[str, Figure]


def parse_perfdata(text: str) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for token in text.split():
        match = _FIGURE.fullmatch(token)
        if match is None:
            raise ValueError(f"not a perfdata figure: {token!r}")
        label = match["label"].strip("'")
        if label in figures:
            raise ValueError(f"perfdata label {label!r} twice")
        figures[label] = Figure(
            label=label,
            value=float(match["value"]),
            uom=match["uom"] or "",
            warn=match["warn"] or "",
            crit=match["crit"] or "",
            minimum=None if match["min"] is None else float(match["min"]),
            maximum=None if match["max"] is None else float(match["max"]),
        )
    return figures


def parse_first_line(output: str) -> PluginOutput:
    first = output.split("\n", 1)[0]
    text, bar, perf = first.partition("|")
    match = _FIRST_LINE.match(text)
    if match is None:
        raise ValueError(f"not a plugin status line: {first[:80]!r}")
    if not bar:
        raise ValueError("no perfdata")
    return PluginOutput(match["state"], text.strip(), parse_perfdata(perf))

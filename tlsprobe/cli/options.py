"""Typed command-line values: numbers checked for range at parse time, one line when wrong.

`float("inf")`, `float("nan")` and `1e300` all parse as numbers; a deadline of infinity never
ends on a silent server and NaN compares false with everything, so every numeric option names
its sane range and argparse reports a value outside it as a usage error (exit 3).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_TIMEOUT = 3600.0
"""Seconds: one probe of one server never needs an hour."""
MAX_WAIT = 86400.0
"""Seconds `listen` waits for a relay to connect: a day covers any test an administrator runs."""
MAX_DAYS = 3650.0
"""Ten years: no certificate threshold is longer."""


class UsageError(Exception):
    """A bad argument value, reported in one line (exit 3)."""


def bounded(
    low: float, high: float, *, low_open: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """An argparse `type` accepting finite numbers in [low, high] (or (low, high])."""
    bracket = "(" if low_open else "["
    allowed = f"{bracket}{low:g}, {high:g}]{(' ' + unit) if unit else ''}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is outside {allowed}")
        return value

    parse.__name__ = "number"  # argparse names the type in its message
    return parse


timeout_seconds = bounded(0.0, MAX_TIMEOUT, low_open=True, unit="seconds")
days = bounded(0.0, MAX_DAYS, unit="days")

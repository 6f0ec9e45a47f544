"""Readers for the configuration's scalar values: each returns a checked value or raises a
`ConfigError` at the key path it was given, with a message fit to follow that path. No message
quotes the value (or an unknown key): a password pasted on the wrong line, or a canary relay
written `user:password@host`, would be printed, logged and shown in a reload's answer.

Durations are Prometheus-style text (`30s`, `1h30m`) or seconds; host names are LDH labels
after IDNA normalization.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Iterable, Sequence

from tlsprobe.exporter.config.schema import MAX_DAYS, MAX_DURATION, ConfigError
from tlsprobe.probe import names
from tlsprobe.probe.names import is_host_name, normalize_name

_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?",
    re.ASCII,
)
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


# --- durations -----------------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number of seconds, or text like 30s, 5m, 1h30m, 250ms, 2d.

    Units go from largest to smallest, each at most once (as in Prometheus).  Raises
    ValueError with a message fit to follow a key path.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"must be a duration such as 30s, 5m or 1h30m, or a number of seconds, "
            f"got {kind(value)}"
        )
    seconds = _duration_seconds(value) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)}")
    return seconds


def _duration_seconds(text: str) -> float:
    stripped = text.strip()
    if _PLAIN_NUMBER.fullmatch(stripped):
        return float(stripped)
    match = _DURATION.fullmatch(stripped)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            "is not a duration: use a number of seconds or a value like 30s, 5m, 1h30m, 250ms"
        )
    return sum(float(v) * _UNIT_SECONDS[unit] for unit, v in match.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest unit form: 300 -> "5m", 5400 -> "1h30m", 0.25 -> "250ms", 0 -> "0s"."""
    remaining = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    if remaining:
        parts.append(f"{remaining}ms")
    return "".join(parts) or "0s"


# --- scalars -------------------------------------------------------------------------------


def mapping(value: object, where: str, allowed: Sequence[str]) -> dict[str, object]:
    """A mapping with only `allowed` keys; null values count as absent."""
    section = mapping_of_any(value, where)
    for number, key in enumerate(section, 1):
        if not isinstance(key, str) or key not in allowed:
            close = difflib.get_close_matches(key, allowed, 1) if isinstance(key, str) else []
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                where,
                f"key number {number}{'' if where else ' at the top level'} is unknown "
                "(expected one of: "
                f"{', '.join(sorted(allowed))}){hint}",
            )
    return {str(k): v for k, v in section.items() if v is not None}


def mapping_of_any(value: object, where: str) -> dict[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a mapping, got {kind(value)}")
    return value


def listing(value: object, where: str, expected: str = "a list") -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(where, f"must be {expected}, got {kind(value)}")
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc), as one search instead of a lookup a character."""


def string_of(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, got {kind(value)}")
    if _CONTROL.search(value):
        raise ConfigError(where, "must not contain control characters")
    return value


def integer(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"must be an integer, got {kind(value)}")
    if not low <= value <= high:
        raise ConfigError(where, f"must be {low}-{high}")
    return value


def days(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"must be a number of days, got {kind(value)}")
    if not (math.isfinite(value) and 0 <= value <= MAX_DAYS):
        raise ConfigError(where, f"must be 0-{MAX_DAYS}")
    return float(value)


def duration(value: object, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def choice(value: object, where: str, choices: Iterable[str]) -> str:
    text = string_of(value, where)
    options = tuple(choices)
    if text not in options:
        raise ConfigError(where, f"must be one of: {', '.join(options)}")
    return text


def display_name(value: object, where: str) -> str:
    text = string_of(value, where)
    if not text.strip() or len(text) > 253:
        raise ConfigError(where, "must be 1-253 characters, not only spaces")
    return text


def ip_text(value: object, where: str) -> str:
    text = string_of(value, where)
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(where, "is not an IP address") from None


def host_value(value: object, where: str) -> str:
    text = string_of(value, where).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass  # not an address literal: a name
    return _name(text, where, "a valid host name or IP address")


def domain_name(value: object, where: str) -> str:
    return _name(string_of(value, where).strip(), where, "a valid domain name")


def _name(text: str, where: str, what: str) -> str:
    name = normalize_name(text)
    if not is_host_name(name):
        raise ConfigError(where, f"is not {what}")
    return name


def ehlo_value(value: object, where: str) -> str:
    """A host name, or an address literal as RFC 5321 writes it: [192.0.2.1], [IPv6:...]."""
    text = string_of(value, where).strip()
    try:
        return names.ehlo_name(text)
    except names.EhloNameError as exc:
        raise ConfigError(where, exc.problem.lstrip(": ")) from None


# --- messages ------------------------------------------------------------------------------


def kind(value: object) -> str:
    """The YAML name of a value's type, for "must be X, got Y"."""
    names: list[tuple[type, str]] = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "list"),
        (dict, "mapping"),
        (bytes, "binary"),
        (type(None), "null"),
    ]
    for type_, name in names:
        if isinstance(value, type_):
            return name
    return type(value).__name__


def join_path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key

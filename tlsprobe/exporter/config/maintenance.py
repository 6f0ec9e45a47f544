"""Maintenance windows (`maintenance:` of a tenant or a target): parsed once, asked at scrape time.

A window is one-off (`start` and `end`, date and time) or weekly (`days`, a local `start` time
and a `duration`), each in its stated IANA `timezone` (zoneinfo, the system's tz database).
Whether a window is open is a question asked with the current time on every scrape, never
answered at load: windows open and close without a reload.

Wall clock and elapsed time: a weekly window starts at its local time on each of its days
(so it follows the zone's daylight saving time) and lasts `duration` of elapsed time (a 2h
window is two hours long also on the night the clocks change). A start time that the clocks
skip (02:30 when they go from 02:00 to 03:00) starts the window as far after the gap as it
was into it (03:30); one they pass twice (when they go back) is the first of the two.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from tlsprobe.exporter.config.schema import MAX_DURATION, ConfigError
from tlsprobe.exporter.config.values import duration, kind, listing, mapping, string_of

MAX_WINDOWS = 32
"""Windows in one `maintenance:` list (a tenant's or a target's)."""
MAX_WEEKLY_DURATION = 7 * 86400.0
"""A weekly window is at most a week long: a longer one would never close."""
WINDOW_KEYS = ("start", "end", "days", "duration", "timezone")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?", re.ASCII)
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+){0,2}", re.ASCII)


@dataclass(frozen=True, slots=True)
class OneOff:
    """A single window: open from `start` (inclusive) to `end` (exclusive), Unix times."""

    start: float
    end: float

    def open_until(self, now: float) -> float | None:
        return self.end if self.start <= now < self.end else None


@dataclass(frozen=True, slots=True)
class Weekly:
    """A window opening at local time `at` in `zone` on each of `days` (0 Monday) for
    `duration` seconds of elapsed time."""

    days: frozenset[int]
    at: time
    duration: float
    zone: str

    def open_until(self, now: float) -> float | None:
        """The end of the occurrence open at `now` (the latest, if two overlap), else None."""
        zone = zoneinfo.ZoneInfo(self.zone)  # cached by zoneinfo
        today = datetime.fromtimestamp(now, zone).date()
        # An occurrence that is still open started at most `duration` ago: a few days back.
        back = math.ceil(self.duration / 86400) + 1
        until = None
        for offset in range(back, -1, -1):
            day = today - timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start = _local(day, self.at, zone)
            if start <= now < start + self.duration:
                until = start + self.duration
        return until


Window = OneOff | Weekly


def open_until(windows: Iterable[Window], now: float) -> float | None:
    """When the windows open at `now` close (the latest end of those open), or None."""
    ends = [end for w in windows if (end := w.open_until(now)) is not None]
    return max(ends) if ends else None


def status(
    scheduled: Iterable[tuple[tuple[str, str], tuple[Window, ...]]], now: float
) -> dict[tuple[str, str], float | None]:
    """Per (tenant, target) that has windows: the end of the open window, or None when none
    is open. Targets sharing a schedule (a tenant's) are worked out once."""
    seen: dict[tuple[Window, ...], float | None] = {}
    out: dict[tuple[str, str], float | None] = {}
    for key, windows in scheduled:
        if not windows:
            continue
        if windows not in seen:
            seen[windows] = open_until(windows, now)
        out[key] = seen[windows]
    return out


# --- parsing -------------------------------------------------------------------------------


def windows(value: object, where: str) -> tuple[Window, ...]:
    """A `maintenance:` list; every problem a ConfigError at the key, no value quoted."""
    at = f"{where}.maintenance"
    items = listing(value, at, "a list of windows")
    if len(items) > MAX_WINDOWS:
        raise ConfigError(at, f"at most {MAX_WINDOWS} windows")
    return tuple(window(item, f"{at}[{i}]") for i, item in enumerate(items))


def window(value: object, where: str) -> Window:
    section = mapping(value, where, WINDOW_KEYS)
    if "timezone" not in section:
        raise ConfigError(where, "needs timezone (an IANA name such as Europe/Berlin or UTC)")
    zone = time_zone(section["timezone"], f"{where}.timezone")
    if "days" in section:
        return _weekly(section, where, zone)
    return _one_off(section, where, zone)


def _one_off(section: Mapping[str, object], where: str, zone: tzinfo) -> OneOff:
    if "duration" in section:
        raise ConfigError(f"{where}.duration", "only a weekly window (with days) has one")
    if "start" not in section or "end" not in section:
        raise ConfigError(
            where, "needs start and end (a one-off window), or days, start and duration"
        )
    start = moment(section["start"], f"{where}.start", zone)
    end = moment(section["end"], f"{where}.end", zone)
    if end <= start:
        raise ConfigError(f"{where}.end", "must be after start")
    if end - start > MAX_DURATION:
        raise ConfigError(f"{where}.end", "must be at most 365 days after start")
    return OneOff(start, end)


def _weekly(section: Mapping[str, object], where: str, zone: zoneinfo.ZoneInfo) -> Weekly:
    if "end" in section:
        raise ConfigError(f"{where}.end", "a weekly window has a duration, not an end")
    if "start" not in section or "duration" not in section:
        raise ConfigError(where, "a weekly window needs days, start and duration")
    seconds = duration(section["duration"], f"{where}.duration")
    if not 0 < seconds <= MAX_WEEKLY_DURATION:
        raise ConfigError(f"{where}.duration", "must be more than 0s and at most 7d")
    return Weekly(
        days=weekdays(section["days"], f"{where}.days"),
        at=clock(section["start"], f"{where}.start"),
        duration=seconds,
        zone=zone.key,
    )


def time_zone(value: object, where: str) -> zoneinfo.ZoneInfo:
    text = string_of(value, where)
    if len(text) > 64 or not _ZONE_KEY.fullmatch(text):
        raise ConfigError(where, "must be an IANA time zone name such as Europe/Berlin or UTC")
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            where, "is not a time zone of this system's tz database (IANA names: Europe/Berlin)"
        ) from None


def weekdays(value: object, where: str) -> frozenset[int]:
    if value == "daily":
        return frozenset(range(7))
    items = listing(value, where, "a list of days (mon, tue, ... sun) or daily")
    if not items:
        raise ConfigError(where, "must name at least one day")
    found = set()
    for i, item in enumerate(items):
        if not isinstance(item, str) or item.lower() not in DAYS:
            raise ConfigError(f"{where}[{i}]", f"must be one of: {', '.join(DAYS)}")
        found.add(DAYS.index(item.lower()))
    return frozenset(found)


def clock(value: object, where: str) -> time:
    """A local time of day, HH:MM or HH:MM:SS, quoted: YAML 1.1 reads an unquoted 22:00 as
    a number of minutes (1320), which cannot be told from a number meant otherwise."""
    if not isinstance(value, str):
        raise ConfigError(where, f'must be a quoted time of day ("22:00"), got {kind(value)}')
    match = _CLOCK.fullmatch(string_of(value, where).strip())
    if match is None:
        raise ConfigError(where, "must be a time of day, HH:MM or HH:MM:SS")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def moment(value: object, where: str, zone: tzinfo) -> float:
    """A date and time as Unix time: ISO 8601 (`2026-12-24T18:00`) or a YAML timestamp, in
    `zone` unless it states its own offset."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        raise ConfigError(where, "must be a date and a time (2026-12-24T18:00), not only a date")
    else:
        text = string_of(value, where).strip()
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                where, "must be a date and time in ISO 8601, such as 2026-12-24T18:00"
            ) from None
        if len(text) <= 10:
            raise ConfigError(
                where, "must be a date and a time (2026-12-24T18:00), not only a date"
            )
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=zone)
    return stamp.timestamp()


def _local(day: date, at: time, zone: tzinfo) -> float:
    return datetime.combine(day, at, tzinfo=zone).timestamp()

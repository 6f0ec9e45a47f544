"""Maintenance windows: the schedule (daylight saving time in the stated zone, windows across
midnight and the week's end, one-off windows past and present), the configuration's checks, the
series the exporter derives at scrape time and the status page's mark."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tests.support.pki import Hierarchy
from tests.unit.test_metrics import families, parsed
from tests.unit.test_statuspage import states as status_states
from tlsprobe.exporter.config import ConfigError, parse_config
from tlsprobe.exporter.config.maintenance import (
    MAX_WINDOWS,
    OneOff,
    Weekly,
    open_until,
    status,
    window,
)
from tlsprobe.exporter.exposition import collector
from tlsprobe.exporter.exposition.metrics import TextRenderer, maintenance_samples
from tlsprobe.exporter.pages.status import PAGE_TTL, StatusPage
from tlsprobe.probe.x509.evaluate import TrustStore

SECRET = "Zq9xS3cretPw"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def weekly(days: list[str] | str, start: str, duration: str, zone: str) -> Weekly:
    parsed = window({"days": days, "start": start, "duration": duration, "timezone": zone}, "w")
    assert isinstance(parsed, Weekly)
    return parsed


def is_open(w: OneOff | Weekly, moment: float) -> bool:
    return w.open_until(moment) is not None


# --- daylight saving time in the stated zone --------------------------------------------------
# Europe/Berlin 2026: clocks go 02:00 CET -> 03:00 CEST on Sunday 29 March (01:00 UTC) and
# 03:00 CEST -> 02:00 CET on Sunday 25 October (01:00 UTC).


def test_a_weekly_window_follows_the_zones_wall_clock_across_a_change() -> None:
    w = weekly(["sun"], "04:00", "1h", "Europe/Berlin")
    # 04:00 CET (UTC+1) the week before, 04:00 CEST (UTC+2) on the day and after.
    assert w.open_until(utc(2026, 3, 22, 3, 0)) == utc(2026, 3, 22, 4, 0)
    assert not is_open(w, utc(2026, 3, 22, 2, 59))
    assert w.open_until(utc(2026, 3, 29, 2, 0)) == utc(2026, 3, 29, 3, 0)
    assert not is_open(w, utc(2026, 3, 29, 3, 0))
    assert not is_open(w, utc(2026, 3, 29, 1, 59))
    assert w.open_until(utc(2026, 10, 25, 3, 0)) == utc(2026, 10, 25, 4, 0)  # CET again


def test_a_window_over_the_spring_change_lasts_its_elapsed_duration() -> None:
    w = weekly(["sun"], "01:30", "2h", "Europe/Berlin")
    # 01:30 CET is 00:30 UTC; two hours later is 02:30 UTC (04:30 CEST on the wall clock).
    assert w.open_until(utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 2, 30)
    assert is_open(w, utc(2026, 3, 29, 2, 29))
    assert not is_open(w, utc(2026, 3, 29, 2, 30))
    assert not is_open(w, utc(2026, 3, 29, 0, 29))


def test_a_start_the_clocks_skip_opens_as_far_after_the_gap() -> None:
    w = weekly(["sun"], "02:30", "1h", "Europe/Berlin")
    # 02:30 does not exist on 29 March: the window opens at 03:30 CEST (01:30 UTC).
    assert not is_open(w, utc(2026, 3, 29, 1, 29))
    assert w.open_until(utc(2026, 3, 29, 1, 30)) == utc(2026, 3, 29, 2, 30)


def test_a_start_the_clocks_pass_twice_is_the_first() -> None:
    w = weekly(["sun"], "02:30", "1h", "Europe/Berlin")
    # 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET) on 25 October: the first counts.
    assert w.open_until(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 1, 30)
    assert not is_open(w, utc(2026, 10, 25, 1, 30))


def test_the_same_schedule_in_another_zone_is_another_moment() -> None:
    berlin = weekly(["mon"], "09:00", "30m", "Europe/Berlin")
    new_york = weekly(["mon"], "09:00", "30m", "America/New_York")
    monday = utc(2026, 7, 6, 7, 10)  # 09:10 in Berlin (CEST), 03:10 in New York (EDT)
    assert is_open(berlin, monday) and not is_open(new_york, monday)
    assert is_open(new_york, utc(2026, 7, 6, 13, 10))


# --- across midnight and the week's end -------------------------------------------------------


def test_a_window_across_midnight_is_open_after_it() -> None:
    w = weekly(["sat"], "22:00", "4h", "UTC")  # 2026-12-05 is a Saturday
    assert not is_open(w, utc(2026, 12, 5, 21, 59))
    assert w.open_until(utc(2026, 12, 5, 22, 0)) == utc(2026, 12, 6, 2, 0)
    assert w.open_until(utc(2026, 12, 6, 1, 59)) == utc(2026, 12, 6, 2, 0)
    assert not is_open(w, utc(2026, 12, 6, 2, 0))
    assert not is_open(w, utc(2026, 12, 6, 22, 30))  # Sunday is not a day of it


def test_a_window_across_the_weeks_end_and_a_long_one() -> None:
    sunday_night = weekly(["sun"], "23:00", "2h", "Europe/Berlin")
    assert is_open(sunday_night, utc(2026, 12, 6, 23, 30))  # Monday 00:30 CET
    every_day = weekly("daily", "00:00", "7d", "UTC")
    assert every_day.open_until(utc(2026, 12, 8, 12, 0)) == utc(2026, 12, 15, 0, 0)


def test_overlapping_windows_end_at_the_latest() -> None:
    windows = (
        weekly(["tue"], "01:00", "2h", "UTC"),
        OneOff(utc(2026, 12, 8, 0, 0), utc(2026, 12, 8, 5, 0)),
    )
    assert open_until(windows, utc(2026, 12, 8, 1, 30)) == utc(2026, 12, 8, 5, 0)
    assert open_until(windows, utc(2026, 12, 8, 6, 0)) is None


# --- one-off windows --------------------------------------------------------------------------


def test_a_one_off_window_in_its_zone_from_start_to_before_end() -> None:
    w = window(
        {"start": "2026-12-24T18:00", "end": "2026-12-27T08:00", "timezone": "Europe/Berlin"}, "w"
    )
    assert w == OneOff(utc(2026, 12, 24, 17, 0), utc(2026, 12, 27, 7, 0))
    assert is_open(w, utc(2026, 12, 24, 17, 0)) and not is_open(w, utc(2026, 12, 27, 7, 0))


def test_a_one_off_window_with_an_offset_or_a_yaml_timestamp() -> None:
    stated = window(
        {
            "start": "2026-12-24T18:00+00:00",
            "end": "2026-12-24T19:00Z",
            "timezone": "Europe/Berlin",
        },
        "w",
    )
    assert stated == OneOff(utc(2026, 12, 24, 18, 0), utc(2026, 12, 24, 19, 0))
    naive = datetime(2026, 12, 24, 18, 0)  # what YAML makes of an unquoted timestamp
    read = window({"start": naive, "end": "2026-12-24T20:00", "timezone": "UTC"}, "w")
    assert read == OneOff(utc(2026, 12, 24, 18, 0), utc(2026, 12, 24, 20, 0))


def config(tenant: dict[str, Any], target: dict[str, Any] | None = None) -> Any:
    targets = [{"host": "mail.contoso.test", **(target or {})}, {"host": "mx2.contoso.test"}]
    return parse_config(
        {"tenants": {"contoso": {**tenant, "targets": targets}}}, base_dir=Path(".")
    )


def test_a_past_one_off_window_is_accepted_and_never_open() -> None:
    past = {"start": "2020-01-01T00:00", "end": "2020-01-02T00:00", "timezone": "UTC"}
    loaded = config({}, {"maintenance": [past]})
    scheduled = [(t.key, t.maintenance) for t in loaded.targets]
    assert status(scheduled, time.time()) == {("contoso", "mail.contoso.test"): None}


# --- the configuration ------------------------------------------------------------------------


def test_a_target_has_its_tenants_windows_and_its_own() -> None:
    tenant_window = {"days": ["sun"], "start": "02:00", "duration": "2h", "timezone": "UTC"}
    own = {"start": "2026-12-24T18:00", "end": "2026-12-25T08:00", "timezone": "UTC"}
    loaded = config({"maintenance": [tenant_window]}, {"maintenance": [own]})
    first, second = loaded.targets
    assert len(first.maintenance) == 2 and isinstance(first.maintenance[1], OneOff)
    assert second.maintenance == loaded.tenants[0].maintenance == first.maintenance[:1]


def test_a_top_level_target_may_have_windows() -> None:
    w = {"days": ["mon"], "start": "02:00", "duration": "1h", "timezone": "UTC"}
    loaded = parse_config(
        {"targets": [{"host": "mail.example.test", "maintenance": [w]}]}, base_dir=Path(".")
    )
    assert loaded.targets[0].maintenance == (weekly(["mon"], "02:00", "1h", "UTC"),)


WEEKLY = {"days": ["sat"], "start": "22:00", "duration": "4h", "timezone": "UTC"}
ONE_OFF = {"start": "2026-12-24T18:00", "end": "2026-12-25T08:00", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("item", "path", "words"),
    [
        ({**WEEKLY, "timezone": None}, "[0]", "needs timezone"),
        ({**WEEKLY, "timezone": f"Europe/{SECRET}"}, "[0].timezone", "tz database"),
        ({**WEEKLY, "timezone": f"../{SECRET}"}, "[0].timezone", "IANA"),
        ({**WEEKLY, "timezone": "Europe"}, "[0].timezone", "tz database"),  # a directory
        ({**WEEKLY, "days": [f"{SECRET}"]}, "[0].days[0]", "mon, tue"),
        ({**WEEKLY, "days": []}, "[0].days", "at least one day"),
        ({**WEEKLY, "start": 1320}, "[0].start", "quoted time of day"),
        ({**WEEKLY, "start": f"25:{SECRET}"}, "[0].start", "HH:MM"),
        ({**WEEKLY, "duration": "0s"}, "[0].duration", "at most 7d"),
        ({**WEEKLY, "duration": "8d"}, "[0].duration", "at most 7d"),
        ({**WEEKLY, "end": "2026-12-25T08:00"}, "[0].end", "not an end"),
        ({**WEEKLY, "duration": None}, "[0]", "days, start and duration"),
        ({**ONE_OFF, "end": "2026-12-24T17:00"}, "[0].end", "after start"),
        ({**ONE_OFF, "end": "2028-12-24T17:00"}, "[0].end", "365 days"),
        ({**ONE_OFF, "end": None}, "[0]", "start and end"),
        ({**ONE_OFF, "start": f"2026-{SECRET}"}, "[0].start", "ISO 8601"),
        ({**ONE_OFF, "start": "2026-12-24"}, "[0].start", "not only a date"),
        ({**ONE_OFF, "duration": "1h"}, "[0].duration", "weekly"),
        ({**ONE_OFF, SECRET: 1}, "[0]", "unknown"),
        (SECRET, "[0]", "mapping"),
    ],
)
def test_a_bad_window_is_one_error_at_its_key_without_the_value(
    item: object, path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config({}, {"maintenance": [item]})
    assert caught.value.path == f"tenants.contoso.targets[0].maintenance{path}"
    assert words in caught.value.message
    assert all(SECRET not in str(p) for p in caught.value.problems)


def test_the_windows_are_bounded_in_count() -> None:
    with pytest.raises(ConfigError) as caught:
        config({"maintenance": [WEEKLY] * (MAX_WINDOWS + 1)})
    assert caught.value.path == "tenants.contoso.maintenance"
    assert str(MAX_WINDOWS) in caught.value.message
    assert (
        len(config({"maintenance": [WEEKLY] * MAX_WINDOWS}).targets[0].maintenance) == MAX_WINDOWS
    )


# --- the series at scrape time ----------------------------------------------------------------


def test_the_series_follow_the_clock_not_the_load() -> None:
    """One loaded configuration, asked at three moments: before, in and after its window."""
    loaded = config({"maintenance": [WEEKLY]}, {"maintenance": [ONE_OFF]})
    scheduled = [(t.key, t.maintenance) for t in loaded.targets]
    mail, mx2 = ("contoso", "mail.contoso.test"), ("contoso", "mx2.contoso.test")
    assert status(scheduled, utc(2026, 12, 5, 21, 0)) == {mail: None, mx2: None}
    assert status(scheduled, utc(2026, 12, 5, 23, 0)) == {
        mail: utc(2026, 12, 6, 2, 0),
        mx2: utc(2026, 12, 6, 2, 0),
    }
    assert status(scheduled, utc(2026, 12, 24, 20, 0)) == {mail: utc(2026, 12, 25, 8, 0), mx2: None}
    text = (
        TextRenderer()
        .render([], maintenance_samples(status(scheduled, utc(2026, 12, 24, 20, 0))))
        .decode()
    )
    samples = {
        (s.name, s.labels["target"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples == {
        ("tlsprobe_maintenance_active", "mail.contoso.test"): 1.0,
        ("tlsprobe_maintenance_active", "mx2.contoso.test"): 0.0,
        ("tlsprobe_maintenance_window_end_timestamp_seconds", "mail.contoso.test"): utc(
            2026, 12, 25, 8, 0
        ),
    }


def test_the_series_render_as_prometheus_client_renders_them() -> None:
    found = {("contoso", 'a"b\\c'): 1_800_000_000.0, ("", "loose"): None}
    text = TextRenderer().render([], maintenance_samples(found)).decode()
    registry = CollectorRegistry()
    registry.register(collector.TableCollector(list, extra=lambda: maintenance_samples(found)))
    reference = generate_latest(registry).decode()
    assert parsed(text) == parsed(reference) and families(text) == families(reference)
    assert len(parsed(text)) == 3


# --- the status page --------------------------------------------------------------------------


def test_the_status_page_marks_rows_in_a_window_when_it_opens(
    pki: Hierarchy, trust: TrustStore
) -> None:
    fleet = status_states(pki, trust, 2)
    page = StatusPage()
    now = time.time()
    before = page.render(lambda: fleet, now, started_at=0.0).decode()
    assert "maintenance until" not in before
    end = utc(2026, 12, 25, 8, 0)
    during = page.render(
        lambda: fleet,
        now + PAGE_TTL,
        started_at=0.0,
        maintenance=lambda: {("contoso", "relay1"): end},
    ).decode()
    rows = [row for row in during.split("<tr>") if "relay" in row]
    marked = [row for row in rows if "maintenance until 2026-12-25 08:00:00 UTC" in row]
    assert len(rows) == 2 and len(marked) == 1 and "relay1" in marked[0]

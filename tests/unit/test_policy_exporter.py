"""The exporter's DNS policy settings and their history: config keys, change records, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsprobe.exporter.config import ConfigError, parse_config
from tlsprobe.exporter.history import policies as policyhistory
from tlsprobe.exporter.history.policies import PolicyHistory


def targets(*entries: dict[str, object]) -> list[tuple[bool, str | None]]:
    config = parse_config({"targets": list(entries)}, base_dir=Path("."))
    return [(t.dane, t.mta_sts_domain) for t in config.targets]


def test_dns_policies_are_on_by_default_for_mx_targets_only() -> None:
    assert targets({"mx": "Contoso.Test."}, {"host": "relay.contoso.test"}) == [
        (True, "contoso.test"),
        (False, None),
    ]
    assert targets(
        {"mx": "contoso.test", "dane": False, "mta_sts_domain": False},
        {"host": "relay.contoso.test", "dane": True, "mta_sts_domain": "contoso.test"},
    ) == [(False, None), (True, "contoso.test")]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"host": "a.test", "dane": "yes"}, "targets[0].dane"),
        ({"host": "a.test", "mta_sts_domain": "not a domain!"}, "targets[0].mta_sts_domain"),
    ],
)
def test_bad_values_name_the_key(entry: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"targets": [entry]}, base_dir=Path("."))
    assert key in str(caught.value)


def test_history_records_changes_not_sightings(tmp_path: Path) -> None:
    path = tmp_path / policyhistory.POLICY_HISTORY_FILE
    history = PolicyHistory(path)
    owner = "_25._tcp.mx1.contoso.test"
    assert not history.observe("tlsa", owner, "3 1 1 aa", 1.0)  # first sighting
    assert not history.observe("tlsa", owner, "3 1 1 aa", 2.0)
    assert history.observe("tlsa", owner, "3 1 1 bb", 3.0)
    assert not history.observe("mta_sts", "contoso.test", "id=1", 4.0)
    assert history.observe("mta_sts", "contoso.test", "id=2", 5.0)
    history.close()
    changes = policyhistory.changes_for(path, "MX1.contoso.test")
    assert [(c.kind, c.old, c.new) for c in changes] == [
        ("tlsa", "3 1 1 aa", "3 1 1 bb"),
        ("mta_sts", "id=1", "id=2"),
    ]
    assert policyhistory.changes_for(path, "other.test") == []
    text = policyhistory.format_changes(changes)
    assert "was 3 1 1 aa" in text and "now id=2" in text


def test_history_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policyhistory, "MAX_ROWS", 5)
    history = PolicyHistory(tmp_path / "h.sqlite")
    for n in range(20):
        history.observe("tlsa", "_25._tcp.a.test", str(n), float(n))
    history.close()
    changes = policyhistory.changes_for(tmp_path / "h.sqlite", "a.test")
    assert [c.new for c in changes] == ["15", "16", "17", "18", "19"]


def test_one_hostile_subject_keeps_a_bounded_history_and_evicts_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policyhistory, "MAX_ROWS", 50)
    monkeypatch.setattr(policyhistory, "MAX_ROWS_PER_SUBJECT", 20, raising=False)
    path = tmp_path / "h.sqlite"
    history = PolicyHistory(path)
    history.observe("mta_sts", "contoso.test", "id=1", 0.0)
    assert history.observe("mta_sts", "contoso.test", "id=2", 1.0)
    hostile = "_25._tcp.mx.hostile.test"
    # 1,300 records of 73 characters: about 95 KB a value, changing every cycle.
    value = ""
    for n in range(120):
        value = " | ".join(f"3 1 1 {n:04x}{i:060x}" for i in range(1300))
        history.observe("tlsa", hostile, value, 2.0 + n)
    history.close()
    assert [c.new for c in policyhistory.changes_for(path, "mx.contoso.test")] == ["id=2"]
    kept = policyhistory.changes_for(path, "mx.hostile.test")
    assert len(kept) == 20
    limit = 2048 + 100  # MAX_VALUE_CHARS and the length-and-digest tail
    assert all(len(c.old) <= limit and len(c.new) <= limit for c in kept)
    # Cut values still tell the changes apart: each kept change is a real one.
    assert all(c.old != c.new for c in kept)
    assert f"({len(value)} characters, sha256 " in kept[-1].new


def test_over_the_byte_cap_the_largest_subject_gives_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policyhistory, "MAX_BYTES", 40_000, raising=False)
    path = tmp_path / "h.sqlite"
    history = PolicyHistory(path)
    history.observe("mta_sts", "contoso.test", "id=1", 0.0)
    history.observe("mta_sts", "contoso.test", "id=2", 1.0)
    for n in range(60):
        history.observe("tlsa", "_25._tcp.mx.big.test", f"{n:x}" * 2000, 2.0 + n)
    history.close()
    assert [c.new for c in policyhistory.changes_for(path, "mx.contoso.test")] == ["id=2"]
    big = policyhistory.changes_for(path, "mx.big.test")
    assert 0 < len(big) < 59
    assert sum(len(c.old) + len(c.new) for c in big) <= 40_000
    assert big[-1].at == 61.0  # the newest survive


def test_a_change_does_not_read_every_value_kept(tmp_path: Path) -> None:
    """The caps are kept by counting in memory: after the first change, recording one reads
    no statement over all of `policy_change` (at the 16 MiB cap that read took 30 ms of the
    probing loop for every change). The file read again on open gives the same evictions."""
    path = tmp_path / "h.sqlite"
    history = PolicyHistory(path)
    for n in range(30):
        history.observe("tlsa", f"_25._tcp.mx{n % 3}.contoso.test", str(n), float(n))
    statements: list[str] = []
    history._conn.set_trace_callback(statements.append)
    for n in range(30, 40):
        history.observe("tlsa", f"_25._tcp.mx{n % 3}.contoso.test", str(n), float(n))
    history.close()
    scans = [s for s in statements if "FROM policy_change ORDER BY id" in s]
    assert scans == [], scans
    assert len(policyhistory.changes_for(path, "mx0.contoso.test")) == 13


def test_the_caps_hold_across_reopening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policyhistory, "MAX_ROWS", 10)
    path = tmp_path / "h.sqlite"
    for run in range(3):
        history = PolicyHistory(path)
        for n in range(8):
            history.observe("tlsa", f"_25._tcp.mx{n % 2}.a.test", f"{run}-{n}", run * 10.0 + n)
        history.close()
    kept = policyhistory.changes_for(path, "mx0.a.test") + policyhistory.changes_for(
        path, "mx1.a.test"
    )
    assert len(kept) == 10
    assert max(c.at for c in kept) == 27.0

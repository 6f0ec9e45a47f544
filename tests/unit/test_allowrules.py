"""The `/probe` allowlist is parsed once, with the configuration, not on every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsprobe.exporter.config import allowrules, parse_config
from tlsprobe.exporter.config.allowrules import Rule
from tlsprobe.exporter.web import allowlist


def test_the_configuration_carries_the_parsed_rules() -> None:
    config = parse_config(
        {
            "web": {"probe_allowlist": ["192.0.2.0/24", "[2001:db8::1]:2525", "*.Example.NET"]},
            "targets": [{"host": "a.example"}],
        },
        base_dir=Path("."),
    )
    assert [(str(r.network), r.name, r.wildcard, r.port) for r in config.web.probe_rules] == [
        ("192.0.2.0/24", None, False, None),
        ("2001:db8::1/128", None, False, 2525),
        ("None", "example.net", True, None),
    ]
    assert all(isinstance(r, Rule) for r in config.web.probe_rules)


async def test_requests_do_not_parse_the_entries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(
        {"web": {"probe_allowlist": ["127.0.0.0/8"]}, "targets": [{"host": "a.example"}]},
        base_dir=Path("."),
    )

    def refuse(entry: str) -> Rule:
        raise AssertionError(f"allowlist entry {entry!r} parsed again during a request")

    monkeypatch.setattr(allowrules, "parse_rule", refuse)
    monkeypatch.setattr(allowlist, "parse_rule", refuse)
    for _ in range(3):
        target = await allowlist.check_adhoc("127.0.0.7:25", config, resolver=None)
        assert (target.host, target.port) == ("127.0.0.7", 25)
    with pytest.raises(allowlist.AllowlistError, match=r"not in web\.probe_allowlist"):
        await allowlist.check_adhoc("127.0.0.7:2525", config, resolver=None)

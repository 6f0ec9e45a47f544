"""No configuration error echoes a value: a secret put in any value, key, alias or tag of the
main configuration never appears in any problem `load_config` reports, nor in validate-config's
output. A canary `relay: 'u:PASSWORD@host'` was echoed whole.

Every scalar of a full configuration (receiver, senders and their canary included) is replaced in
turn by malformed values that carry the secret, every mapping gets the secret as an unknown key,
and the YAML text gets it as an alias, a tag and a duplicate key. A file's path is the one thing
shown (it names the file the key points at), so file keys are not part of the sweep; and a
valid tenant name is the tenant's identity (in every key path below it and in the `tenant`
label), so `tenants:` gets no unknown key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tlsprobe.cli.main import main
from tlsprobe.exporter.config import ConfigError, load_config

SECRET = "Zq9xS3cretPw"
FILE_KEYS = {
    "state_dir",
    "ca_file",
    "config_file",
    "password_file",
    "tls_cert_file",
    "tls_key_file",
}
BASE: dict[str, Any] = {
    "web": {"listen": ":9825", "probe_allowlist": ["10.0.0.0/8"], "max_connections": 512},
    "dns": {"nameservers": ["127.0.0.1"], "timeout": "5s", "port": 53},
    "defaults": {"interval": "5m", "timeout": "30s", "ehlo_name": "probe.example", "retries": 2},
    "receiver": {
        "listen": "127.0.0.1:2525",
        "hostname": "receiver.example",
        "recipients": ["c@canary.test"],
        "session_timeout": "60s",
    },
    "tenants": {
        "contoso": {
            "accepted_domains": ["contoso.test"],
            "certificate_domain": "*.contoso.test",
            "networks": ["10.0.0.0/8"],
            "targets": [
                {
                    "host": "mail.contoso.test",
                    "port": 25,
                    "mode": "starttls",
                    "sni": "mail.contoso.test",
                    "expected_certificate": "ab" * 32,
                    "addresses": "all",
                    "warn_days": 21,
                    "mta_sts_domain": "contoso.test",
                }
            ],
            "senders": [
                {
                    "name": "relay-1",
                    "peers": ["127.0.0.1"],
                    "warn_days": 21,
                    "canary": {
                        "relay": "127.0.0.1:2526",
                        "recipient": "c@canary.test",
                        "mail_from": "p@contoso.test",
                        "helo": "h.example",
                        "starttls": True,
                        "interval": "5m",
                    },
                }
            ],
        }
    },
    "targets": [
        {
            "host": "a.example.com",
            "address": "192.0.2.1",
            "dane": False,
            "maintenance": [
                {"days": ["sun"], "start": "02:00", "duration": "2h", "timezone": "Europe/Berlin"},
                {"start": "2026-12-24T18:00", "end": "2026-12-27T08:00", "timezone": "UTC"},
            ],
        }
    ],
}
MALFORMED = [
    SECRET,
    f"u:{SECRET}@host",
    f"{SECRET}:99999",
    f" {SECRET} x",
    f"*.{SECRET}..x",
    f"[{SECRET}]:25",
    f"{SECRET}/99",
    [SECRET],
    {SECRET: SECRET},
]


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in FILE_KEYS:
                yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path


def _mappings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _mappings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _mappings(value, (*path, index))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _documents() -> Iterator[tuple[str, str]]:
    for path in _leaves(BASE):
        for value in MALFORMED:
            document = copy.deepcopy(BASE)
            _at(document, path[:-1])[path[-1]] = value
            yield f"{path}={value!r}", yaml.safe_dump(document)
    for path in _mappings(BASE):
        if path == ("tenants",):
            continue
        document = copy.deepcopy(BASE)
        _at(document, path)[SECRET] = 1
        yield f"{path} unknown key", yaml.safe_dump(document)
    text = yaml.safe_dump(BASE)
    relay = "relay: 127.0.0.1:2526"
    for raw in (f"relay: *{SECRET}", f"relay: !{SECRET}", f"relay: !!{SECRET} x"):
        yield raw, text.replace(relay, raw)
    yield "duplicate key", text.replace(relay, f"{relay}\n        {SECRET}: 1\n        {SECRET}: 2")
    yield "tenant name", text.replace("contoso:", f"'{SECRET} x':", 1)
    yield "tenant key type", text.replace("contoso:", f"[{SECRET}]:", 1)


DOCUMENTS = dict(_documents())


def test_the_sweep_is_broad() -> None:
    assert len(DOCUMENTS) > 300
    assert "('tenants', 'contoso', 'senders', 0, 'canary', 'relay')='u:Zq9xS3cretPw@host'" in (
        DOCUMENTS
    )


def test_the_base_configuration_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(BASE))
    load_config(path)


@pytest.mark.parametrize("case", DOCUMENTS)
def test_no_error_echoes_a_value(tmp_path: Path, case: str) -> None:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(DOCUMENTS[case])
    try:
        load_config(path)
    except ConfigError as exc:
        shown = "\n".join(f"{p.path}: {p.message}" for p in exc.problems)
        assert SECRET not in shown and SECRET[2:10] not in shown, shown


def test_validate_config_prints_no_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(
        DOCUMENTS["('tenants', 'contoso', 'senders', 0, 'canary', 'relay')='u:Zq9xS3cretPw@host'"]
    )
    assert main(["validate-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "canary.relay" in captured.err
    assert SECRET not in captured.err + captured.out

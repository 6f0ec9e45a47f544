"""Configuration mistakes end in one clear error per problem, never a traceback or a secret.

Passwords that reach a YAML error message (an unquoted value starting with `*` or `!`, a
`user password:` key, a secret pasted as a TLS key) must not appear in `validate-config`'s
stderr, the reload answer or the log. Values PyYAML cannot convert (an integer over 4,300
digits, an impossible date) are configuration errors: exit 2, and a reload that reports its
failure in `tlsprobe_config_last_reload_successful`. Every problem of a target is reported, not
only the first; `ca_file: null` on a target is the system store; an unquoted `*.domain` gets a
hint to quote it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import bcrypt
import pytest

from tlsprobe.cli.main import main
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import ConfigError, load_config
from tlsprobe.exporter.config.web import WebConfigError, load_web_config

SECRET = "Zq9xS3cretPw"
HASH = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
TARGET = "targets:\n  - host: mail.example.com\n"

LEAKY_WEB_CONFIGS = {
    "alias": f"basic_auth_users:\n  prometheus: *{SECRET}\n",
    "tag": f"basic_auth_users:\n  prometheus: !{SECRET}\n",
    "password in the key": f"basic_auth_users:\n  prometheus {SECRET}: '{HASH}'\n",
    "secret as a tls key": f"tls_server_config:\n  cert_file: a.pem\n  {SECRET}: x\n",
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", LEAKY_WEB_CONFIGS.values(), ids=list(LEAKY_WEB_CONFIGS))
def test_web_config_errors_never_quote_a_password(
    tmp_path: Path,
    text: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    web = write(tmp_path, "web.yml", text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(web)
    assert SECRET not in str(caught.value)
    config = write(tmp_path, "tlsprobe.yml", f"web:\n  config_file: web.yml\n{TARGET}")
    assert main(["validate-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "web.config_file" in err and SECRET not in err
    exporter = Exporter(load_config(config), config)
    with caplog.at_level(logging.DEBUG):
        answer = asyncio.run(exporter.reload())
    assert answer is not None and SECRET not in answer
    assert SECRET not in caplog.text and not exporter.reload_successful


UNREADABLE = {
    "integer of 5,000 digits": f"targets:\n  - host: mail.example.com\n    port: {'9' * 5000}\n",
    "impossible date": "targets:\n  - host: mail.example.com\n    name: 2024-02-30\n",
}


@pytest.mark.parametrize("text", UNREADABLE.values(), ids=list(UNREADABLE))
def test_values_yaml_cannot_convert_are_configuration_errors(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "tlsprobe.yml", text)
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "Traceback" not in err
    good = write(tmp_path, "good.yml", TARGET)
    exporter = Exporter(load_config(good), path)
    assert asyncio.run(exporter.reload()) is not None
    assert not exporter.reload_successful


def test_a_failed_sighup_reload_leaves_no_task_exception(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yml", TARGET)
    broken = write(tmp_path, "broken.yml", UNREADABLE["impossible date"])

    async def sighup() -> BaseException | None:
        exporter = Exporter(load_config(good), broken)
        exporter._reload_in_background()
        (task,) = exporter._reloads
        await asyncio.wait([task])
        return task.exception()

    assert asyncio.run(sighup()) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "defaults:\n  interval: 0s\ntargets:\n  - host: mail.example.com\n"
            "    port: 0\n    interval: 0s\n",
            {"defaults.interval", "targets[0].port", "targets[0].interval"},
        ),
        (
            "targets:\n  - host: mail.example.com\n    address: 999.1.1.1\n    port: 70000\n",
            {"targets[0].port", "targets[0].address"},
        ),
    ],
)
def test_every_problem_of_a_target_is_reported(
    tmp_path: Path, text: str, expected: set[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "tlsprobe.yml", text))
    assert {problem.path for problem in caught.value.problems} == expected


def test_ca_file_null_on_a_target_is_the_system_store(tmp_path: Path, ca_file: Path) -> None:
    text = (
        f"defaults:\n  ca_file: {ca_file}\ntargets:\n"
        "  - {host: a.example.com, ca_file: null}\n  - {host: b.example.com}\n"
    )
    config = load_config(write(tmp_path, "tlsprobe.yml", text))
    by_host = {t.host: t.ca_file for t in config.targets}
    assert by_host == {"a.example.com": None, "b.example.com": ca_file}


def test_an_unquoted_wildcard_connector_name_gets_a_hint(tmp_path: Path) -> None:
    text = "tenants:\n  c:\n    certificate_domain: *.contoso.com\n    targets: [{host: a.test}]\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "tlsprobe.yml", text))
    assert 'must be quoted, e.g. "*.contoso.com"' in str(caught.value)

"""One rule for host names, applied alike by every module that accepts one.

The configuration (targets, domains, the listen address, the `/probe` allowlist), the allowlist's
request check, the connector pattern and the SMTP client's EHLO argument used to carry four
host-label patterns that disagreed (upper case, digit-only top labels, single labels).  These
tests feed the same names to each of them and expect the same answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tlsprobe.exporter.config import ConfigError, parse_config
from tlsprobe.exporter.web.allowlist import AllowlistError, check_adhoc
from tlsprobe.model import IMPLICIT_TLS_PORT, Mode
from tlsprobe.probe import names
from tlsprobe.probe.smtp.client import SmtpClient
from tlsprobe.probe.x509 import o365

VALID = [
    "mail.example.net",
    "MX1.Example.NET",
    "a-b.example",
    "xn--bcher-kva.example",
    "b\u00fccher.example",
]
INVALID = [
    "",
    "a..b",
    "-bad.example",
    "bad-.example",
    "under_score.example",
    "10.0.0.300",
    "x" * 64 + ".example",
    ".".join(["abcdefghi"] * 30),
    "a b.example",
    "mail.example.123",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_pass_every_gate(name: str) -> None:
    normalized = names.normalize_name(name)
    assert names.is_host_name(normalized)
    assert str(o365.ConnectorPattern.parse(name)) == normalized
    assert config_host(name) == normalized
    assert names.ehlo_name(name) == normalized
    SmtpClient(normalized)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_fail_every_gate(name: str) -> None:
    assert not names.is_host_name(names.normalize_name(name))
    with pytest.raises(o365.ConnectorPatternError):
        o365.ConnectorPattern.parse(name)
    with pytest.raises(ConfigError):
        config_host(name)
    with pytest.raises(names.EhloNameError):
        names.ehlo_name(name)
    with pytest.raises(ValueError, match="ehlo_name"):
        SmtpClient(name)


def config_host(name: str) -> str:
    config = parse_config({"targets": [{"host": name}]}, base_dir=Path("."))
    host = config.targets[0].host
    assert host is not None
    return host


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
        (" Probe.Example. ", "probe.example"),
    ],
)
def test_ehlo_name_is_normalized_once(text: str, sent: str) -> None:
    assert names.ehlo_name(text) == sent
    SmtpClient(sent)


@pytest.mark.parametrize("text", ["[2001:db8::1]", "[IPv6:192.0.2.1]", "[999.1.1.1]", "192.0.2.1"])
def test_address_literals_are_written_as_rfc_5321_says(text: str) -> None:
    with pytest.raises(names.EhloNameError):
        names.ehlo_name(text)


def test_the_smtp_client_takes_names_as_given() -> None:
    # Normalizing is the caller's job: the client refuses what would change on the way.
    for raw in ("trailing.dot.", "b\u00fccher.example"):
        with pytest.raises(ValueError, match="ehlo_name"):
            SmtpClient(raw)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("192.0.2.1", 25, "192.0.2.1:25"),
        ("2001:db8::1", 465, "[2001:db8::1]:465"),
        ("mx.example", 587, "mx.example:587"),
    ],
)
def test_host_port(host: str, port: int, text: str) -> None:
    assert names.host_port(host, port) == text


def test_port_465_alone_means_implicit_tls() -> None:
    assert Mode.for_port(IMPLICIT_TLS_PORT) is Mode.IMPLICIT
    assert {Mode.for_port(p) for p in (25, 587, 2525, 4650)} == {Mode.STARTTLS}
    config = parse_config(
        {"targets": [{"host": "a.example", "port": 465}, {"host": "b.example", "port": 587}]},
        base_dir=Path("."),
    )
    assert [t.mode for t in config.targets] == [Mode.IMPLICIT, Mode.STARTTLS]


def test_show_quotes_and_bounds() -> None:
    assert names.show("a\nb") == "'a\\x0ab'"
    assert len(names.show("x" * 500)) == 82
    assert names.show(5) == "'5'"


@pytest.mark.parametrize("name", [n for n in INVALID if n and " " not in n])
async def test_invalid_names_are_refused_by_the_probe_allowlist(name: str) -> None:
    config = parse_config(
        {"web": {"probe_allowlist": ["*.example"]}, "targets": [{"host": "a.example"}]},
        base_dir=Path("."),
    )
    with pytest.raises(AllowlistError, match="is not a host name or IP address"):
        await check_adhoc(name, config, resolver=None)

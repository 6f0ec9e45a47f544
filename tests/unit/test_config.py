"""The configuration layer: strict validation with path-named errors, resolution, sharding.

Most rules are pinned by one table of (YAML, exact error string): the message format is the
contract that `tlsprobe validate-config` and the reload endpoint show to administrators.
"""

from __future__ import annotations

import dataclasses
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsprobe.exporter import config as config_module
from tlsprobe.exporter.config import (
    Config,
    ConfigError,
    DnsSettings,
    TargetConfig,
    TenantConfig,
    WebSettings,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    shard_of,
)
from tlsprobe.exporter.config import schema as config_schema
from tlsprobe.exporter.web.allowlist import parse_rule
from tlsprobe.model import Mode, Policy

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "tlsprobe.example.yml"
ONE = "targets:\n  - host: mail.example.com\n"
FP = "AB:" * 31 + "AB"
TARGET_KEYS = (
    "expected one of: address, addresses, ca_file, certificate_domain, crit_days, dane, "
    "ehlo_name, expected_certificate, host, hostname_check, interval, labels, mode, "
    "mta_sts_domain, mx, name, networks, "
    "port, retries, sni, timeout, warn_days"
)


def tenant(body: str, name: str = "contoso") -> str:
    """A tenant section with `body` indented under it."""
    indented = "".join(f"    {line}\n" for line in body.splitlines())
    return f"tenants:\n  {name}:\n{indented}"


def target(body: str) -> str:
    """A top-level target list with one target whose keys are `body`."""
    lines = body.splitlines()
    return "targets:\n  - " + lines[0] + "\n" + "".join(f"    {x}\n" for x in lines[1:])


ERRORS: list[Any] = [  # (text, expected) pairs, one a pytest.param
    # file level
    ("", "{file}: the configuration is empty"),
    ("- a\n- b\n", "{file}: must be a mapping at the top level, got list"),
    ("just text\n", "{file}: must be a mapping at the top level, got string"),
    (
        "targets: [\n",
        "{file}: YAML error at line 2, column 1: expected the node content, but found "
        "'<stream end>'",
    ),
    (
        "targets: []\ntargets: []\n",
        "{file}: YAML error at line 2, column 1: duplicate key",
    ),
    ("a: b: c\n", "{file}: YAML error at line 1, column 5: mapping values are not allowed here"),
    (
        "x: !!python/object/apply:os.system ['true']\n",
        "{file}: YAML error at line 1, column 4: could not determine a constructor for the tag "
        "(not shown)",
    ),
    # Seconds of YAML parsing: in the whole suite only.
    pytest.param("[" * 5000, "{file}: YAML nesting is too deep", marks=pytest.mark.slow),
    # top level
    (
        "foo: 1\n" + ONE,
        "key number 1 at the top level is unknown (expected one of: defaults, dns, receiver, "
        "state_dir, targets, tenants, web)",
    ),
    ("{}\n", "tenants: no targets configured"),
    ("tenants: {}\n", "tenants: no targets configured"),
    ("targets: []\n", "targets: no targets configured"),
    ("tenants:\n  contoso:\n", "tenants: no targets configured"),
    ("targets: {host: mail.example.com}\n", "targets: must be a list, got mapping"),
    ("tenants: [contoso]\n", "tenants: must be a mapping, got list"),
    ("state_dir: 5\n" + ONE, "state_dir: must be a string, got integer"),
    ("state_dir: ''\n" + ONE, "state_dir: must not be empty"),
    ("state_dir: config.yml\n" + ONE, "state_dir: {file} exists and is not a directory"),
    # web
    ("web: [1]\n" + ONE, "web: must be a mapping, got list"),
    (
        "web:\n  lisen: ':1'\n" + ONE,
        "web: key number 1 is unknown (expected one of: config_file, external_url, "
        "header_timeout, idle_timeout, listen, max_concurrent_requests, max_connections, "
        "probe_allowlist, probe_min_interval); did you mean listen?",
    ),
    (
        "web:\n  listen: '9825'\n" + ONE,
        "web.listen: must be HOST:PORT, [IPv6]:PORT or :PORT",
    ),
    ("web:\n  listen: ':70000'\n" + ONE, "web.listen: port must be 1-65535"),
    (
        "web:\n  listen: '::1:9825'\n" + ONE,
        "web.listen: write an IPv6 address in brackets ([::1]:PORT)",
    ),
    (
        "web:\n  listen: '[127.0.0.1]:9825'\n" + ONE,
        "web.listen: must be HOST:PORT, [IPv6]:PORT or :PORT",
    ),
    (
        "web:\n  probe_allowlist: ['*']\n" + ONE,
        "web.probe_allowlist[0]: a bare '*' would allow probing any host; list hosts or domains",
    ),
    (
        "web:\n  probe_allowlist: [ok.example, 10.0.0.0/33]\n" + ONE,
        "web.probe_allowlist[1]: is not an IP network",
    ),
    (
        "web:\n  probe_allowlist: ['a b']\n" + ONE,
        "web.probe_allowlist[0]: is not a CIDR network, or HOST[:PORT] where HOST is a host "
        "name, '*.domain' or IP address",
    ),
    (
        "web:\n  probe_allowlist: ['mx.example.net:99999']\n" + ONE,
        "web.probe_allowlist[0]: is not a CIDR network, or HOST[:PORT] where HOST is a host "
        "name, '*.domain' or IP address",
    ),
    (
        "web:\n  probe_allowlist: ['::/0']\n" + ONE,
        "web.probe_allowlist[0]: would allow probing any address",
    ),
    ("web:\n  max_concurrent_requests: 0\n" + ONE, "web.max_concurrent_requests: must be 1-10000"),
    (
        "web:\n  config_file: missing.yml\n" + ONE,
        "web.config_file: {dir}/missing.yml: cannot read: No such file or directory",
    ),
    # dns
    (
        "dns:\n  nameservers: [dns.google]\n" + ONE,
        "dns.nameservers[0]: is not an IP address",
    ),
    (
        "dns:\n  nameservers: []\n" + ONE,
        "dns.nameservers: must not be empty (omit it to use the system resolver)",
    ),
    ("dns:\n  timeout: 0\n" + ONE, "dns.timeout: must be greater than 0"),
    ("dns:\n  hosts_file: 5\n" + ONE, "dns.hosts_file: must be a string, got integer"),
    ("dns:\n  hosts_file: ''\n" + ONE, "dns.hosts_file: must be a path, or false to ask DNS only"),
    # A hosts file named in the configuration must be one: a typo, a directory or a device was
    # an empty hosts file, every host it was meant to name unknown reason=dns.
    (
        "dns:\n  hosts_file: missing.hosts\n" + ONE,
        "dns.hosts_file: {dir}/missing.hosts: cannot read: No such file or directory",
    ),
    ("dns:\n  hosts_file: /dev/zero\n" + ONE, "dns.hosts_file: /dev/zero: not a regular file"),
    ("dns:\n  hosts_file: /tmp\n" + ONE, "dns.hosts_file: /tmp: not a regular file"),
    ("dns:\n  port: 0\n" + ONE, "dns.port: must be 1-65535"),
    # defaults
    ("defaults:\n  concurrency: 0\n" + ONE, "defaults.concurrency: must be 1-10000"),
    ("defaults:\n  concurrency: 10001\n" + ONE, "defaults.concurrency: must be 1-10000"),
    (
        "defaults:\n  interval: 5 minutes\n" + ONE,
        "defaults.interval: is not a duration: use a number of seconds or a value like 30s, 5m, "
        "1h30m, 250ms",
    ),
    ("defaults:\n  interval: 500ms\n" + ONE, "defaults.interval: must be at least 1s"),
    ("defaults:\n  interval: -5\n" + ONE, "defaults.interval: must not be negative"),
    ("defaults:\n  interval: .inf\n" + ONE, "defaults.interval: must be a finite duration"),
    ("defaults:\n  interval: 400d\n" + ONE, "defaults.interval: must be at most 365d"),
    ("defaults:\n  timeout: 10m\n" + ONE, "defaults.timeout: must be less than interval (5m)"),
    ("defaults:\n  interval: 20s\n" + ONE, "defaults.interval: must be greater than timeout (30s)"),
    ("defaults:\n  timeout: 0s\n" + ONE, "defaults.timeout: must be greater than 0"),
    ("defaults:\n  crit_days: 30\n" + ONE, "defaults.crit_days: must not exceed warn_days (21)"),
    (
        "defaults:\n  warn_days: 3\n" + ONE,
        "defaults.warn_days: must not be less than crit_days (7)",
    ),
    ("defaults:\n  warn_days: -1\n" + ONE, "defaults.warn_days: must be 0-3650"),
    (
        "defaults:\n  warn_days: soon\n" + ONE,
        "defaults.warn_days: must be a number of days, got string",
    ),
    ("defaults:\n  retries: 11\n" + ONE, "defaults.retries: must be 0-10"),
    (
        "defaults:\n  addresses: some\n" + ONE,
        "defaults.addresses: must be one of: all, one",
    ),
    (
        "defaults:\n  ca_file: nope.pem\n" + ONE,
        "defaults.ca_file: {dir}/nope.pem: cannot read: No such file or directory",
    ),
    ("defaults:\n  port: yes\n" + ONE, "defaults.port: must be an integer, got boolean"),
    ("defaults:\n  port: 25.0\n" + ONE, "defaults.port: must be an integer, got number"),
    (
        "defaults:\n  ehlo_name: bad name\n" + ONE,
        "defaults.ehlo_name: is not a host name or address literal",
    ),
    (
        "defaults:\n  ehlo_name: '[::1]'\n" + ONE,
        "defaults.ehlo_name: write [192.0.2.1] or [IPv6:2001:db8::1]",
    ),
    (
        "defaults:\n  mode: implicit\n" + ONE,
        "defaults: key number 1 is unknown (expected one of: addresses, ca_file, concurrency, "
        "crit_days, ehlo_name, interval, port, retries, timeout, warn_days)",
    ),
    # tenants
    (
        "tenants:\n  'bad name': {}\n",
        "tenants: tenant number 1: name must be 1-100 letters, digits, '_', '.' or '-'",
    ),
    (
        "tenants:\n  123: {}\n",
        "tenants: tenant number 1: name must be a string (quote it), got integer",
    ),
    (
        "tenants:\n  no: {}\n",
        "tenants: tenant number 1: name must be a string (quote it), got boolean",
    ),
    ("tenants:\n  contoso: [a]\n", "tenants.contoso: must be a mapping, got list"),
    (
        tenant("accepted_domain: [contoso.com]"),
        "tenants.contoso: key number 1 is unknown (expected one of: accepted_domains, "
        "certificate_domain, exchange_online, inbound_connector, labels, networks, "
        "outbound_connectors, senders, targets); did you mean accepted_domains?",
    ),
    (
        tenant("accepted_domains: contoso.com\ntargets: [{host: a.contoso.com}]"),
        "tenants.contoso.accepted_domains: must be a list, got string",
    ),
    (
        tenant("accepted_domains: [contoso..com]\ntargets: [{host: a.contoso.com}]"),
        "tenants.contoso.accepted_domains[0]: is not a valid domain name",
    ),
    (
        tenant("accepted_domains: ['*.contoso.com']\ntargets: [{host: a.contoso.com}]"),
        "tenants.contoso.accepted_domains[0]: is not a valid domain name",
    ),
    (
        tenant("certificate_domain: 'mail.*.contoso.com'\ntargets: [{host: a.contoso.com}]"),
        "tenants.contoso.certificate_domain: embeds a wildcard; Exchange Online allows it only "
        "as the leading label (for example '*.contoso.com')",
    ),
    (
        tenant(
            "targets:\n  - host: a.contoso.com\n  - host: b.contoso.com\n"
            "  - host: c.contoso.com\n    port: 70000"
        ),
        "tenants.contoso.targets[2].port: must be 1-65535",
    ),
    (
        tenant("targets:\n  - host: a.contoso.com\n    crit_days: 30"),
        "tenants.contoso.targets[0].crit_days: must not exceed warn_days (21)",
    ),
    # targets
    (
        target("hots: mail.example.com"),
        "targets[0]: key number 1 is unknown (expected one of: address, addresses, ca_file, "
        "certificate_domain, crit_days, dane, ehlo_name, expected_certificate, host, "
        "hostname_check, interval, labels, mode, mta_sts_domain, mx, name, networks, port, "
        "retries, sni, timeout, warn_days); did you mean host?",
    ),
    ("targets: [mail.example.com]\n", "targets[0]: must be a mapping, got string"),
    (
        target("host: a.example.com\nmx: example.com"),
        "targets[0]: give either host or mx, not both",
    ),
    (
        target("port: 25"),
        "targets[0]: needs host (a server) or mx (a mail domain whose MX hosts to probe)",
    ),
    (
        "targets:\n  - host: a.example.com\n  - host: A.Example.com.\n",
        "targets[1]: duplicate target name (also targets[0]); give each target its own name",
    ),
    (
        "targets:\n  - {name: relay, host: a.example.com}\n  - {name: relay, mx: example.com}\n",
        "targets[1].name: duplicate target name (also targets[0]); give each target its own name",
    ),
    (target('host: "mail\\a.example.com"'), "targets[0].host: must not contain control characters"),
    (
        target('name: "relay\\x1b[31m"\nhost: a.example.com'),
        "targets[0].name: must not contain control characters",
    ),
    (
        target("host: mail_1.example.com"),
        "targets[0].host: is not a valid host name or IP address",
    ),
    (
        target("host: 192.0.2.300"),
        "targets[0].host: is not a valid host name or IP address",
    ),
    (target("host: [mail.example.com]"), "targets[0].host: must be a string, got list"),
    (
        target("mx: -bad.example.com"),
        "targets[0].mx: is not a valid domain name",
    ),
    (
        target("host: a.example.com\naddress: relay.example.com"),
        "targets[0].address: is not an IP address",
    ),
    (
        target("mx: example.com\naddress: 192.0.2.1"),
        "targets[0].address: not allowed with mx (the MX hosts are discovered)",
    ),
    (target("host: a.example.com\nport: yes"), "targets[0].port: must be an integer, got boolean"),
    (target("host: a.example.com\nport: 0"), "targets[0].port: must be 1-65535"),
    (
        target("host: a.example.com\nmode: tls"),
        "targets[0].mode: must be one of: starttls, implicit",
    ),
    (
        target("host: a.example.com\nsni: 192.0.2.1"),
        "targets[0].sni: an IP address cannot be sent as SNI; give a host name or false",
    ),
    (
        target("host: a.example.com\nsni: true"),
        "targets[0].sni: must be a server name, or false to send none; got boolean",
    ),
    (
        target("host: a.example.com\nexpected_certificate: 'AB:CD'"),
        "targets[0].expected_certificate: must be a SHA-256 fingerprint (64 hex digits, colons "
        "allowed) or Exchange's '<I>issuer<S>subject'",
    ),
    (
        target(f"host: a.example.com\nexpected_certificate: ['{FP}', 12]"),
        "targets[0].expected_certificate[1]: must be a string, got integer",
    ),
    (
        target("host: a.example.com\nexpected_certificate: ['<I>CN=R3<S>']"),
        "targets[0].expected_certificate[0]: must be a SHA-256 fingerprint (64 hex digits, colons "
        "allowed) or Exchange's '<I>issuer<S>subject'",
    ),
    (
        target("host: a.example.com\nexpected_certificate: {a: 1}"),
        "targets[0].expected_certificate: must be a string or a list of strings, got mapping",
    ),
    (
        target("host: a.example.com\ntimeout: 10m"),
        "targets[0].timeout: must be less than interval (5m)",
    ),
    (
        target("host: a.example.com\ninterval: true"),
        "targets[0].interval: must be a duration such as 30s, 5m or 1h30m, or a number of seconds, "
        "got boolean",
    ),
    (
        target("host: a.example.com\ninterval: 2024-01-01"),
        "targets[0].interval: must be a duration such as 30s, 5m or 1h30m, or a number of seconds, "
        "got date",
    ),
    (
        target("host: a.example.com\nname: '  '"),
        "targets[0].name: must be 1-253 characters, not only spaces",
    ),
    (
        target("host: a.example.com\ncertificate_domain: '*.com'"),
        "targets[0].certificate_domain: would accept every certificate under a top-level "
        "domain; use '*.' followed by your own domain",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_invalid_configuration_is_named_by_path(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == expected.format(file=path, dir=tmp_path)


def test_error_table_is_broad() -> None:
    assert len(ERRORS) >= 30


def test_error_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(tenant("targets:\n  - {host: a.contoso.com, port: 0}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == "tenants.contoso.targets[0].port"
    assert caught.value.message == "must be 1-65535"


def test_independent_problems_are_all_collected(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "web: {listen: nowhere}\n"
        "defaults: {retries: -1}\n"
        "targets:\n"
        "  - {host: a.example.com, port: 0}\n"
        "  - {host: b.example.com}\n"
        "  - {mx: 'bad domain'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [
        "web.listen: must be HOST:PORT, [IPv6]:PORT or :PORT",
        "defaults.retries: must be 0-10",
        "targets[0].port: must be 1-65535",
        "targets[2].mx: is not a valid domain name",
    ]
    assert str(caught.value) == str(caught.value.problems[0])


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigError, match=r"absent\.yml: cannot read: No such file or directory$"):
        load_config(path)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    # Valid YAML that would parse fine: the size alone must stop it.
    path.write_text(ONE + "# " + "x" * config_module.MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: larger than 1 MiB"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"targets:\n  - host: m\xe4il.example.com\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (line 2)"


def test_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    path.write_text("defaults: {ca_file: junk.pem}\n" + ONE)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == "defaults.ca_file"
    assert caught.value.message.startswith(f"{tmp_path}/junk.pem: no PEM certificate")


def test_parse_config_rejects_non_mappings_without_a_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(["a"], base_dir=Path("/"))
    assert str(caught.value) == "must be a mapping at the top level, got list"
    assert caught.value.path == ""


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "targets:\n"
        "  - &base {host: a.example.com, port: 587, interval: 1m}\n"
        "  - {<<: *base, name: b, port: 2525}\n"
    )
    cfg = load_config(path)
    assert [(t.name, t.port, t.interval) for t in cfg.targets] == [
        ("a.example.com", 587, 60.0),
        ("b", 2525, 60.0),
    ]


# --- a full configuration, every field ------------------------------------------------------


def test_full_configuration_round_trip(tmp_path: Path, ca_file: Path) -> None:
    (tmp_path / "pki").mkdir()
    shutil.copy(ca_file, tmp_path / "pki" / "root.pem")
    (tmp_path / "web-config.yml").write_text("basic_auth_users: {}\n")
    path = tmp_path / "tlsprobe.yml"
    path.write_text(
        f"""
state_dir: data
web:
  listen: "[::1]:9900"
  config_file: web-config.yml
  probe_allowlist: ["*.Contoso.com", "Mail.Example.NET.", "192.0.2.7", "2001:db8::/32",
                    "mx.example.net:2525", "[2001:DB8::1]:25", "192.0.2.9:587"]
  max_concurrent_requests: 4
dns:
  nameservers: ["127.0.0.1", "::1"]
  port: 5353
  timeout: 2s
defaults:
  interval: 10m
  timeout: 45s
  warn_days: 30
  crit_days: 10
  concurrency: 7
  retries: 3
  ca_file: pki/root.pem
  addresses: one
  ehlo_name: probe.example.org
  port: 587
tenants:
  contoso:
    accepted_domains: [Contoso.COM, contoso.net, contoso.com]
    certificate_domain: "*.Contoso.com"
    targets:
      - name: relay
        host: Relay.Contoso.com.
        port: 25
        mode: starttls
        address: 192.0.2.10
        sni: smtp.contoso.com
        ehlo_name: "[IPv6:2001:db8::5]"
        expected_certificate: ["{FP}", "<I>CN=R3, O=Let's Encrypt, C=US<S>CN=relay.contoso.com"]
        addresses: all
        interval: 1m
        timeout: 10s
        retries: 0
        warn_days: 14
        crit_days: 2.5
        ca_file: {ca_file}
        certificate_domain: relay.contoso.com
      - host: smtps.contoso.com
        port: 465
      - host: 198.51.100.1
        port: 465
        mode: starttls
      - mx: contoso.com
        sni: false
  fabrikam:
    targets:
      - host: bücher.fabrikam.example
        sni: false
targets:
  - name: outside
    mx: example.com
    expected_certificate: "{FP.lower().replace(":", "")}"
"""
    )
    cfg = load_config(path)

    contoso = TenantConfig("contoso", ("contoso.com", "contoso.net"), "*.contoso.com")
    fabrikam = TenantConfig("fabrikam", (), None)
    fp = "ab" * 32
    base_policy = Policy("*.contoso.com", ("contoso.com", "contoso.net"), 30.0, 10.0, (), True)
    relay_policy = dataclasses.replace(base_policy, hostname_required=False)
    common: dict[str, Any] = {
        "port": 587,
        "mode": Mode.STARTTLS,
        "address": None,
        "ehlo_name": "probe.example.org",
        "addresses": "one",
        "interval": 600.0,
        "timeout": 45.0,
        "retries": 3,
        "ca_file": tmp_path / "pki" / "root.pem",
        "policy": base_policy,
    }
    expected = Config(
        source=path,
        state_dir=tmp_path / "data",
        web=WebSettings(
            listen_host="::1",
            listen_port=9900,
            config_file=tmp_path / "web-config.yml",
            probe_allowlist=(
                "*.contoso.com",
                "mail.example.net",
                "192.0.2.7/32",
                "2001:db8::/32",
                "mx.example.net:2525",
                "[2001:db8::1]:25",
                "192.0.2.9:587",
            ),
            max_concurrent_requests=4,
        ),
        dns=DnsSettings(nameservers=("127.0.0.1", "::1"), port=5353, timeout=2.0),
        concurrency=7,
        defaults_port=587,
        defaults_interval=600.0,
        defaults_timeout=45.0,
        defaults_ca_file=tmp_path / "pki" / "root.pem",
        tenants=(contoso, fabrikam),
        targets=(
            TargetConfig(
                tenant="contoso",
                name="relay",
                host="relay.contoso.com",
                mx=None,
                port=25,
                mode=Mode.STARTTLS,
                address="192.0.2.10",
                sni="smtp.contoso.com",
                ehlo_name="[IPv6:2001:db8::5]",
                addresses="all",
                interval=60.0,
                timeout=10.0,
                retries=0,
                ca_file=ca_file,
                policy=Policy(
                    certificate_domain="relay.contoso.com",
                    accepted_domains=("contoso.com", "contoso.net"),
                    warn_days=14.0,
                    crit_days=2.5,
                    expected=(fp, "<I>CN=R3, O=Let's Encrypt, C=US<S>CN=relay.contoso.com"),
                    fixed_expiry_days=True,
                    hostname_required=False,  # a relay no MX or outbound connector names
                ),
            ),
            TargetConfig(
                **{
                    **common,
                    "port": 465,
                    "mode": Mode.IMPLICIT,  # implied by port 465
                    "policy": relay_policy,
                },
                tenant="contoso",
                name="smtps.contoso.com",
                host="smtps.contoso.com",
                mx=None,
                sni="smtps.contoso.com",
            ),
            TargetConfig(
                **{**common, "port": 465, "policy": relay_policy},  # explicit mode wins
                tenant="contoso",
                name="198.51.100.1",
                host="198.51.100.1",
                mx=None,
                sni=None,  # never SNI for an IP literal
            ),
            TargetConfig(
                **common,
                tenant="contoso",
                name="contoso.com",
                host=None,
                mx="contoso.com",
                sni=None,
                send_sni=False,
                dane=True,  # DNS policies are on by default for mx targets
                mta_sts_domain="contoso.com",
            ),
            TargetConfig(
                **{**common, "policy": Policy(None, (), 30.0, 10.0, (), True)},
                tenant="fabrikam",
                name="xn--bcher-kva.fabrikam.example",
                host="xn--bcher-kva.fabrikam.example",
                mx=None,
                sni=None,
                send_sni=False,
            ),
            TargetConfig(
                **{**common, "policy": Policy(None, (), 30.0, 10.0, (fp,), True)},
                tenant="",
                name="outside",
                host=None,
                mx="example.com",
                sni=None,
                dane=True,
                mta_sts_domain="example.com",
            ),
        ),
    )
    assert cfg == expected
    # The HTTP server's allowlist reads these normalized entries back.
    assert [parse_rule(e).port for e in cfg.web.probe_allowlist] == [None] * 4 + [2525, 25, 587]
    assert [t.key for t in cfg.targets][-1] == ("", "outside")


def test_minimal_configuration_uses_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(ONE)
    cfg = load_config(path)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.web == WebSettings("", 9825, None, (), 16)
    assert cfg.dns == DnsSettings((), 53, 5.0)
    assert cfg.concurrency == 50
    assert (cfg.defaults_port, cfg.defaults_interval, cfg.defaults_timeout) == (25, 300.0, 30.0)
    assert cfg.defaults_ca_file is None
    assert cfg.tenants == ()
    (only,) = cfg.targets
    assert only == TargetConfig(
        tenant="",
        name="mail.example.com",
        host="mail.example.com",
        mx=None,
        port=25,
        mode=Mode.STARTTLS,
        address=None,
        sni="mail.example.com",
        ehlo_name=None,
        addresses="all",
        interval=300.0,
        timeout=30.0,
        retries=2,
        ca_file=None,
        policy=Policy(None, (), 21.0, 7.0, ()),
    )


def test_null_values_count_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "web:\ndns:\ndefaults:\n  ca_file: null\ntargets:\n  - host: a.example\n    sni:\n"
    )
    cfg = load_config(path)
    assert cfg.targets[0].sni == "a.example"
    assert cfg.targets[0].ca_file is None


def test_example_configuration_loads_and_covers_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.targets and cfg.tenants
    assert all(t.ca_file is None for t in cfg.targets)
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert set(raw) == set(config_schema.TOP_KEYS)
    assert set(raw["web"]) == set(config_schema.WEB_KEYS)
    assert set(raw["dns"]) == set(config_schema.DNS_KEYS)
    # warn_days/crit_days are shown commented out: setting them in defaults would fix every
    # target's expiry thresholds instead of the lifetime-aware ones.
    assert set(raw["defaults"]) | {"warn_days", "crit_days"} == set(config_schema.DEFAULT_KEYS)
    assert "\n  # warn_days: 21\n" in EXAMPLE.read_text()
    assert "\n  # crit_days: 7\n" in EXAMPLE.read_text()
    fixed = {t.name: t.policy.fixed_expiry_days for t in cfg.targets}
    assert fixed["relay"]  # sets warn_days and crit_days itself
    assert not all(fixed.values())
    tenant_keys = set().union(*(set(t) for t in raw["tenants"].values()))
    assert tenant_keys == set(config_schema.TENANT_KEYS)
    target_keys = set().union(*(set(t) for t in raw["tenants"]["contoso"]["targets"]))
    assert target_keys == set(config_schema.TARGET_KEYS)


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        ("1d2h3m4s5ms", 93784.005),
        (" 5m ", 300.0),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is not a duration"),
        ("5 m", "is not a duration"),
        ("30m1h", "is not a duration"),
        ("1h1h", "is not a duration"),
        ("5min", "is not a duration"),
        ("1e3", "is not a duration"),
        ("nan", "is not a duration"),
        ("-5s", "is not a duration"),
        ("٣s", "is not a duration"),
        (-1, "must not be negative"),
        (float("nan"), "must be a finite duration"),
        (True, "got boolean"),
        (None, "got null"),
        ([1], "got list"),
        (366 * 86400, "must be at most 365d"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^.*" + message.replace("(", r"\(")):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (30, "30s"), (300, "5m"), (5400, "1h30m"), (90061, "1d1h1m1s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# --- sharding ---------------------------------------------------------------------------------


def _many_targets(tmp_path: Path, count: int) -> Config:
    hosts = "".join(f"      - host: h{i}.contoso.com\n" for i in range(count))
    loose = "".join(f"  - host: h{i}.example.com\n" for i in range(count))
    path = tmp_path / "many.yml"
    path.write_text(f"tenants:\n  contoso:\n    targets:\n{hosts}targets:\n{loose}")
    return load_config(path)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_targets(tmp_path: Path, count: int) -> None:
    cfg = _many_targets(tmp_path, 60)
    shards = [cfg.shard(i, count) for i in range(count)]
    keys = [t.key for s in shards for t in s.targets]
    assert sorted(keys) == sorted(t.key for t in cfg.targets)
    assert len(keys) == len(set(keys)) == 120
    if count > 1:
        assert all(s.targets for s in shards)  # 120 targets spread; no shard left empty
    assert all(s.tenants == cfg.tenants and s.web == cfg.web for s in shards)


def test_shard_assignment_is_stable_across_runs() -> None:
    # Fixed values: a change here (say, to Python's randomized hash()) would move targets
    # between exporters on upgrade.
    assert shard_of(("contoso", "relay"), 1000003) == 870102
    assert shard_of(("", "example-mx"), 1000003) == 372162
    assert shard_of(("fabrikam", "onprem"), 7) == 0


@pytest.mark.parametrize(("index", "count"), [(0, 0), (2, 2), (-1, 3)])
def test_invalid_shard(tmp_path: Path, index: int, count: int) -> None:
    cfg = _many_targets(tmp_path, 1)
    with pytest.raises(ValueError, match="invalid shard"):
        cfg.shard(index, count)


# --- robustness -------------------------------------------------------------------------------

_KEYS = sorted(
    {
        *config_schema.TOP_KEYS,
        *config_schema.WEB_KEYS,
        *config_schema.DNS_KEYS,
        *config_schema.DEFAULT_KEYS,
        *config_schema.TENANT_KEYS,
        *config_schema.TARGET_KEYS,
        "contoso",
    }
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "5m",
            "1h30m",
            "all",
            "one",
            "implicit",
            "starttls",
            ":9825",
            "[::1]:1",
            "192.0.2.1",
            "2001:db8::/32",
            "*.contoso.com",
            "contoso.com",
            "mail.example.com",
            "",
            "*",
            FP,
            "<I>a<S>b",
            "bücher.example",
            "xn--",
            "a..b",
            "-a.com",
            "\x00",
        ]
    ),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), _SCALARS), children, max_size=6),
    ),
    max_leaves=40,
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(_DOCUMENTS)
def test_arbitrary_structures_end_in_config_or_config_error(data: object) -> None:
    try:
        result = parse_config(data, base_dir=Path("/nonexistent-tlsprobe-test"))
    except ConfigError as exc:
        assert str(exc)
        assert all(isinstance(p, ConfigError) for p in exc.problems)
    else:
        assert isinstance(result, Config) and result.targets


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["targets", "tenants", "defaults"]),
        st.lists(
            st.dictionaries(st.sampled_from(config_schema.TARGET_KEYS), _SCALARS, max_size=5),
            max_size=3,
        ),
        max_size=2,
    )
)
def test_arbitrary_targets_end_in_config_or_config_error(data: dict[str, object]) -> None:
    try:
        cfg = parse_config(data, base_dir=Path("/nonexistent-tlsprobe-test"))
    except ConfigError as exc:
        assert all(p.path for p in exc.problems)  # a mapping's problems always name a key
    else:
        for t in cfg.targets:
            assert (t.host is None) != (t.mx is None)
            assert 1 <= t.port <= 65535 and 0 < t.timeout < t.interval
            assert t.policy.crit_days <= t.policy.warn_days


_YAML_CHARS = st.sampled_from(
    list(":-[]{}#&*!|>'\"%@`,?\n \t" + string.ascii_letters + "0123456789")
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.yml"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(_YAML_CHARS, max_size=120), st.text(max_size=60)))
def test_arbitrary_yaml_text_ends_in_config_or_config_error(scratch: Path, text: str) -> None:
    scratch.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(scratch)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://tlsprobe.contoso.com/", "https://tlsprobe.contoso.com"),
        ("http://mon.contoso.com:8080/tlsprobe/", "http://mon.contoso.com:8080/tlsprobe"),
    ],
)
def test_external_url_is_normalised(value: str, expected: str) -> None:
    config = parse_config(_web(external_url=value), base_dir=Path("/"))
    assert config.web.external_url == expected


def _web(**web: object) -> dict[str, object]:
    return {"web": web, "targets": [{"host": "mail.example.com"}]}


@pytest.mark.parametrize(
    "value",
    ["tlsprobe.contoso.com", "ftp://x.example", "https://x.example/?a=1", "https://u:p@x.ex", 7],
)
def test_bad_external_url_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_web(external_url=value), base_dir=Path("/"))
    assert str(caught.value).startswith("web.external_url: ")
    assert "u:p@" not in str(caught.value)


# --- labels: ---------------------------------------------------------------------------------

SECRET = "Contoso-Ltd-Account-4711"
"""A label value that no error message may show."""


def _labelled(tenant_labels: object, target_labels: object = None) -> dict[str, object]:
    target: dict[str, object] = {"host": "relay.contoso.com"}
    if target_labels is not None:
        target["labels"] = target_labels
    return {
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.com"],
                "labels": tenant_labels,
                "targets": [target, {"host": "smtp.contoso.com"}],
            }
        },
        "targets": [{"host": "mail.example.com"}],
    }


def test_labels_of_tenant_and_target_merge_the_target_winning() -> None:
    data = _labelled({"customer": SECRET, "team": "mail"}, {"team": "edge", "env": "prod"})
    cfg = parse_config(data, base_dir=Path("/"))
    relay, smtp, loose = cfg.targets
    assert relay.labels == (("customer", SECRET), ("env", "prod"), ("team", "edge"))
    assert smtp.labels == (("customer", SECRET), ("team", "mail"))
    assert loose.labels == ()
    assert cfg.tenants[0].labels == (("customer", SECRET), ("team", "mail"))


@pytest.mark.parametrize(
    ("labels", "path", "message"),
    [
        ({"1st": SECRET}, "labels", "label number 1: name must match [a-zA-Z_][a-zA-Z0-9_]*"),
        ({"ok": "x", SECRET: SECRET}, "labels", "label number 2: name must match"),
        ({"__name": SECRET}, "labels.__name", "label names starting with '__' are reserved"),
        ({"tenant": SECRET}, "labels.tenant", "label name is one tlsprobe or Prometheus uses"),
        ({"check": SECRET}, "labels.check", "label name is one tlsprobe or Prometheus uses"),
        ({"instance": SECRET}, "labels.instance", "label name is one tlsprobe or Prometheus"),
        ({"x" * 65: SECRET}, "labels", "label number 1: name longer than 64"),
        ({"customer": 4711}, "labels.customer", "must be a string (quote it), got integer"),
        ({"customer": ""}, "labels.customer", "must be 1 to 128 characters"),
        ({"customer": SECRET * 10}, "labels.customer", "must be 1 to 128 characters"),
        ({"customer": SECRET + "\u200b"}, "labels.customer", "must not contain control"),
        ({"customer": SECRET + "\n"}, "labels.customer", "must not contain control"),
        ({f"l{i}": SECRET for i in range(17)}, "labels", "more than 16 labels"),
        ([SECRET], "labels", "must be a mapping, got list"),
    ],
)
def test_bad_labels_name_the_key_and_never_show_the_value(
    labels: object, path: str, message: str
) -> None:
    for where, data in (
        ("tenants.contoso", _labelled(labels)),
        ("tenants.contoso.targets[0]", _labelled({}, labels)),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(data, base_dir=Path("/"))
        assert caught.value.path == f"{where}.{path}"
        assert caught.value.message.startswith(message)
        assert SECRET not in str(caught.value)


def test_labels_bound_counts_the_tenants_and_the_targets_together() -> None:
    tenant = {f"t{i}": "x" for i in range(10)}
    data = _labelled(tenant, {f"g{i}": "y" for i in range(7)})
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base_dir=Path("/"))
    assert str(caught.value) == (
        "tenants.contoso.targets[0].labels: more than 16 labels (the tenant's and the target's)"
    )
    # Overriding a tenant's label adds none.
    ok = parse_config(_labelled(tenant, {f"t{i}": "y" for i in range(6)}), base_dir=Path("/"))
    assert len(ok.targets[0].labels) == 10

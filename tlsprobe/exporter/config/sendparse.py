"""Read the send side's configuration (`receiver:` and each tenant's `senders:`) into
`sendconfig` values, with the configuration's error conventions: one `ConfigError` per problem,
naming the key; a canary password is read from its file and never shown."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from tlsprobe.exporter.config import fields, values
from tlsprobe.exporter.config.schema import ConfigError
from tlsprobe.exporter.config.send import (
    DEFAULT_RECEIVER_PORT,
    CanaryConfig,
    ReceiverConfig,
    SenderConfig,
    SendSideConfig,
)
from tlsprobe.model import Policy, parse_host_port
from tlsprobe.probe.files import MAX_PEM_BYTES
from tlsprobe.probe.send import canary
from tlsprobe.probe.send.receiver import ReceiverTlsError, load_identity
from tlsprobe.probe.x509.bundle import MAX_BUNDLE_BYTES
from tlsprobe.probe.x509.evaluate import TrustStore, TrustStoreError

RECEIVER_KEYS = (
    "listen",
    "hostname",
    "recipients",
    "tls_cert_file",
    "tls_key_file",
    "session_timeout",
    "max_sessions",
    "max_sessions_per_peer",
    "per_peer_per_minute",
    "idle_eviction",
    "max_message_bytes",
)
SENDER_KEYS = (
    "name",
    "peers",
    "certificate_domain",
    "expected_certificate",
    "server_target",
    "ca_file",
    "warn_days",
    "crit_days",
    "canary",
    "session_expected_within",
)
CANARY_KEYS = (
    "relay",
    "starttls",
    "username",
    "password_file",
    "mail_from",
    "recipient",
    "helo",
    "interval",
    "deadline",
)
_MAX_PASSWORD = 1024


def receiver(value: object, base_dir: Path) -> ReceiverConfig:
    section = values.mapping(value, "receiver", RECEIVER_KEYS)
    host, port = "127.0.0.1", DEFAULT_RECEIVER_PORT
    if "listen" in section:
        host, port = fields.listen_address(section["listen"], "receiver.listen")
        host = host or "127.0.0.1"  # loopback unless an address is configured
    cert = _file(section, "tls_cert_file", "receiver", base_dir, MAX_PEM_BYTES)
    key = _file(section, "tls_key_file", "receiver", base_dir, MAX_PEM_BYTES)
    if key is not None and cert is None:
        raise ConfigError("receiver.tls_key_file", "needs receiver.tls_cert_file")
    if cert is not None:
        try:
            load_identity(str(cert), str(key) if key else None)
        except ReceiverTlsError as exc:
            at = "receiver.tls_key_file" if exc.key_file else "receiver.tls_cert_file"
            raise ConfigError(at, str(exc)) from None
    recipients = values.listing(section.get("recipients"), "receiver.recipients")
    return ReceiverConfig(
        listen_host=host,
        listen_port=port,
        hostname=values.domain_name(
            section.get("hostname", "tlsprobe-receiver.localdomain"), "receiver.hostname"
        ),
        recipients=tuple(
            _address(v, f"receiver.recipients[{i}]") for i, v in enumerate(recipients)
        ),
        tls_cert_file=cert,
        tls_key_file=key,
        session_timeout=values.duration(
            section.get("session_timeout", "60s"), "receiver.session_timeout"
        ),
        max_sessions=values.integer(
            section.get("max_sessions", 20), "receiver.max_sessions", 1, 10000
        ),
        max_sessions_per_peer=values.integer(
            section.get("max_sessions_per_peer", 5), "receiver.max_sessions_per_peer", 1, 10000
        ),
        per_peer_per_minute=values.integer(
            section.get("per_peer_per_minute", 30), "receiver.per_peer_per_minute", 1, 100000
        ),
        idle_eviction=values.duration(
            section.get("idle_eviction", "10s"), "receiver.idle_eviction"
        ),
        max_message_bytes=values.integer(
            section.get("max_message_bytes", 65536), "receiver.max_message_bytes", 1024, 10485760
        ),
    )


def senders(
    tenant: str,
    value: object,
    where: str,
    tenant_policy: Policy,
    base_dir: Path,
    *,
    default_ca: Path | None = None,
) -> list[SenderConfig]:
    """A tenant's senders; `tenant_policy` and `default_ca` are what a sender inherits."""
    items = values.listing(value, where)
    parsed = [
        _sender(tenant, item, f"{where}[{i}]", tenant_policy, base_dir, default_ca=default_ca)
        for i, item in enumerate(items)
    ]
    names = [s.name for s in parsed]
    for index, name in enumerate(names):
        if name in names[:index]:
            first = names.index(name)
            raise ConfigError(
                f"{where}[{index}].name", f"duplicate sender name (also {where}[{first}])"
            )
    return parsed


def _sender(
    tenant: str,
    value: object,
    where: str,
    tenant_policy: Policy,
    base_dir: Path,
    *,
    default_ca: Path | None,
) -> SenderConfig:
    section = values.mapping(value, where, SENDER_KEYS)
    if "name" not in section:
        raise ConfigError(where, "needs a name")
    peers = values.listing(section.get("peers"), f"{where}.peers")
    if not peers:
        raise ConfigError(f"{where}.peers", "needs at least one peer address or network")
    connector = fields.connector(section, where) or tenant_policy.certificate_domain
    policy = Policy(
        certificate_domain=connector,
        accepted_domains=tenant_policy.accepted_domains,
        warn_days=values.days(
            section.get("warn_days", tenant_policy.warn_days), f"{where}.warn_days"
        ),
        crit_days=values.days(
            section.get("crit_days", tenant_policy.crit_days), f"{where}.crit_days"
        ),
        fixed_expiry_days=tenant_policy.fixed_expiry_days
        or "warn_days" in section
        or "crit_days" in section,
        expected=fields.expected_pins(section.get("expected_certificate"), where),
        inbound_connector=tenant_policy.inbound_connector,
    )
    canary_config = (
        _canary(section["canary"], f"{where}.canary", base_dir) if "canary" in section else None
    )
    expected_within = canary_config.interval * 2 + canary_config.deadline if canary_config else None
    if "session_expected_within" in section:
        at = f"{where}.session_expected_within"
        expected_within = values.duration(section["session_expected_within"], at)
    return SenderConfig(
        tenant=tenant,
        name=values.display_name(section["name"], f"{where}.name"),
        peers=tuple(_network(v, f"{where}.peers[{i}]") for i, v in enumerate(peers)),
        policy=policy,
        ca_file=_trust_file(section, where, base_dir) or default_ca,
        server_target=(
            values.display_name(section["server_target"], f"{where}.server_target")
            if "server_target" in section
            else None
        ),
        canary=canary_config,
        session_expected_within=expected_within,
    )


def _canary(value: object, where: str, base_dir: Path) -> CanaryConfig:
    section = values.mapping(value, where, CANARY_KEYS)
    for key in ("relay", "recipient"):
        if key not in section:
            raise ConfigError(where, f"needs {key}")
    try:
        host, port = parse_host_port(values.string_of(section["relay"], f"{where}.relay"))
    except ValueError:
        raise ConfigError(f"{where}.relay", "must be HOST or HOST:PORT ([IPv6]:PORT)") from None
    username = (
        values.string_of(section["username"], f"{where}.username")
        if "username" in section
        else None
    )
    password_file = _file(section, "password_file", where, base_dir, _MAX_PASSWORD)
    if (username is None) != (password_file is None):
        raise ConfigError(where, "give username and password_file together")
    interval = values.duration(section.get("interval", "5m"), f"{where}.interval")
    deadline = values.duration(section.get("deadline", "2m"), f"{where}.deadline")
    relay = canary.Relay(
        host=values.host_value(host, f"{where}.relay"),
        port=port or 25,
        starttls=_flag(section.get("starttls", True), f"{where}.starttls"),
        username=username,
        password=_password(password_file, f"{where}.password_file") if password_file else None,
        mail_from=_address(section.get("mail_from", "tlsprobe@localhost"), f"{where}.mail_from"),
        recipient=_address(section["recipient"], f"{where}.recipient"),
        helo=values.ehlo_value(section.get("helo", "tlsprobe.localdomain"), f"{where}.helo"),
    )
    return CanaryConfig(relay=relay, interval=interval, deadline=deadline)


def _file(
    section: Mapping[str, object], key: str, where: str, base_dir: Path, limit: int
) -> Path | None:
    if key not in section:
        return None
    at = f"{where}.{key}"
    text = values.string_of(section[key], at)
    if not text:
        raise ConfigError(at, "must not be empty")
    path = base_dir / text
    fields.check_readable(path, at, limit)
    return path


def _trust_file(section: Mapping[str, object], where: str, base_dir: Path) -> Path | None:
    """A sender's `ca_file`: a PEM bundle that loads, as a target's must."""
    path = _file(section, "ca_file", where, base_dir, MAX_BUNDLE_BYTES)
    if path is not None:
        try:
            TrustStore.from_pem_file(path)
        except TrustStoreError as exc:
            raise ConfigError(f"{where}.ca_file", str(exc)) from None
    return path


def _password(path: Path, where: str) -> str:
    data = fields.read_file(path, where, _MAX_PASSWORD)
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    if not text or "\n" in text:
        raise ConfigError(where, "the file must hold one line (the password), at most 1 KiB")
    return text


def _network(value: object, where: str) -> str:
    text = values.string_of(value, where).strip()
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ConfigError(where, "is not an IP address or network") from None


def _address(value: object, where: str) -> str:
    text = values.string_of(value, where).strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or any(ch.isspace() or ch in '<>"' for ch in text):
        raise ConfigError(where, "is not a mail address (local@domain)")
    return f"{local}@{values.domain_name(domain, where)}"


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"must be true or false, got {values.kind(value)}")
    return value


def send_side(
    top: Mapping[str, object], tenant_senders: list[SenderConfig], base_dir: Path
) -> SendSideConfig | None:
    """The whole send side, or None when `receiver:` is absent (then no `senders:` may be)."""
    if "receiver" not in top:
        if tenant_senders:
            raise ConfigError("receiver", "senders are configured but the receiver is not")
        return None
    return SendSideConfig(receiver(top["receiver"], base_dir), tuple(tenant_senders))

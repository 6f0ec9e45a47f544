"""Readers for the configuration's structured fields: where a target connects and how, the
`/probe` allowlist entries, the listen address, pinned certificates, the connector name.

Each returns the normalized value or raises a `ConfigError` at the key path it was given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

from tlsprobe.exporter import links
from tlsprobe.exporter.config.schema import (
    MAX_LABEL_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    RESERVED_LABELS,
    ConfigError,
)
from tlsprobe.exporter.config.values import (
    choice,
    domain_name,
    host_value,
    kind,
    listing,
    mapping_of_any,
    string_of,
)
from tlsprobe.model import HostPortError, Mode, is_ip_literal, parse_host_port
from tlsprobe.probe import files
from tlsprobe.probe.names import host_port, is_host_name, normalize_name
from tlsprobe.probe.x509 import o365

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def host_or_mx(section: Mapping[str, object], where: str) -> tuple[str | None, str | None]:
    if "host" in section and "mx" in section:
        raise ConfigError(where, "give either host or mx, not both")
    if "host" in section:
        return host_value(section["host"], f"{where}.host"), None
    if "mx" in section:
        return None, domain_name(section["mx"], f"{where}.mx")
    raise ConfigError(where, "needs host (a server) or mx (a mail domain whose MX hosts to probe)")


def mode_setting(section: Mapping[str, object], where: str, port: int) -> Mode:
    if "mode" not in section:
        return Mode.for_port(port)
    return Mode(choice(section["mode"], f"{where}.mode", tuple(m.value for m in Mode)))


def sni_setting(
    section: Mapping[str, object], where: str, host: str | None
) -> tuple[str | None, bool]:
    """(name to send, whether to send one); `sni: false` sends none."""
    value = section.get("sni")
    if value is False:
        return None, False
    if value is None:
        return (None if host is None or is_ip_literal(host) else host), True
    at = f"{where}.sni"
    if not isinstance(value, str):
        raise ConfigError(at, f"must be a server name, or false to send none; got {kind(value)}")
    if is_ip_literal(value):
        raise ConfigError(at, "an IP address cannot be sent as SNI; give a host name or false")
    return domain_name(value, at), True


def dns_policies(
    section: Mapping[str, object], where: str, mx: str | None
) -> tuple[bool, str | None]:
    """(`dane`, `mta_sts_domain`): a boolean, and a domain or false for none; both on by
    default for mx targets, off for host targets."""
    dane = section.get("dane", mx is not None)
    if not isinstance(dane, bool):
        raise ConfigError(f"{where}.dane", f"must be true or false, got {kind(dane)}")
    domain = section.get("mta_sts_domain", mx)
    if domain is False or domain is None:
        return dane, None
    return dane, domain_name(domain, f"{where}.mta_sts_domain")


def connector(section: Mapping[str, object], where: str) -> str | None:
    if "certificate_domain" not in section:
        return None
    at = f"{where}.certificate_domain"
    text = string_of(section["certificate_domain"], at)
    try:
        return str(o365.ConnectorPattern.parse(text))
    except o365.ConnectorPatternError as exc:
        raise ConfigError(at, exc.problem) from None


def expected_pins(value: object, where: str) -> tuple[str, ...]:
    at = f"{where}.expected_certificate"
    if value is None:
        return ()
    if isinstance(value, str):
        return (pin(value, at),)
    items = listing(value, at, "a string or a list of strings")
    return tuple(dict.fromkeys(pin(v, f"{at}[{i}]") for i, v in enumerate(items)))


def pin(value: object, where: str) -> str:
    """A SHA-256 fingerprint (stored as bare lower-case hex) or `<I>issuer<S>subject`."""
    text = string_of(value, where).strip()
    bare = text.replace(":", "")
    if _FINGERPRINT.fullmatch(bare):
        return bare.lower()
    issuer, sep, subject = text.removeprefix("<I>").partition("<S>")
    if text.startswith("<I>") and sep and issuer.strip() and subject.strip():
        return text
    raise ConfigError(
        where,
        "must be a SHA-256 fingerprint (64 hex digits, colons allowed) or Exchange's "
        "'<I>issuer<S>subject'",
    )


def listen_address(value: object, where: str) -> tuple[str, int]:
    text = string_of(value, where)
    host, sep, port = text.rpartition(":")
    usage = "must be HOST:PORT, [IPv6]:PORT or :PORT"
    if not sep:
        raise ConfigError(where, usage)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not is_ip_literal(host) or ":" not in host:
            raise ConfigError(where, usage)
    elif ":" in host:
        raise ConfigError(where, "write an IPv6 address in brackets ([::1]:PORT)")
    elif host and not is_ip_literal(host) and not is_host_name(normalize_name(host)):
        raise ConfigError(where, usage)
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(where, "port must be 1-65535")
    return host, int(port)


def allow_entry(value: object, where: str) -> str:
    """A CIDR network, or an IP / host name / `*.domain` with an optional `:PORT`."""
    text = string_of(value, where).strip()
    if "/" in text:
        return allow_network(text, where)
    usage = (
        "is not a CIDR network, or HOST[:PORT] where HOST is a host name, '*.domain' or IP address"
    )
    try:
        host, port = parse_host_port(text)
    except HostPortError:
        raise ConfigError(where, usage) from None
    if is_ip_literal(host):
        address = ipaddress.ip_address(host)
        if port is None:
            return str(ipaddress.ip_network(address))
        return host_port(str(address), port)
    if host == "*":
        raise ConfigError(where, "a bare '*' would allow probing any host; list hosts or domains")
    rest = host.removeprefix("*.")
    name = normalize_name(rest)
    if not is_host_name(name):
        raise ConfigError(where, usage)
    pattern = name if rest == host else f"*.{name}"
    return pattern if port is None else f"{pattern}:{port}"


def allow_network(text: str, where: str) -> str:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(where, "is not an IP network") from None
    if network.prefixlen == 0:
        raise ConfigError(where, "would allow probing any address")
    return str(network)


def external_url(value: object) -> str | None:
    if value is None:
        return None
    try:
        return links.parse_external_url(string_of(value, "web.external_url"))
    except ValueError as exc:
        raise ConfigError("web.external_url", str(exc)) from exc


def check_readable(path: Path, where: str, limit: int | None) -> None:
    """A regular file of at most `limit` bytes (None: any size) that can be read
    (`tlsprobe.probe.files`)."""
    try:
        files.check(path, limit)
    except files.FileError as exc:
        raise ConfigError(where, str(exc)) from None


def read_file(path: Path, where: str, limit: int) -> bytes:
    """The content of a regular file of at most `limit` bytes, read no further than that."""
    try:
        return files.read(path, limit)
    except files.FileError as exc:
        raise ConfigError(where, str(exc)) from None


def exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def labels(
    section: Mapping[str, object], where: str, inherited: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[str, str], ...]:
    """`labels:`, a map of Prometheus label names to short strings, over `inherited` (the
    tenant's), sorted by name. Messages name the key and never show a value: labels carry
    customer names and the like."""
    at = f"{where}.labels"
    merged = dict(inherited)
    own = mapping_of_any(section.get("labels"), at)
    if len(own) > MAX_LABELS:
        raise ConfigError(at, f"more than {MAX_LABELS} labels")
    for number, (name, value) in enumerate(own.items(), 1):
        # An invalid name is not shown (it may be a value typed as a key); a valid one is.
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise ConfigError(at, f"label number {number}: name must match [a-zA-Z_][a-zA-Z0-9_]*")
        if len(name) > MAX_LABEL_NAME:
            raise ConfigError(at, f"label number {number}: name longer than {MAX_LABEL_NAME}")
        key = f"{at}.{name}"
        if name.startswith("__"):
            raise ConfigError(key, "label names starting with '__' are reserved to Prometheus")
        if name in RESERVED_LABELS:
            raise ConfigError(key, "label name is one tlsprobe or Prometheus uses already")
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (quote it), got {kind(value)}")
        if not value or len(value) > MAX_LABEL_VALUE:
            raise ConfigError(key, f"must be 1 to {MAX_LABEL_VALUE} characters")
        if not value.isprintable():
            raise ConfigError(key, "must not contain control or unprintable characters")
        merged[name] = value
    if len(merged) > MAX_LABELS:
        raise ConfigError(at, f"more than {MAX_LABELS} labels (the tenant's and the target's)")
    return tuple(sorted(merged.items()))

"""The tenant file `tlsprobe import-exo` writes (`tenants.NAME.exchange_online: FILE`), merged
into its tenant, and the outbound connector that routes to each target.

The file holds what Exchange Online owns (accepted domains, the inbound connector's name and
certificate domain, the outbound connectors, one target per smart host); the tenant section in
the main file keeps what an operator types. A key set in both is refused, naming it: neither
silently wins. Targets in both for the same host or MX keep the hand-written one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tlsprobe.exporter.config.schema import ConfigError, OutboundRoute
from tlsprobe.exporter.config.values import (
    choice,
    domain_name,
    kind,
    listing,
    mapping,
    string_of,
)
from tlsprobe.exporter.config.yamlfile import YamlFileError, read_yaml
from tlsprobe.model import OutboundRule, TlsSettings, is_ip_literal
from tlsprobe.probe.names import normalize_name
from tlsprobe.probe.x509 import o365

FILE_KEYS = (
    "accepted_domains",
    "certificate_domain",
    "inbound_connector",
    "outbound_connectors",
    "targets",
)
OWNED = ("accepted_domains", "certificate_domain", "inbound_connector", "outbound_connectors")
CONNECTOR_KEYS = (
    "name",
    "tls_settings",
    "tls_domain",
    "smart_hosts",
    "recipient_domains",
    "use_mx",
)
HOSTNAME_CHECKS = ("auto", "required", "informational")
MAX_TENANT_FILE = 1 << 20


def merged_section(section: dict[str, Any], where: str, base_dir: Path) -> dict[str, Any]:
    """The tenant section with its `exchange_online` file folded in (unchanged without one)."""
    if "exchange_online" not in section:
        return section
    at = f"{where}.exchange_online"
    text = string_of(section["exchange_online"], at)
    if not text:
        raise ConfigError(at, "must not be empty")
    path = base_dir / text
    if path.exists() and not path.is_file():
        raise ConfigError(at, f"{path} is not a regular file")
    try:
        data = read_yaml(path, max_bytes=MAX_TENANT_FILE)
    except YamlFileError as exc:
        raise ConfigError(at, f"{path}: {exc.message}") from None
    owned = mapping({} if data is None else data, at, FILE_KEYS)
    merged = {k: v for k, v in section.items() if k != "exchange_online"}
    for key in OWNED:
        if key in owned and key in merged:
            raise ConfigError(
                f"{where}.{key}",
                f"set here and in the exchange_online file {path}; the import owns it: "
                "remove it here",
            )
        if key in owned:
            merged[key] = owned[key]
    typed = listing(section.get("targets"), f"{where}.targets")
    seen = {_target_name(t) for t in typed}
    imported = listing(owned.get("targets"), f"{at}.targets")
    merged["targets"] = [*typed, *(t for t in imported if _target_name(t) not in seen)]
    return merged


def _target_name(item: object) -> str | None:
    if not isinstance(item, dict):
        return None
    value = item.get("host", item.get("mx"))
    return normalize_name(value) if isinstance(value, str) else None


def outbound_routes(section: Mapping[str, object], where: str) -> tuple[OutboundRoute, ...]:
    at = f"{where}.outbound_connectors"
    items = listing(section.get("outbound_connectors"), at)
    return tuple(_route(item, f"{at}[{i}]") for i, item in enumerate(items))


def _route(value: object, where: str) -> OutboundRoute:
    entry = mapping(value, where, CONNECTOR_KEYS)
    name = string_of(entry.get("name"), f"{where}.name")
    if not name:
        raise ConfigError(f"{where}.name", "must not be empty")
    settings = choice(entry.get("tls_settings"), f"{where}.tls_settings", tuple(TlsSettings))
    tls_domain = None
    if entry.get("tls_domain") is not None:
        tls_domain = _pattern(entry["tls_domain"], f"{where}.tls_domain")
    use_mx = entry.get("use_mx", False)
    if not isinstance(use_mx, bool):
        raise ConfigError(f"{where}.use_mx", f"must be true or false, got {kind(use_mx)}")
    hosts = listing(entry.get("smart_hosts"), f"{where}.smart_hosts")
    domains = listing(entry.get("recipient_domains"), f"{where}.recipient_domains")
    return OutboundRoute(
        rule=OutboundRule(name=name, tls_settings=TlsSettings(settings), tls_domain=tls_domain),
        smart_hosts=tuple(_host(h, f"{where}.smart_hosts[{i}]") for i, h in enumerate(hosts)),
        recipient_domains=tuple(
            _recipient(d, f"{where}.recipient_domains[{i}]") for i, d in enumerate(domains)
        ),
        use_mx=use_mx,
    )


def _pattern(value: object, where: str) -> str:
    try:
        return str(o365.ConnectorPattern.parse(string_of(value, where)))
    except o365.ConnectorPatternError as exc:
        raise ConfigError(where, str(exc)) from None


def _host(value: object, where: str) -> str:
    text = string_of(value, where).strip("[]")
    return text if is_ip_literal(text) else domain_name(text, where)


def _recipient(value: object, where: str) -> str:
    text = string_of(value, where)
    return "*" if text == "*" else _pattern(text, where)


def route_for(
    routes: Sequence[OutboundRoute], host: str | None, mx: str | None
) -> OutboundRule | None:
    """The outbound connector that delivers to this target: a smart host naming the host, or
    an MX-routed connector whose recipient domains cover the mail domain."""
    for route in routes:
        if host is not None and not route.use_mx and host in route.smart_hosts:
            return route.rule
        if mx is not None and route.use_mx and any(_covers(d, mx) for d in route.recipient_domains):
            return route.rule
    return None


def _covers(pattern: str, domain: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        base = pattern[2:]
        return domain == base or domain.endswith("." + base)
    return pattern == domain


def hostname_required(
    section: Mapping[str, object], where: str, *, mx: str | None, routed: bool, relay: bool
) -> bool:
    """`hostname_check`: `required`, `informational`, or `auto` (the default): required for an
    mx target, a smart host an outbound connector names, and a target judged by no connector;
    informational for a relay (a host target judged by the inbound connector) nobody dials."""
    value = choice(
        section.get("hostname_check", "auto"), f"{where}.hostname_check", HOSTNAME_CHECKS
    )
    if value != "auto":
        return value == "required"
    return mx is not None or routed or not relay


def inbound_name(section: Mapping[str, object], where: str) -> str | None:
    if section.get("inbound_connector") is None:
        return None
    return string_of(section["inbound_connector"], f"{where}.inbound_connector") or None

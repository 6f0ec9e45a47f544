"""Which ad hoc hosts `/probe` may check: the guard that keeps the exporter from being a scanner.

A request names `host[:port]`. It is allowed only when the configuration's
`web.probe_allowlist` says so: an IP literal must lie in a listed network; a host name must
match a listed name (`mail.example.net`) or pattern (`*.example.net`, any depth below), and
every address it resolves to must be public or in a listed network, so a name that resolves to
loopback or a private range cannot smuggle a probe inward. "Public" is stricter than
`is_global`: multicast, reserved and site-local addresses are not, and an IPv6 address that
carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is judged by the IPv4 address it reaches.
The probe then connects to the address that was checked, never re-resolving (no DNS rebinding
between check and connect). Ports are 25, 465 and 587 unless an entry names its own
(`mail.example.net:2525`). Everything is decided before any connection is made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from tlsprobe.exporter.config import Config, TargetConfig
from tlsprobe.exporter.config.allowrules import DEFAULT_PORTS, Rule, parse_rule
from tlsprobe.model import HostPortError, Mode, Policy, parse_host_port
from tlsprobe.probe.dns import discover
from tlsprobe.probe.names import is_host_name, normalize_name

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

__all__ = ["DEFAULT_PORTS", "AllowlistError", "Rule", "check_adhoc", "is_public", "parse_rule"]


class AllowlistError(Exception):
    """Why an ad hoc probe is refused (the text goes to the 403 body, never to a label)."""


def _address_allowed(address: IpAddress, rules: Sequence[Rule], *, by_name: bool) -> bool:
    if any(r.network is not None and address in r.network for r in rules):
        return True
    # A name on the list may resolve to public addresses only; private ranges need a network rule.
    return by_name and is_public(address)


def is_public(address: IpAddress) -> bool:
    """Globally routable unicast; an IPv6 address that carries an IPv4 one is judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _valid_name(name: str) -> bool:
    """A host name of two labels or more: a single label would be completed by the resolver's
    search domains, so the name checked would not be the name probed."""
    return "." in name and is_host_name(name)


async def check_adhoc(request_target: str, config: Config, resolver: Any) -> TargetConfig:
    """A TargetConfig for an allowed ad hoc host, or AllowlistError saying why not."""
    rules = config.web.probe_rules
    if not rules:
        raise AllowlistError("not a configured target, and web.probe_allowlist is empty")
    if any(c in request_target for c in "%@/\\?#") or not request_target.isprintable():
        raise AllowlistError("target must be host[:port]")
    try:
        host, port = parse_host_port(request_target)
    except HostPortError as exc:
        raise AllowlistError(str(exc)) from exc
    port = port or config.defaults_port
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        matching = [r for r in rules if r.network is not None and r.allows_port(port)]
        if not _address_allowed(literal, matching, by_name=False):
            raise AllowlistError(f"{host} port {port} is not in web.probe_allowlist")
        return _target(config, str(literal), str(literal), port)
    name = normalize_name(host)
    if not _valid_name(name):
        raise AllowlistError(f"{host!r} is not a host name or IP address")
    named = [r for r in rules if r.allows_name(name) and r.allows_port(port)]
    if not named:
        raise AllowlistError(f"{name} port {port} is not in web.probe_allowlist")
    found = await discover.resolve_addresses(name, resolver, which="all")
    if found.error is not None or not found.addresses:
        raise AllowlistError(f"{name} does not resolve")
    port_rules = [r for r in rules if r.allows_port(port)]
    for address in found.addresses:
        if not _address_allowed(ipaddress.ip_address(address), port_rules, by_name=True):
            raise AllowlistError(
                f"{name} resolves to {address}, which the allowlist does not cover"
            )
    return _target(config, name, found.addresses[0], port)


def _target(config: Config, host: str, address: str, port: int) -> TargetConfig:
    is_ip = host == address
    return TargetConfig(
        tenant="",
        name=f"adhoc:{host}:{port}",
        host=host,
        mx=None,
        port=port,
        mode=Mode.for_port(port),
        address=address,
        sni=None if is_ip else host,
        ehlo_name=None,
        addresses="one",
        interval=config.defaults_interval,
        timeout=config.defaults_timeout,
        retries=0,
        ca_file=config.defaults_ca_file,
        policy=Policy(),
    )

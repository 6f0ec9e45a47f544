"""Which ad hoc hosts `/probe` may check: the guard that keeps the exporter from being a scanner.

A request names `host[:port]`. It is allowed only when the configuration's
`web.probe_allowlist` says so: an IP literal must lie in a listed network; a host name must
match a listed name (`mail.example.net`) or pattern (`*.example.net`, any depth below), and
every address it resolves to must be public or in a listed network, so a name that resolves to
loopback or a private range cannot smuggle a probe inward. The probe then connects to the
address that was checked, never re-resolving (no DNS rebinding between check and connect).
Ports are 25, 465 and 587 unless an entry names its own (`mail.example.net:2525`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from typing import Any

from tlsprobe import discover
from tlsprobe.config import Config, TargetConfig
from tlsprobe.model import HostPortError, Mode, Policy, parse_host_port
from tlsprobe.o365 import normalize_name

DEFAULT_PORTS = frozenset({25, 465, 587})
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllowlistError(Exception):
    """Why an ad hoc probe is refused (the text goes to the 403 body, never to a label)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    network: IpNetwork | None
    name: str | None
    wildcard: bool
    port: int | None

    def allows_port(self, port: int) -> bool:
        return port == self.port if self.port is not None else port in DEFAULT_PORTS

    def allows_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.wildcard:
            return host.endswith("." + self.name)
        return host == self.name


def parse_rule(entry: str) -> Rule:
    """`192.0.2.0/24`, `2001:db8::/32`, `[2001:db8::1]:2525`, `*.example.net`, `mx.example.net:25`.

    Network entries take no port (the default ports apply); a single address may.
    """
    text = entry.strip()
    try:
        return Rule(ipaddress.ip_network(text, strict=False), None, False, None)
    except ValueError:
        pass
    try:
        host, port = parse_host_port(text)
    except HostPortError as exc:
        raise ValueError(f"invalid allowlist entry {entry!r}: {exc}") from exc
    try:
        return Rule(ipaddress.ip_network(host, strict=False), None, False, port)
    except ValueError:
        pass
    wildcard = host.startswith("*.")
    name = normalize_name(host[2:] if wildcard else host)
    if not name or "*" in name:
        raise ValueError(f"invalid allowlist entry {entry!r}")
    return Rule(None, name, wildcard, port)


def _address_allowed(address: IpAddress, rules: Sequence[Rule], *, by_name: bool) -> bool:
    if any(r.network is not None and address in r.network for r in rules):
        return True
    # A name on the list may resolve to public addresses only; private ranges need a network rule.
    return by_name and address.is_global


async def check_adhoc(request_target: str, config: Config, resolver: Any) -> TargetConfig:
    """A TargetConfig for an allowed ad hoc host, or AllowlistError saying why not."""
    rules = [parse_rule(e) for e in config.web.probe_allowlist]
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
        mode=Mode.IMPLICIT if port == 465 else Mode.STARTTLS,
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

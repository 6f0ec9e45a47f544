"""The rules of `web.probe_allowlist`, parsed once when the configuration is loaded.

An entry is an IP network (`192.0.2.0/24`), a single address with an optional port
(`[2001:db8::1]:2525`), or a host name or `*.domain` pattern with an optional port
(`mx.example.net:25`).  The configuration validates and normalizes each entry and keeps the
parsed `Rule`s beside the text (`WebSettings.probe_rules`), so `/probe` never parses an entry
per request; `allowlist.check_adhoc` applies them.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from tlsprobe.model import HostPortError, parse_host_port
from tlsprobe.probe.names import normalize_name

DEFAULT_PORTS = frozenset({25, 465, 587})
"""Ports an entry without its own port allows: SMTP, submissions and submission."""
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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

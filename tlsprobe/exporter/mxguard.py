"""Which MX-discovered addresses the exporter refuses to probe, unless the tenant allows them.

An internal MX address (RFC 1918, ULA) is normal for an on-premises monitor and is probed. A
loopback, link-local or unspecified answer is almost always a DNS mistake or an attack (a zone
pointing its MX at 127.0.0.1 makes the monitor probe services on its own host), so such
addresses are skipped unless one of the tenant's `networks` contains them. The scheduler reports
what it skipped: one log line when the set changes, and `tlsprobe_mx_addresses_skipped`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _suspicious(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _suspicious(address.ipv4_mapped)
    return address.is_loopback or address.is_link_local or address.is_unspecified


def split(addresses: Sequence[str], networks: Iterable[str]) -> tuple[list[str], list[str]]:
    """(addresses to probe, addresses skipped) for one MX host's A/AAAA answers."""
    allowed = [ipaddress.ip_network(n) for n in networks]
    keep: list[str] = []
    skipped: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        if _suspicious(address) and not any(address in network for network in allowed):
            skipped.append(text)
        else:
            keep.append(text)
    return keep, skipped

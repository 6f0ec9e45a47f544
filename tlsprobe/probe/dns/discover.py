"""MX and A/AAAA expansion with dnspython's async resolver: which hosts and addresses to probe.

A mail domain becomes its MX hosts in preference order; a null MX (RFC 7505) is reported as the
domain declaring that it accepts no mail, and a domain without MX records is its own host (the
implicit MX of RFC 5321 section 5.1). Each host then becomes its A and AAAA addresses. Nothing
is cached between calls, so each probe cycle sees the zone as it is now and endpoints appear and
disappear with it. DNS trouble never raises: it comes back as a `ProbeError` of kind
`Reason.DNS`, with `transient` set when the answer might differ on a retry (SERVFAIL, timeout,
no nameserver reachable) as opposed to an authoritative "no" (NXDOMAIN, no records).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from tlsprobe.model import ProbeError, Reason
from tlsprobe.probe.dns.hostsfile import HostsFile

Which = Literal["all", "one"]

# One attempt per server is bounded well below the whole lifetime so that a silent server
# leaves time for a retransmission or for the next nameserver.
MAX_ATTEMPT_SECONDS = 2.0
# The DNS flag day 2020 payload size: large MX/A sets still fit in UDP, without fragmentation.
EDNS_PAYLOAD = 1232


def make_resolver(
    nameservers: Sequence[str] = (), *, port: int = 53, timeout: float = 5.0
) -> dns.asyncresolver.Resolver:
    """A resolver that asks `nameservers` (or the system's, from /etc/resolv.conf, when empty).

    `timeout` bounds each whole resolution. Raises `dns.resolver.NoResolverConfiguration` when
    no nameservers are given and the system has none configured: that is a setup error, found
    at start-up rather than reported as a probe result.
    """
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        # Set before the nameservers: some dnspython releases bind the port at assignment.
        resolver.port = port
        resolver.nameservers = list(nameservers)
    else:
        resolver = dns.asyncresolver.Resolver(configure=True)
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, MAX_ATTEMPT_SECONDS)
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    # No cache: discovery re-resolves every cycle so that zone changes show up at once.
    resolver.cache = None
    return resolver


@dataclass(frozen=True, slots=True)
class MxHost:
    host: str
    """Lower-case A-labels, no trailing dot."""
    preference: int | None
    """None for the implicit MX (the domain itself, RFC 5321 fallback)."""


@dataclass(frozen=True, slots=True)
class MxResult:
    domain: str
    """The domain asked about, normalized like `MxHost.host`."""
    hosts: tuple[MxHost, ...]
    """By preference, then name; each host once (at its lowest preference). Empty on error."""
    null_mx: bool
    """The domain publishes only the RFC 7505 null MX ("0 ."): it accepts no mail.

    Any MX set whose only exchange is "." counts, whatever its preference: no host remains."""
    implicit: bool
    """The domain has no MX records, so it is its own mail host."""
    error: ProbeError | None
    transient: bool
    """The error may go away on a retry (SERVFAIL, timeout, no nameserver reachable)."""


@dataclass(frozen=True, slots=True)
class AddressResult:
    host: str
    addresses: tuple[str, ...]
    """A records then AAAA records, each in the order the server sent, without duplicates.

    Servers that rotate their answers (round-robin) change that order from one call to the next.
    Empty on error."""
    error: ProbeError | None
    transient: bool
    """The error may go away on a retry (SERVFAIL, timeout, no nameserver reachable)."""


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why one query gave no records; NoAnswer is not a failure (it is an empty answer)."""

    message: str
    transient: bool
    nxdomain: bool = False


async def resolve_mx(domain: str, resolver: dns.asyncresolver.Resolver) -> MxResult:
    """The MX hosts of `domain`, the null MX, or the implicit MX; a DNS failure as data."""
    name = _parse_name(domain)
    if isinstance(name, _Failure):
        return _mx_failure(domain.strip().lower(), name)
    normalized = _host_text(name)
    answer = await _query(resolver, name, "MX")
    if isinstance(answer, _Failure):
        return _mx_failure(normalized, answer)
    if not answer:
        implicit = (MxHost(normalized, None),)
        return MxResult(
            normalized, implicit, null_mx=False, implicit=True, error=None, transient=False
        )
    records = [rdata for rdata in answer if isinstance(rdata, MX)]
    real = [record for record in records if record.exchange != dns.name.root]
    # A "." mixed with real exchanges is a misconfiguration (RFC 7505 section 3): the real hosts
    # still receive mail, so they are what gets probed.
    return MxResult(
        normalized,
        _sorted_hosts(real),
        null_mx=not real,
        implicit=False,
        error=None,
        transient=False,
    )


async def resolve_addresses(
    host: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    which: Which = "all",
    hosts: HostsFile | None = None,
) -> AddressResult:
    """The addresses of `host`: every A and AAAA (`which="all"`) or one of them (`"one"`).

    "one" is the lowest IPv4 address, else the lowest IPv6 one, not the first in the answer:
    servers rotate their answers, and the `address` label must not churn from cycle to cycle.

    An IP literal is its own address; a name that `hosts` (the hosts file, when given) lists
    has the addresses listed there, without DNS. A and AAAA are asked concurrently so the
    whole call is bounded by one resolver lifetime; when one family fails and the other
    answers, the answer wins and no error is reported.
    """
    if which not in ("all", "one"):
        raise ValueError(f"which must be 'all' or 'one', not {which!r}")
    literal = _ip_literal(host)
    if literal is not None:
        return AddressResult(literal, (literal,), error=None, transient=False)
    name = _parse_name(host)
    if isinstance(name, _Failure):
        return _address_failure(host.strip().lower(), name)
    normalized = _host_text(name)
    listed = hosts.lookup(normalized) if hosts is not None else ()
    if listed:
        chosen = (_stable_first(listed),) if which == "one" else listed
        return AddressResult(normalized, chosen, error=None, transient=False)
    answers = await asyncio.gather(_query(resolver, name, "A"), _query(resolver, name, "AAAA"))
    addresses = tuple(
        dict.fromkeys(
            rdata.address
            for answer in answers
            if not isinstance(answer, _Failure)
            for rdata in answer
            if isinstance(rdata, A | AAAA)
        )
    )
    if addresses:
        chosen = (_stable_first(addresses),) if which == "one" else addresses
        return AddressResult(normalized, chosen, error=None, transient=False)
    return _address_failure(normalized, _worst([a for a in answers if isinstance(a, _Failure)]))


def _stable_first(addresses: tuple[str, ...]) -> str:
    parsed = [ipaddress.ip_address(a) for a in addresses]
    return str(min(parsed, key=lambda ip: (ip.version, ip)))


def _worst(failures: list[_Failure]) -> _Failure:
    """NXDOMAIN is authoritative for both families; else a transient failure is worth a retry."""
    ranked = sorted(failures, key=lambda failure: (not failure.nxdomain, not failure.transient))
    return ranked[0] if ranked else _Failure("no A or AAAA records", transient=False)


async def _query(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: str
) -> list[dns.rdata.Rdata] | _Failure:
    """The records of the final name (CNAMEs followed); [] when the name has none of rdtype."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NoAnswer:
        return []
    except dns.resolver.NXDOMAIN:
        return _Failure(f"{rdtype}: NXDOMAIN (no such domain)", transient=False, nxdomain=True)
    except dns.exception.Timeout as exc:
        return _Failure(f"{rdtype}: timed out: {exc}", transient=True)
    except dns.resolver.NoNameservers as exc:
        # Every server answered SERVFAIL, REFUSED or garbage, or could not be reached.
        return _Failure(f"{rdtype}: {exc}", transient=True)
    except dns.exception.DNSException as exc:
        return _Failure(f"{rdtype}: {exc}", transient=False)
    except OSError as exc:
        return _Failure(f"{rdtype}: {exc}", transient=True)
    return list(answer)


def _parse_name(text: str) -> dns.name.Name | _Failure:
    stripped = text.strip()
    if stripped in ("", "."):
        return _Failure("empty domain name", transient=False)
    try:
        return dns.name.from_text(stripped)
    except (dns.exception.DNSException, UnicodeError) as exc:
        return _Failure(f"invalid domain name: {exc}", transient=False)


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _ip_literal(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def _sorted_hosts(records: list[MX]) -> tuple[MxHost, ...]:
    best: dict[str, int] = {}
    for record in records:
        host = _host_text(record.exchange)
        best[host] = min(record.preference, best.get(host, record.preference))
    ordered = sorted(best.items(), key=lambda item: (item[1], item[0]))
    return tuple(MxHost(host, preference) for host, preference in ordered)


def _mx_failure(domain: str, failure: _Failure) -> MxResult:
    error = ProbeError(Reason.DNS, f"{domain} {failure.message}")
    return MxResult(
        domain, (), null_mx=False, implicit=False, error=error, transient=failure.transient
    )


def _address_failure(host: str, failure: _Failure) -> AddressResult:
    error = ProbeError(Reason.DNS, f"{host} {failure.message}")
    return AddressResult(host, (), error=error, transient=failure.transient)

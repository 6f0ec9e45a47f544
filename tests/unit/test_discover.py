"""MX and address discovery against a real authoritative DNS server on loopback.

Each test runs `tests.support.dnsserver.DnsTestServer` on an ephemeral port of 127.0.0.1 and
points `make_resolver` at it, so dnspython's real async resolver path (UDP, truncation, TCP,
CNAME chasing, rcodes, timeouts) is exercised. TTLs are 0: nothing may be served from a cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dns.asyncresolver
import pytest

from tests.support.dnsserver import NXDOMAIN, SERVFAIL, TIMEOUT, DnsTestServer
from tlsprobe.model import Reason
from tlsprobe.probe.dns.discover import MxHost, make_resolver, resolve_addresses, resolve_mx

RESOLVER_TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[DnsTestServer]:
    with DnsTestServer() as running:
        yield running


@pytest.fixture
def resolver(server: DnsTestServer) -> dns.asyncresolver.Resolver:
    return make_resolver(["127.0.0.1"], port=server.port, timeout=RESOLVER_TIMEOUT)


def test_make_resolver_uses_exactly_the_given_servers() -> None:
    resolver = make_resolver(["127.0.0.1", "::1"], port=5300, timeout=3.0)
    assert resolver.nameservers == ["127.0.0.1", "::1"]
    assert resolver.port == 5300
    assert resolver.lifetime == 3.0
    assert resolver.cache is None


async def test_mx_hosts_sorted_by_preference_then_name(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("contoso.test", "MX")] = [
        "20 backup.contoso.test.",
        "10 MX-B.contoso.test.",
        "10 mx-a.contoso.test.",
        "5 primary.contoso.test.",
    ]
    result = await resolve_mx("Contoso.Test.", resolver)
    assert result.domain == "contoso.test"
    assert result.hosts == (
        MxHost("primary.contoso.test", 5),
        MxHost("mx-a.contoso.test", 10),
        MxHost("mx-b.contoso.test", 10),
        MxHost("backup.contoso.test", 20),
    )
    assert (result.null_mx, result.implicit, result.error, result.transient) == (
        False,
        False,
        None,
        False,
    )


async def test_duplicate_mx_host_kept_once_at_lowest_preference(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("contoso.test", "MX")] = [
        "30 mx.contoso.test.",
        "10 MX.contoso.test.",
        "20 other.contoso.test.",
    ]
    result = await resolve_mx("contoso.test", resolver)
    assert result.hosts == (MxHost("mx.contoso.test", 10), MxHost("other.contoso.test", 20))


async def test_null_mx_reported_without_hosts(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("nomail.test", "MX")] = ["0 ."]
    result = await resolve_mx("nomail.test", resolver)
    assert result.null_mx
    assert result.hosts == ()
    assert not result.implicit
    assert result.error is None


async def test_null_mx_mixed_with_real_hosts_uses_the_real_hosts(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("mixed.test", "MX")] = ["0 .", "10 mx.mixed.test."]
    result = await resolve_mx("mixed.test", resolver)
    assert not result.null_mx
    assert result.hosts == (MxHost("mx.mixed.test", 10),)


async def test_no_mx_falls_back_to_the_domain_itself(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("plain.test", "A")] = ["192.0.2.7"]
    server.zone[("plain.test", "AAAA")] = ["2001:db8::7"]
    result = await resolve_mx("plain.test", resolver)
    assert result.implicit
    assert result.hosts == (MxHost("plain.test", None),)
    assert result.error is None
    addresses = await resolve_addresses(result.hosts[0].host, resolver)
    assert addresses.addresses == ("192.0.2.7", "2001:db8::7")


async def test_nxdomain_is_a_dns_error_not_worth_retrying(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("exists.test", "A")] = ["192.0.2.1"]
    result = await resolve_mx("missing.test", resolver)
    assert result.error is not None
    assert result.error.kind is Reason.DNS
    assert "NXDOMAIN" in result.error.message
    assert not result.transient
    assert result.hosts == ()
    assert not result.implicit


async def test_nxdomain_behaviour_even_when_records_exist(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("gone.test", "A")] = ["192.0.2.1"]
    server.behaviours["gone.test"] = NXDOMAIN
    result = await resolve_addresses("gone.test", resolver)
    assert result.error is not None
    assert "NXDOMAIN" in result.error.message
    assert not result.transient


async def test_servfail_is_transient(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.behaviours["broken.test"] = SERVFAIL
    mx = await resolve_mx("broken.test", resolver)
    assert mx.error is not None
    assert mx.error.kind is Reason.DNS
    assert "SERVFAIL" in mx.error.message
    assert mx.transient
    addresses = await resolve_addresses("broken.test", resolver)
    assert addresses.error is not None
    assert addresses.transient


async def test_timeout_is_transient_and_bounded(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.behaviours["silent.test"] = TIMEOUT
    started = time.monotonic()
    mx = await resolve_mx("silent.test", resolver)
    mx_seconds = time.monotonic() - started
    started = time.monotonic()
    # A and AAAA are asked concurrently, so both time out within one lifetime.
    addresses = await resolve_addresses("silent.test", resolver)
    addresses_seconds = time.monotonic() - started
    assert mx.error is not None
    assert mx.error.kind is Reason.DNS
    assert mx.transient
    assert addresses.error is not None
    assert addresses.transient
    assert mx_seconds < RESOLVER_TIMEOUT + 1.0
    assert addresses_seconds < RESOLVER_TIMEOUT + 1.0
    assert ("silent.test", "MX", "udp") in server.queries


async def test_every_a_and_aaaa_address_in_dns_order(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("mx.test", "AAAA")] = ["2001:db8::2", "2001:db8::1"]
    server.zone[("mx.test", "A")] = ["192.0.2.20", "192.0.2.10"]
    result = await resolve_addresses("mx.test", resolver)
    assert result.addresses == ("192.0.2.20", "192.0.2.10", "2001:db8::2", "2001:db8::1")
    assert result.error is None
    assert result.host == "mx.test"


async def test_which_one_prefers_the_lowest_ipv4_whatever_the_answer_order(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("dual.test", "A")] = ["192.0.2.6", "192.0.2.5"]
    server.zone[("dual.test", "AAAA")] = ["2001:db8::5"]
    server.zone[("v6only.test", "AAAA")] = ["2001:db8::9", "2001:db8::6"]
    dual = await resolve_addresses("dual.test", resolver, which="one")
    v6only = await resolve_addresses("v6only.test", resolver, which="one")
    assert dual.addresses == ("192.0.2.5",)
    assert v6only.addresses == ("2001:db8::6",)
    # A server rotating its answers must not move the `address` label between cycles.
    server.zone[("dual.test", "A")] = ["192.0.2.5", "192.0.2.6"]
    again = await resolve_addresses("dual.test", resolver, which="one")
    assert again.addresses == dual.addresses


async def test_which_rejects_unknown_values(resolver: dns.asyncresolver.Resolver) -> None:
    with pytest.raises(ValueError, match="which"):
        await resolve_addresses("mx.test", resolver, which="first")  # type: ignore[arg-type]


@pytest.mark.parametrize(("literal", "expected"), [("192.0.2.9", "192.0.2.9"), ("::1", "::1")])
async def test_ip_literal_needs_no_dns(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver, literal: str, expected: str
) -> None:
    result = await resolve_addresses(literal, resolver)
    assert result.addresses == (expected,)
    assert result.error is None
    assert server.queries == []


async def test_name_without_addresses_is_a_permanent_error(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("txtonly.test", "TXT")] = ['"hello"']
    result = await resolve_addresses("txtonly.test", resolver)
    assert result.addresses == ()
    assert result.error is not None
    assert result.error.kind is Reason.DNS
    assert not result.transient


async def test_one_family_failing_does_not_hide_the_other(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("half.test", "A")] = ["192.0.2.30"]
    server.zone[("half.test", "AAAA")] = ["2001:db8::30"]
    server.behaviours[("half.test", "AAAA")] = SERVFAIL
    server.zone[("slow.test", "AAAA")] = ["2001:db8::31"]
    server.behaviours[("slow.test", "A")] = TIMEOUT
    half = await resolve_addresses("half.test", resolver)
    slow = await resolve_addresses("slow.test", resolver)
    assert (half.addresses, half.error, half.transient) == (("192.0.2.30",), None, False)
    assert (slow.addresses, slow.error, slow.transient) == (("2001:db8::31",), None, False)


async def test_zone_changes_are_seen_on_the_next_call(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("contoso.test", "MX")] = ["10 mx1.contoso.test."]
    server.zone[("mx1.contoso.test", "A")] = ["192.0.2.1"]
    first_mx = await resolve_mx("contoso.test", resolver)
    first_addresses = await resolve_addresses("mx1.contoso.test", resolver)

    server.zone[("contoso.test", "MX")] = ["10 mx1.contoso.test.", "20 mx2.contoso.test."]
    server.zone[("mx1.contoso.test", "A")] = ["192.0.2.1", "192.0.2.2"]
    second_mx = await resolve_mx("contoso.test", resolver)
    second_addresses = await resolve_addresses("mx1.contoso.test", resolver)

    del server.zone[("contoso.test", "MX")]
    server.zone[("contoso.test", "A")] = ["192.0.2.3"]
    third_mx = await resolve_mx("contoso.test", resolver)

    assert [h.host for h in first_mx.hosts] == ["mx1.contoso.test"]
    assert [h.host for h in second_mx.hosts] == ["mx1.contoso.test", "mx2.contoso.test"]
    assert third_mx.implicit
    assert first_addresses.addresses == ("192.0.2.1",)
    assert second_addresses.addresses == ("192.0.2.1", "192.0.2.2")


async def test_cname_is_followed_to_the_address(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    server.zone[("smtp.contoso.test", "CNAME")] = ["relay.hosting.test."]
    server.zone[("relay.hosting.test", "A")] = ["192.0.2.44"]
    result = await resolve_addresses("smtp.contoso.test", resolver)
    assert result.addresses == ("192.0.2.44",)
    assert result.host == "smtp.contoso.test"


async def test_large_answer_falls_back_to_tcp(
    server: DnsTestServer, resolver: dns.asyncresolver.Resolver
) -> None:
    many = [f"192.0.2.{i}" for i in range(1, 121)]
    server.zone[("big.test", "A")] = many
    result = await resolve_addresses("big.test", resolver)
    assert result.addresses == tuple(many)
    assert ("big.test", "A", "tcp") in server.queries


async def test_invalid_name_is_an_error_not_an_exception(
    resolver: dns.asyncresolver.Resolver,
) -> None:
    result = await resolve_mx("a..b", resolver)
    assert result.error is not None
    assert result.error.kind is Reason.DNS
    assert not result.transient


async def test_unreachable_nameserver_is_transient() -> None:
    # Port 9 on loopback with nothing listening: ICMP port unreachable or silence, either way
    # no answer; the resolver must report it as data within its lifetime.
    resolver = make_resolver(["127.0.0.1"], port=9, timeout=RESOLVER_TIMEOUT)
    started = time.monotonic()
    result = await resolve_mx("contoso.test", resolver)
    assert time.monotonic() - started < RESOLVER_TIMEOUT + 1.0
    assert result.error is not None
    assert result.transient

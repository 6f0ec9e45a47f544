"""TLSA lookups against a loopback DNS server that answers like a non-validating forwarder:
CNAME chains come back in the answer, SERVFAIL comes without an extended error."""

from __future__ import annotations

from tests.support.dnsserver import SERVFAIL, DnsTestServer
from tlsprobe.model import DnssecStatus
from tlsprobe.probe.dns import dnssec, tlsalookup

OWNER = "_25._tcp.mx.loop.test"


async def test_a_cname_loop_in_the_answer_is_named_not_read_as_no_records() -> None:
    zone = {(OWNER, "CNAME"): ["a.loop.test."], ("a.loop.test", "CNAME"): [f"{OWNER}."]}
    with DnsTestServer(zone) as server:
        resolver = dnssec.make_validating_resolver(["127.0.0.1"], port=server.port)
        answer = await tlsalookup.lookup(resolver, OWNER, "mx.loop.test")
    assert answer is not None and answer.status is DnssecStatus.FAILED
    assert answer.detail == f"CNAME loop at {OWNER}: {OWNER} -> a.loop.test -> {OWNER}"


async def test_a_servfail_that_persists_with_checking_disabled_is_not_bogus() -> None:
    with DnsTestServer({}, {OWNER: SERVFAIL}) as server:
        resolver = dnssec.make_validating_resolver(["127.0.0.1"], port=server.port)
        answer = await tlsalookup.lookup(resolver, OWNER, "mx.loop.test")
        asked = [q for q in server.queries if q[0] == OWNER]
    assert answer is not None and answer.status is DnssecStatus.FAILED
    assert "also with checking disabled" in answer.detail
    assert (OWNER, "TLSA", "udp") in asked and (OWNER, "CNAME", "udp") in asked

"""TLSA lookups read from the wire: one UDP exchange per resolver, the answer section by hand.

dnspython rejects a whole message when one TLSA record's digest has the wrong length for its
matching type (its resolver then waits for a "valid" reply until it times out), but a sender
treats such a record as merely unusable (RFC 7671 section 5) and goes on with the others. So
TLSA questions go to the resolver here: the header (AD bit, rcode) and the extended DNS errors
come from dnspython's tolerant parse, the TLSA records from the wire with their data as
published, so `dane` can call the bad ones malformed and still judge the good ones. Each
configured resolver is tried in turn within the resolver's lifetime; every failure is data.
A truncated reply returns None: the caller then asks through dnspython (which retries on TCP).

A SERVFAIL without an extended error says nothing of why, so the question is asked again with
checking disabled (CD, RFC 4035 3.2.2): an answer then means validation failed (bogus); another
SERVFAIL means the name itself does not resolve (a failed lookup, not a DNSSEC verdict), and
the owner's CNAMEs are followed one by one to name a loop. A CNAME chain in an answer that
loops (a resolver that hands the chain back) is named the same way, never "no records".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.wire
from dns.rdtypes.ANY.TLSA import TLSA

from tlsprobe.model import DnssecStatus, Tlsa
from tlsprobe.probe.dns import dnssec
from tlsprobe.probe.dns.dane import TlsaAnswer

_MAX_DATAGRAM = 65535
MAX_CNAME_HOPS = 8
"""CNAMEs followed by hand to name a loop; a longer chain is reported as too long."""
_SHOWN_NAMES = 6


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # Only the answer to our question id counts (a stray datagram is ignored).
        ours = len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self.query_id
        if ours and not self.reply.done():
            self.reply.set_result(data[:_MAX_DATAGRAM])

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def lookup(resolver: dns.asyncresolver.Resolver, owner: str, base: str) -> TlsaAnswer | None:
    """The TLSA records at `owner`, as published, with the DNSSEC status of the answer."""
    query = _query(owner, "TLSA")
    failure = "no resolver configured"
    try:
        async with asyncio.timeout(resolver.lifetime):
            for address, port in _nameservers(resolver):
                try:
                    wire = await _exchange(query, address, port, resolver.timeout)
                except (TimeoutError, OSError) as exc:
                    failure = f"TLSA via {address}: {exc or 'timed out'}"
                    continue
                answer = _answer(owner, base, wire)
                if answer is not None and answer.detail == dnssec.PLAIN_SERVFAIL:
                    with contextlib.suppress(TimeoutError, OSError):  # then it stays bogus
                        answer = await _servfail_cause(answer, address, port, resolver.timeout)
                return answer
    except TimeoutError:
        failure = "TLSA lookup timed out"
    return TlsaAnswer(owner, DnssecStatus.FAILED, base=base, detail=failure)


def _query(name: str, rdtype: str, *, checking_disabled: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    query.flags |= dns.flags.AD | (dns.flags.CD if checking_disabled else 0)
    return query


async def _servfail_cause(
    answer: TlsaAnswer, address: str, port: int, timeout: float
) -> TlsaAnswer:
    """Bogus when the owner resolves with checking disabled; else a failed lookup, its CNAME
    loop named when there is one."""
    again = _query(answer.name, "TLSA", checking_disabled=True)
    reply = _message(await _exchange(again, address, port, timeout))
    if reply is not None and reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        detail = "SERVFAIL; it resolves with checking disabled: DNSSEC validation failed"
        return dataclasses.replace(answer, detail=detail)
    chain = [answer.name.lower()]
    for _ in range(MAX_CNAME_HOPS):
        ask = _query(chain[-1], "CNAME", checking_disabled=True)
        reply = _message(await _exchange(ask, address, port, timeout))
        target = _cname_of(reply, chain[-1]) if reply is not None else None
        if target is None:
            break
        chain.append(target)
        if target in chain[:-1]:
            return dataclasses.replace(answer, status=DnssecStatus.FAILED, detail=_loop(chain))
    if len(chain) > MAX_CNAME_HOPS:
        detail = f"CNAME chain longer than {MAX_CNAME_HOPS} names: {_shown(chain)}"
    else:
        detail = "SERVFAIL, also with checking disabled: the name does not resolve"
    return dataclasses.replace(answer, status=DnssecStatus.FAILED, detail=detail)


def _message(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire, continue_on_error=True)
    except (dns.exception.DNSException, ValueError, struct.error):
        return None


def _cname_of(message: dns.message.Message, name: str) -> str | None:
    for rrset in message.answer:
        if rrset.rdtype == dns.rdatatype.CNAME and _text(rrset.name) == name and len(rrset):
            return _text(rrset[0].target)
    return None


def _cname_loop(message: dns.message.Message, owner: str) -> str:
    """The loop the answer's CNAME chain makes from `owner`; empty when it makes none."""
    chain = [owner.lower()]
    while (target := _cname_of(message, chain[-1])) is not None:
        chain.append(target)
        if target in chain[:-1]:
            return _loop(chain)
    return ""


def _loop(chain: list[str]) -> str:
    return f"CNAME loop at {chain[0]}: {_shown(chain)}"


def _shown(chain: list[str]) -> str:
    names = chain if len(chain) <= _SHOWN_NAMES else [*chain[:_SHOWN_NAMES], "..."]
    return " -> ".join(n[:80] for n in names)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def _exchange(query: dns.message.Message, address: str, port: int, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Exchange(query.id), remote_addr=(address, port)
    )
    try:
        transport.sendto(query.to_wire())
        async with asyncio.timeout(timeout):
            return await protocol.reply
    finally:
        transport.close()


def _answer(owner: str, base: str, wire: bytes) -> TlsaAnswer | None:
    try:
        message = dns.message.from_wire(wire, continue_on_error=True)
        if message.flags & dns.flags.TC:
            return None
        flags, records = parse(wire)
    except (dns.exception.DNSException, ValueError, struct.error) as exc:
        return TlsaAnswer(owner, DnssecStatus.FAILED, base=base, detail=f"TLSA reply: {exc}")
    rcode = message.rcode()
    secure = DnssecStatus.SECURE if flags & dns.flags.AD else DnssecStatus.INSECURE
    loop = _cname_loop(message, owner) if rcode == dns.rcode.NOERROR and not records else ""
    if loop:
        return TlsaAnswer(owner, DnssecStatus.FAILED, base=base, detail=loop)
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return TlsaAnswer(owner, secure, records if rcode == dns.rcode.NOERROR else (), base=base)
    if rcode != dns.rcode.SERVFAIL:
        return TlsaAnswer(owner, DnssecStatus.FAILED, base=base, detail=dns.rcode.to_text(rcode))
    status = dnssec.servfail_status([message])
    return TlsaAnswer(owner, status, base=base, detail=dnssec.ede_text([message]))


async def lookup_tlsa(resolver: dns.asyncresolver.Resolver, host: str, port: int) -> TlsaAnswer:
    """TLSA for an MX host (RFC 7672 section 2.2.2).

    When the host's address is a secure CNAME, the TLSA base domain is the expanded name and
    is asked first; the original name is the fallback. CNAMEs at the TLSA owner itself are
    followed by the resolver.
    """
    address = await dnssec.lookup(resolver, host, "A")
    expanded = address.canonical
    bases = [host]
    if address.status is DnssecStatus.SECURE and expanded and expanded != host.lower():
        bases.insert(0, expanded)
    answer = TlsaAnswer(f"_{port}._tcp.{host}", DnssecStatus.FAILED, detail="not asked")
    for base in bases:
        answer = await _tlsa_at(resolver, base, port)
        if answer.records or answer.status in (DnssecStatus.BOGUS, DnssecStatus.FAILED):
            return answer
    return answer


async def _tlsa_at(resolver: dns.asyncresolver.Resolver, base: str, port: int) -> TlsaAnswer:
    owner = f"_{port}._tcp.{base}"
    raw = await lookup(resolver, owner, base.lower())
    if raw is not None:
        return raw
    found = await dnssec.lookup(resolver, owner, "TLSA")
    # Sorted: DNS gives no order, and reports and drift history must not churn with it.
    records = tuple(
        sorted(
            Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert))
            for r in found.rdatas
            if isinstance(r, TLSA)
        )
    )
    return TlsaAnswer(owner, found.status, records, base=base.lower(), detail=found.detail)


def parse(wire: bytes) -> tuple[int, tuple[Tlsa, ...]]:
    """The header flags and every TLSA record of the answer section, unvalidated."""
    parser = dns.wire.Parser(wire)
    _id, flags, qdcount, ancount, _ns, _ar = parser.get_struct("!HHHHHH")
    if flags & dns.flags.TC:
        raise ValueError("truncated reply")
    for _ in range(qdcount):
        dns.name.from_wire_parser(parser)
        parser.get_struct("!HH")
    records: list[Tlsa] = []
    for _ in range(ancount):
        dns.name.from_wire_parser(parser)
        rdtype, _class, _ttl, rdlen = parser.get_struct("!HHIH")
        rdata = parser.get_bytes(rdlen)
        if rdtype == dns.rdatatype.TLSA and rdlen >= 3:
            records.append(Tlsa(rdata[0], rdata[1], rdata[2], bytes(rdata[3:])))
    return flags, tuple(sorted(records))


def _nameservers(resolver: dns.asyncresolver.Resolver) -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    for server in resolver.nameservers:
        if isinstance(server, str):
            servers.append((server, resolver.port))
        elif hasattr(server, "address") and hasattr(server, "port"):
            servers.append((str(server.address), int(server.port)))
    return servers

"""DNS lookups that carry their DNSSEC status, as a validating resolver reports it.

Like Postfix with `smtp_dns_support_level = dnssec`, tlsprobe validates nothing itself: it asks
a validating resolver (the configured one, else the system's) with the AD bit set (RFC 6840
section 5.7) and believes the answer. AD set: `secure`. No AD: `insecure`. SERVFAIL: `bogus`,
with the extended DNS error (RFC 8914) when the resolver gives one, unless that error says the
resolver simply could not reach the zone's servers (then `failed`, like a timeout). Every
lookup returns data, never raises, and is bounded by the resolver's lifetime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.TXT import TXT

from tlsprobe.model import DnssecStatus
from tlsprobe.probe.dns.discover import make_resolver

MAX_TXT_CHARS = 4096
"""A TXT record is joined from its strings and cut here: policies are short."""
PLAIN_SERVFAIL = "SERVFAIL"
"""The detail of a SERVFAIL that carried no extended DNS error."""
_UNREACHABLE_EDE = frozenset({22, 23})
"""EDE 22 No Reachable Authority, 23 Network Error: a failure, not a validation verdict."""


def make_validating_resolver(
    nameservers: Sequence[str] = (), *, port: int = 53, timeout: float = 5.0
) -> dns.asyncresolver.Resolver:
    """`discover.make_resolver`, asking for the AD bit; EDNS stays on so EDE can come back."""
    resolver = make_resolver(nameservers, port=port, timeout=timeout)
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: str
    status: DnssecStatus
    rdatas: tuple[dns.rdata.Rdata, ...] = ()
    canonical: str = ""
    """The name after CNAME expansion (the asked name when there was none)."""
    detail: str = ""
    nxdomain: bool = False


async def lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> DnsAnswer:
    """The records of `name` (CNAMEs followed by the resolver) with their DNSSEC status."""
    try:
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError) as exc:
        return DnsAnswer(name, DnssecStatus.FAILED, detail=f"invalid name: {exc}")
    try:
        answer = await resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as exc:
        responses = list((exc.kwargs.get("responses") or {}).values())
        status = _status(responses[-1]) if responses else DnssecStatus.INSECURE
        return DnsAnswer(name, status, detail="NXDOMAIN", nxdomain=True)
    except dns.resolver.NoNameservers as exc:
        return _servfail(name, rdtype, exc)
    except dns.exception.Timeout:
        return DnsAnswer(name, DnssecStatus.FAILED, detail=f"{rdtype} lookup timed out")
    except (dns.exception.DNSException, OSError) as exc:
        return DnsAnswer(name, DnssecStatus.FAILED, detail=f"{rdtype}: {exc}")
    records = tuple(answer.rrset) if answer.rrset is not None else ()
    canonical = _text(answer.canonical_name)
    return DnsAnswer(name, _status(answer.response), records, canonical)


def _status(response: dns.message.Message) -> DnssecStatus:
    return DnssecStatus.SECURE if response.flags & dns.flags.AD else DnssecStatus.INSECURE


def _servfail(name: str, rdtype: str, exc: dns.resolver.NoNameservers) -> DnsAnswer:
    """SERVFAIL from a validating resolver is bogus; say why when the resolver says (EDE)."""
    errors = exc.kwargs.get("errors") or []
    responses = [e[4] for e in errors if len(e) > 4 and isinstance(e[4], dns.message.Message)]
    servfails = [r for r in responses if r.rcode() == dns.rcode.SERVFAIL]
    if not servfails:
        return DnsAnswer(name, DnssecStatus.FAILED, detail=f"{rdtype}: {str(exc)[:300]}")
    return DnsAnswer(name, servfail_status(servfails), detail=ede_text(servfails))


def servfail_status(responses: Sequence[dns.message.Message]) -> DnssecStatus:
    """Bogus, unless every extended error says the zone's servers were unreachable."""
    codes = [int(o.code) for r in responses for o in r.extended_errors()]
    if codes and all(code in _UNREACHABLE_EDE for code in codes):
        return DnssecStatus.FAILED
    return DnssecStatus.BOGUS


def ede_text(responses: Sequence[dns.message.Message]) -> str:
    """The extended DNS errors (RFC 8914) of SERVFAIL replies, bounded; else "SERVFAIL"."""
    ede = [o for r in responses for o in r.extended_errors()]
    return "; ".join(o.to_text()[:200] for o in ede[:3]) or PLAIN_SERVFAIL


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def lookup_txt(
    resolver: dns.asyncresolver.Resolver, name: str
) -> tuple[DnsAnswer, list[str]]:
    """TXT records, each joined from its strings (RFC 7208 style) and bounded in length."""
    found = await lookup(resolver, name, "TXT")
    texts = [
        b"".join(r.strings).decode("utf-8", "replace")[:MAX_TXT_CHARS]
        for r in found.rdatas
        if isinstance(r, TXT)
    ]
    return found, texts

"""An endpoint probe with its DNS policies: DANE per endpoint, MTA-STS per policy domain.

`probe_with_policies` runs the ordinary probe and the TLSA lookup side by side, then adds the
`dane` and `mta_sts` checks to the result (each absent when the host or domain publishes no
policy: not applicable). `domain_policy` learns one policy domain's MTA-STS state (TXT id,
policy fetched with full verification, TLS-RPT destinations); callers fetch it once per domain
and cycle and hand it to every endpoint of that domain. Nothing here raises for what DNS or a
policy server does: failures become findings. One deadline covers a probe and its policies:
`lookup_dane` (TLSA and MX side by side) and `domain_policy` (TXT lookups, policy host, fetch)
each end by the probe's timeout, run beside the probe, and past it say so in the finding.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import datetime

import dns.asyncresolver

from tlsprobe.model import DnssecStatus, Endpoint, Policy, ProbeResult, overall_status
from tlsprobe.probe.dns import dane, dnssec, mtasts, tlsalookup
from tlsprobe.probe.dns.mtasts_fetch import FetchSettings, fetch_policy
from tlsprobe.probe.prober import Clock, probe_endpoint, utcnow
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore


@dataclass(frozen=True, slots=True)
class DaneContext:
    """What a DANE judgement needs besides the endpoint."""

    resolver: dns.asyncresolver.Resolver
    next_hop: str | None = None
    """The mail domain whose MX named the host (a reference identifier for DANE-TA)."""
    mx_status: DnssecStatus | None = None
    """DNSSEC status of that MX lookup; None when the host was configured directly."""


async def mx_status(resolver: dns.asyncresolver.Resolver, domain: str) -> DnssecStatus:
    """The DNSSEC status of `domain`'s MX RRset (or of its denial)."""
    return (await dnssec.lookup(resolver, domain, "MX")).status


def past_deadline(what: str, timeout: float) -> str:
    return f"{what} did not finish within the probe's {timeout:g} s deadline"


async def lookup_dane(
    resolver: dns.asyncresolver.Resolver,
    host: str,
    port: int,
    next_hop: str | None,
    *,
    timeout: float,
) -> tuple[dane.TlsaAnswer, DaneContext]:
    """The TLSA answer for `host:port` and the DNSSEC status of the MX lookup of `next_hop`
    (when given), side by side and together within `timeout`: past it, the answer is a failed
    lookup that says so."""
    try:
        async with asyncio.timeout(timeout):
            answer, status = await asyncio.gather(
                tlsalookup.lookup_tlsa(resolver, host, port),
                mx_status(resolver, next_hop) if next_hop else nothing(),
            )
    except TimeoutError:
        owner = f"_{port}._tcp.{host.lower().rstrip('.')}"
        failed = dane.TlsaAnswer(
            owner, DnssecStatus.FAILED, detail=past_deadline("TLSA lookup", timeout)
        )
        return failed, DaneContext(resolver, next_hop, None)
    return answer, DaneContext(resolver, next_hop, status)


async def probe_with_policies(
    endpoint: Endpoint,
    policy: Policy,
    trust: TrustStore,
    *,
    timeout: float = 30.0,
    now: Clock | None = None,
    dane_context: DaneContext | None = None,
    sts: mtasts.DomainPolicy | None = None,
) -> ProbeResult:
    """`probe_endpoint`, plus `dane` (when a context is given) and `mta_sts` (when `sts` is)."""
    clock = now or utcnow
    if dane_context is None:
        result = await probe_endpoint(endpoint, policy, trust, timeout=timeout, now=clock)
        return add_mta_sts(result, sts)
    result, (answer, _) = await asyncio.gather(
        probe_endpoint(endpoint, policy, trust, timeout=timeout, now=clock),
        lookup_dane(dane_context.resolver, endpoint.host, endpoint.port, None, timeout=timeout),
    )
    return add_mta_sts(add_dane(result, answer, dane_context, clock()), sts)


def add_dane(
    result: ProbeResult, answer: dane.TlsaAnswer, context: DaneContext, now: datetime
) -> ProbeResult:
    """The result with the `dane` check and findings (only when a chain was captured)."""
    if not result.chain:
        return result
    try:
        check, findings = dane.judge(
            answer,
            [c.der for c in result.chain],
            host=result.endpoint.host.lower().rstrip("."),
            next_hop=context.next_hop,
            mx_status=context.mx_status,
            now=now,
        )
    except certs.CertificateParseError:
        return result  # the probe already reported an unparseable chain as a protocol error
    checks = result.checks if check is None else (*result.checks, check)
    return dataclasses.replace(result, checks=checks, status=overall_status(checks), dane=findings)


def add_mta_sts(result: ProbeResult, sts: mtasts.DomainPolicy | None) -> ProbeResult:
    if sts is None or not result.chain:
        return result
    check = mtasts.check_endpoint(sts, result.endpoint.host, result.checks)
    if check is None:
        return result
    checks = (*result.checks, check)
    return dataclasses.replace(result, checks=checks, status=overall_status(checks))


async def domain_policy(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    fetch: FetchSettings,
    *,
    timeout: float,
) -> mtasts.DomainPolicy:
    """One policy domain's MTA-STS state: the TXT id, the policy, and TLS-RPT destinations,
    all of it (TXT lookups, policy host lookup, fetch) within `timeout`."""
    domain = domain.lower().rstrip(".")
    try:
        async with asyncio.timeout(timeout):
            return await _domain_policy(domain, resolver, fetch, timeout=timeout)
    except TimeoutError:
        return mtasts.DomainPolicy(
            domain, None, None, past_deadline("MTA-STS TXT lookup and policy fetch", timeout)
        )


async def _domain_policy(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    fetch: FetchSettings,
    *,
    timeout: float,
) -> mtasts.DomainPolicy:
    (found, texts), (_, rpt) = await asyncio.gather(
        dnssec.lookup_txt(resolver, f"_mta-sts.{domain}"),
        dnssec.lookup_txt(resolver, f"_smtp._tls.{domain}"),
    )
    rua = mtasts.parse_tlsrpt(rpt)
    if found.status in (DnssecStatus.BOGUS, DnssecStatus.FAILED):
        return mtasts.DomainPolicy(domain, None, None, f"TXT lookup: {found.detail}", rua)
    try:
        policy_id = mtasts.parse_txt(texts)
    except mtasts.PolicyError as exc:
        return mtasts.DomainPolicy(domain, None, None, f"TXT record: {exc}", rua)
    if policy_id is None:
        return mtasts.DomainPolicy(domain, None, None, "", rua)
    fetched = await fetch_policy(domain, fetch, resolver, timeout=timeout)
    if fetched.body is None:
        return mtasts.DomainPolicy(domain, policy_id, None, fetched.error, rua)
    try:
        policy = mtasts.parse_policy(fetched.body)
    except mtasts.PolicyError as exc:
        return mtasts.DomainPolicy(domain, policy_id, None, f"policy: {exc}", rua)
    return mtasts.DomainPolicy(domain, policy_id, policy, "", rua)


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """Which DNS policies to judge for one endpoint, and how to reach DNS and policy servers."""

    dane: bool = False
    sts_domain: str | None = None
    """The MTA-STS policy domain (also the next-hop domain DANE-TA names may carry)."""
    nameservers: tuple[str, ...] = ()
    """Validating resolvers; empty means the system's."""
    dns_port: int = 53
    fetch: FetchSettings = dataclasses.field(default_factory=FetchSettings)


async def check_once(
    endpoint: Endpoint,
    policy: Policy,
    trust: TrustStore,
    request: PolicyRequest,
    *,
    timeout: float,
) -> tuple[ProbeResult, mtasts.DomainPolicy | None]:
    """One probe with the requested DNS policies: the probe, the TLSA and MX lookups and the
    policy fetch run side by side, all within the one `timeout`. Raises
    `dns.resolver.NoResolverConfiguration` when no resolver is given and the system has none
    (a setup error)."""
    resolver = dnssec.make_validating_resolver(
        request.nameservers, port=request.dns_port, timeout=min(timeout, 10.0)
    )
    domain = request.sts_domain
    result, found, sts = await asyncio.gather(
        probe_endpoint(endpoint, policy, trust, timeout=timeout),
        lookup_dane(resolver, endpoint.host, endpoint.port, domain, timeout=timeout)
        if request.dane
        else nothing(),
        domain_policy(domain, resolver, request.fetch, timeout=timeout) if domain else nothing(),
    )
    if found is not None:
        answer, context = found
        result = add_dane(result, answer, context, utcnow())
    return add_mta_sts(result, sts), sts


async def nothing() -> None:
    """A lookup that is not asked for, as one more awaitable beside the others."""

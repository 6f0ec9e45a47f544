"""`tlsprobe check --dane / --mta-sts DOMAIN`: the DNS policy arguments and their wiring.

The DNS machinery (dnspython's resolver, the MTA-STS fetch) is imported only when one of the two
options asks for it: a plain check resolves its host with getaddrinfo and needs none of it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tlsprobe.cli.options import UsageError

if TYPE_CHECKING:
    from tlsprobe.model import Endpoint, Policy, ProbeResult
    from tlsprobe.probe.dns import mtasts
    from tlsprobe.probe.policies import PolicyRequest
    from tlsprobe.probe.x509.evaluate import TrustStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dane",
        action="store_true",
        help="judge the host's TLSA records (RFC 7672) against the chain served",
    )
    p.add_argument(
        "--mta-sts",
        metavar="DOMAIN",
        help="judge the endpoint against DOMAIN's MTA-STS policy (RFC 8461)",
    )
    p.add_argument(
        "--resolver",
        metavar="IP[:PORT]",
        help="validating resolver to trust for the AD bit, also used to resolve the MTA-STS "
        "policy host (default: the system's)",
    )


def request(args: argparse.Namespace) -> PolicyRequest | None:
    """The DNS policies asked for; None when neither --dane nor --mta-sts was given."""
    if not args.dane and not args.mta_sts:
        return None
    from tlsprobe.probe.dns.mtasts_fetch import FetchSettings
    from tlsprobe.probe.policies import PolicyRequest

    nameservers: tuple[str, ...] = ()
    port = 53
    if args.resolver:
        host, given = _host_port(args.resolver, "--resolver")
        nameservers, port = (host,), given or 53
    domain = args.mta_sts.strip().lower().rstrip(".") if args.mta_sts else None
    if domain is not None and not domain:
        raise UsageError("--mta-sts needs a domain")
    # The policy host is resolved through the same resolver as the TLSA and TXT records.
    fetch = FetchSettings(ca_file=args.ca_file)
    return PolicyRequest(args.dane, domain, nameservers, port, fetch)


def _host_port(value: str, option: str) -> tuple[str, int | None]:
    from tlsprobe.model import HostPortError, parse_host_port

    try:
        return parse_host_port(value)
    except HostPortError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def run(
    endpoint: Endpoint,
    policy: Policy,
    trust: TrustStore,
    policies: PolicyRequest,
    timeout: float,
) -> tuple[ProbeResult, mtasts.DomainPolicy | None]:
    import asyncio

    import dns.resolver

    from tlsprobe.probe.policies import check_once

    try:
        return asyncio.run(check_once(endpoint, policy, trust, policies, timeout=timeout))
    except dns.resolver.NoResolverConfiguration as exc:
        raise UsageError("no system resolver configured: pass --resolver") from exc

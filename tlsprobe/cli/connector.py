"""The connector policy options that `check` and `listen` share, and the values they build.

`--ca-file`, `--certificate-domain`, `--accepted-domain`, `--expect` and the day thresholds mean
the same in both commands, so both add them here and build their `Policy` and trust store here.
"""

from __future__ import annotations

import argparse

from tlsprobe.cli import options
from tlsprobe.cli.options import UsageError
from tlsprobe.model import Policy
from tlsprobe.probe.x509 import o365
from tlsprobe.probe.x509.evaluate import TrustStore, TrustStoreError


def build_policy(args: argparse.Namespace) -> tuple[Policy, TrustStore]:
    """The connector policy and trust store of `check` and `listen` (same options)."""
    # Each number's own range is checked by its argparse type (tlsprobe.cli.options).
    if args.warn_days < args.crit_days:
        raise UsageError("--crit-days must be no greater than --warn-days")
    if args.certificate_domain:
        try:
            o365.ConnectorPattern.parse(args.certificate_domain)
        except o365.ConnectorPatternError as exc:
            raise UsageError(f"--certificate-domain: {exc}") from exc
    try:
        trust = TrustStore.from_pem_file(args.ca_file) if args.ca_file else TrustStore.system()
    except TrustStoreError as exc:
        raise UsageError(f"--ca-file: {exc}") from exc
    policy = Policy(
        certificate_domain=args.certificate_domain,
        accepted_domains=tuple(args.accepted_domain),
        warn_days=args.warn_days,
        crit_days=args.crit_days,
        expected=tuple(args.expect),
    )
    return policy, trust


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    """Trust store and connector policy options, shared by `check` and `listen`."""
    p.add_argument("--ca-file", help="PEM trust store (default: the system store)")
    p.add_argument(
        "--certificate-domain",
        help="the connector's TlsSenderCertificateName: a name or *.domain",
    )
    p.add_argument(
        "--accepted-domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="an accepted domain of the tenant (repeatable)",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="PIN",
        help="pinned certificate: SHA-256 fingerprint or <I>issuer<S>subject",
    )
    p.add_argument("--warn-days", type=options.days, default=21.0, help="default 21")
    p.add_argument("--crit-days", type=options.days, default=7.0, help="default 7")

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
    fixed = args.warn_days is not None or args.crit_days is not None
    warn = 21.0 if args.warn_days is None else args.warn_days
    crit = 7.0 if args.crit_days is None else args.crit_days
    if warn < crit:
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
        warn_days=warn,
        crit_days=crit,
        fixed_expiry_days=fixed,
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
    p.add_argument(
        "--warn-days",
        type=options.days,
        help="fixed warning threshold (default: follows the certificate's lifetime, at most 21"
        " days for one over 200 days)",
    )
    p.add_argument(
        "--crit-days",
        type=options.days,
        help="fixed critical threshold (default 7, or a sixth of a shorter lifetime)",
    )

"""Command line: argparse subcommands that build values and call into the package. No logic.

Usage errors print one line and exit 3 (UNKNOWN, the Nagios convention for a check that could
not run); configuration errors from `serve` and `validate-config` exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from tlsprobe import __version__
from tlsprobe.cli import options
from tlsprobe.cli.connector import add_policy_arguments, build_policy
from tlsprobe.cli.options import UsageError
from tlsprobe.model import (
    Endpoint,
    HostPortError,
    Mode,
    Policy,
    Status,
    is_ip_literal,
    parse_host_port,
)
from tlsprobe.probe import names
from tlsprobe.probe.transport.starttls import default_ehlo_name
from tlsprobe.probe.x509.evaluate import TrustStore

EXIT_USAGE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_check(args: argparse.Namespace) -> tuple[Endpoint, Policy, TrustStore]:
    try:
        host, port = parse_host_port(args.target)
    except HostPortError as exc:
        raise UsageError(str(exc)) from exc
    port = port or 25
    mode = Mode(args.mode) if args.mode else Mode.for_port(port)
    if args.address is not None and not is_ip_literal(args.address):
        raise UsageError(f"--address {args.address!r} is not an IP address")
    sni = None if args.no_sni or is_ip_literal(host) else (args.sni or host)
    policy, trust = build_policy(args)
    relay = bool(policy.certificate_domain or policy.accepted_domains)
    required = args.hostname_check == "required" or (args.hostname_check == "auto" and not relay)
    policy = dataclasses.replace(policy, hostname_required=required)
    try:
        ehlo = names.ehlo_name(args.ehlo_name or default_ehlo_name())
    except names.EhloNameError as exc:
        raise UsageError(f"--ehlo-name: {exc}") from exc
    endpoint = Endpoint(
        host=host, port=port, mode=mode, address=args.address, sni=sni, ehlo_name=ehlo
    )
    return endpoint, policy, trust


def cmd_check(args: argparse.Namespace) -> int:
    from tlsprobe import policyreport, report
    from tlsprobe.cli import policyargs
    from tlsprobe.probe.prober import probe_endpoint, utcnow

    endpoint, policy, trust = build_check(args)
    request = policyargs.request(args)
    sts = None
    if request is None:
        result = asyncio.run(probe_endpoint(endpoint, policy, trust, timeout=args.timeout))
    else:
        result, sts = policyargs.run(endpoint, policy, trust, request, args.timeout)
    if args.json:
        data = report.to_json(result)
        if sts is not None:
            data["mta_sts"] = policyreport.sts_json(sts)
        print(json.dumps(data, indent=2))
    else:
        text = report.human(result, utcnow())
        if sts is not None:
            text += "\n" + "\n".join(policyreport.sts_lines(sts))
        if args.verbose and result.transcript:
            text += "\nSMTP transcript\n" + "\n".join(f"  {t}" for t in result.transcript) + "\n"
        sys.stdout.write(text)
    return int(result.status)


def _add_check(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "check",
        help="probe one SMTP endpoint once (Nagios-style exit code)",
        description="Probe one SMTP endpoint and judge its certificate as Exchange Online would. "
        "Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown.",
    )
    p.add_argument("target", metavar="HOST[:PORT]", help="host to check; port defaults to 25")
    p.add_argument("--address", help="connect to this IP instead of resolving HOST")
    p.add_argument("--mode", choices=[m.value for m in Mode], help="default: implicit on 465")
    sni = p.add_mutually_exclusive_group()
    sni.add_argument("--sni", help="server name to send (default: HOST)")
    sni.add_argument("--no-sni", action="store_true", help="send no server name")
    add_policy_arguments(p)
    p.add_argument(
        "--hostname-check",
        choices=["auto", "required", "informational"],
        default="auto",
        help="weight of the RFC 9525 host name check; auto: informational for a relay (a "
        "connector domain or accepted domain given), else required",
    )
    p.add_argument("--ehlo-name", help="name sent in EHLO (default: this machine's FQDN)")
    p.add_argument(
        "--timeout",
        type=options.timeout_seconds,
        default=30.0,
        help=f"overall deadline in seconds (default 30, at most {options.MAX_TIMEOUT:g})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the SMTP transcript")
    from tlsprobe.cli import policyargs

    policyargs.add_arguments(p)
    p.set_defaults(func=cmd_check)


def make_parser() -> _Parser:
    parser = _Parser(
        prog="tlsprobe",
        description="Watch the TLS certificates of SMTP servers relaying through Exchange Online.",
    )
    parser.add_argument("--version", action="version", version=f"tlsprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_check(sub)
    from tlsprobe.cli import commands

    commands.register(sub)
    from tlsprobe.cli import listen

    listen.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"tlsprobe {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return int(Status.UNKNOWN)
    return code


if __name__ == "__main__":
    sys.exit(main())

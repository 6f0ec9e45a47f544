"""Command line: argparse subcommands that build values and call into the package. No logic.

Usage errors print one line and exit 3 (UNKNOWN, the Nagios convention for a check that could
not run); configuration errors from `serve` and `validate-config` exit 2.

Start-up is part of the cost of a check: Nagios, Icinga and Checkmk start `tlsprobe check` once
per service and interval. So a run builds the options of the one subcommand it names, and each
subcommand imports what it uses when it runs: `check` loads neither the exporter's configuration
(YAML) nor aiohttp nor dnspython's resolver unless `--dane` or `--mta-sts` asks for DNS
(tests/integration/test_cli_imports.py holds it to that).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, NoReturn

from tlsprobe.cli import options
from tlsprobe.cli.options import UsageError

if TYPE_CHECKING:
    from tlsprobe.model import Endpoint, Policy
    from tlsprobe.probe.x509.evaluate import TrustStore

EXIT_USAGE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_check(args: argparse.Namespace) -> tuple[Endpoint, Policy, TrustStore]:
    import dataclasses

    from tlsprobe.cli.connector import build_policy
    from tlsprobe.model import Endpoint, HostPortError, Mode, is_ip_literal, parse_host_port
    from tlsprobe.probe import names
    from tlsprobe.probe.transport.starttls import default_ehlo_name

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
    import asyncio
    import json

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
        text = report.human(result, utcnow(), policy=policy, timeout=args.timeout)
        if sts is not None:
            text += "\n" + "\n".join(policyreport.sts_lines(sts))
        if args.verbose and result.transcript:
            text += "\nSMTP transcript\n" + "\n".join(f"  {t}" for t in result.transcript) + "\n"
        sys.stdout.write(text)
    return int(result.status)


def add_check(p: argparse.ArgumentParser) -> None:
    from tlsprobe.cli import policyargs
    from tlsprobe.cli.connector import add_policy_arguments
    from tlsprobe.model import Mode

    p.description = (
        "Probe one SMTP endpoint and judge its certificate as Exchange Online would. "
        "Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown."
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
    policyargs.add_arguments(p)
    p.set_defaults(func=cmd_check)


_COMMANDS: dict[str, tuple[str, str]] = {
    # name: (the line in `tlsprobe --help`, "module:function" that adds its options)
    "check": (
        "probe one SMTP endpoint once (Nagios-style exit code)",
        "tlsprobe.cli.main:add_check",
    ),
    "serve": ("run the exporter", "tlsprobe.cli.commands:add_serve"),
    "demo": (
        "self-contained demo: loopback endpoints and the exporter",
        "tlsprobe.cli.commands:add_demo",
    ),
    "validate-config": (
        "check a configuration file and exit",
        "tlsprobe.cli.commands:add_validate",
    ),
    "import-exo": (
        "import a tenant's Exchange Online exports; compare them with the configuration",
        "tlsprobe.cli.commands:add_import_exo",
    ),
    "history": ("print the certificate timeline of a host", "tlsprobe.cli.commands:add_history"),
    "forecast": (
        "list what fails now or within N days, sorted by date",
        "tlsprobe.cli.commands:add_forecast",
    ),
    "rules": ("print the Prometheus alerting rules", "tlsprobe.cli.commands:add_rules"),
    "listen": (
        "wait for one inbound SMTP session and judge the client certificate",
        "tlsprobe.cli.listen:register",
    ),
}


class _Version(argparse._VersionAction):
    """`--version`, reading the distribution's metadata only when asked."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from tlsprobe import __version__

        self.version = f"tlsprobe {__version__}"
        super().__call__(parser, namespace, values, option_string)


def _named(argv: Sequence[str]) -> str | None:
    """The subcommand argv names: its first word that is not an option (the top level's options
    take no value); None when --help or -- comes first (left to the whole parser)."""
    for arg in argv:
        if arg in ("-h", "--help", "--"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def make_parser(argv: Sequence[str] | None = None) -> _Parser:
    """The whole parser; given `argv` that names a subcommand, one with only that subcommand (its
    options added by its own module, imported then), which parses that argv alike: with a
    command named, no message of the top level shows the list of commands (--help and -- before
    the command get the whole parser)."""
    parser = _Parser(
        prog="tlsprobe",
        description="Watch the TLS certificates of SMTP servers relaying through Exchange Online.",
    )
    parser.add_argument("--version", action=_Version, version="tlsprobe")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    wanted = None if argv is None else _named(argv)
    for name, (summary, where) in _COMMANDS.items():
        if wanted in _COMMANDS and name != wanted:
            continue
        p = sub.add_parser(name, help=summary)
        if argv is None or name == wanted:
            module, _, function = where.partition(":")
            add: Callable[[argparse.ArgumentParser], None] = getattr(
                import_module(module), function
            )
            add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser(argv)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"tlsprobe {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        from tlsprobe.model import Status

        return int(Status.UNKNOWN)
    return code


if __name__ == "__main__":
    sys.exit(main())

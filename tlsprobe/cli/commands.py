"""The exporter's subcommands: serve, demo, validate-config, history, rules. Argument wiring only.

Each `add_*` gives one subcommand its options (tlsprobe.cli.main calls only the one a run names);
each command imports what it uses when it runs: `history --state-dir` reads the state without
loading the configuration package (YAML and its schema).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsprobe.exporter.config import ConfigError


def _shard(value: str) -> tuple[int, int]:
    index, sep, count = value.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/3")
    return i, n


def _problem(file: str, error: ConfigError) -> str:
    """One line naming the file and the key: `tlsprobe.yml: tenants.x.targets[0].port: ...`."""
    # Whole-file errors (path "") already name the file; key errors name only the key.
    return f"{file}: {error}" if error.path else str(error)


def cmd_serve(args: argparse.Namespace) -> int:
    from tlsprobe.exporter import eventloop
    from tlsprobe.exporter.app import serve
    from tlsprobe.exporter.config import ConfigError, load_config
    from tlsprobe.exporter.logfmt import setup_logging

    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        more = len(exc.problems) - 1
        hint = f" (and {more} more: tlsprobe validate-config {args.config})" if more else ""
        print(f"tlsprobe serve: {_problem(args.config, exc)}{hint}", file=sys.stderr)
        return 2
    if args.shard:
        config = config.shard(*args.shard)
    return eventloop.run(serve(config, Path(args.config), args.shard))


def cmd_validate(args: argparse.Namespace) -> int:
    from tlsprobe.exporter.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems or (exc,):
            print(_problem(args.config, problem), file=sys.stderr)
        return 2
    if config.web.config_file is not None:
        from tlsprobe.exporter.config.web import WebConfigError, load_web_config

        try:
            load_web_config(config.web.config_file)
        except WebConfigError as exc:
            print(f"{args.config}: web.config_file: {exc}", file=sys.stderr)
            return 2
    tenants = len(config.tenants)
    print(f"{args.config}: OK ({len(config.targets)} targets in {tenants} tenants)")
    if not args.exo:
        return 0
    tenant = args.tenant or (config.tenants[0].name if tenants == 1 else None)
    if tenant is None:
        print(
            f"{args.config}: --exo needs --tenant (the file has {tenants} tenants)", file=sys.stderr
        )
        return 2
    from tlsprobe.cli.exo import drift

    return drift(Path(args.config), tenant, args.exo)


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from tlsprobe.demo.run import run_demo
    from tlsprobe.exporter.logfmt import setup_logging

    setup_logging(args.log_level)
    state = Path(args.state_dir) if args.state_dir else None
    return asyncio.run(run_demo(args.listen, state, args.interval))


def cmd_history(args: argparse.Namespace) -> int:
    from tlsprobe.cli.history import history_command

    state_dir = Path(args.state_dir) if args.state_dir else None
    if state_dir is None:
        from tlsprobe.exporter.config import ConfigError, load_config

        try:
            state_dir = load_config(args.config).state_dir
        except ConfigError as exc:
            print(f"tlsprobe history: {_problem(args.config, exc)}", file=sys.stderr)
            return 2
    code = history_command(state_dir, args.host)
    return _policy_history(state_dir, args.host, code)


def _policy_history(state_dir: Path, host: str, code: int) -> int:
    """TLSA and MTA-STS changes after the certificate timeline; 0 when either had something."""
    import sqlite3

    from tlsprobe.exporter.history import policies as policyhistory

    try:
        changes = policyhistory.changes_for(state_dir / policyhistory.POLICY_HISTORY_FILE, host)
    except sqlite3.Error as exc:
        print(f"tlsprobe history: policy history: {exc}", file=sys.stderr)
        return code
    if not changes:
        return code
    print(policyhistory.format_changes(changes))
    return 0


def cmd_import_exo(args: argparse.Namespace) -> int:
    from tlsprobe.cli.exo import import_exo

    return import_exo(args)


def cmd_forecast(args: argparse.Namespace) -> int:
    from tlsprobe.cli.forecast import forecast_command

    return forecast_command(args)


def _forecast_days(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 3650:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 0 to 3650 days")
    return number


def cmd_rules(args: argparse.Namespace) -> int:
    from tlsprobe.alerting import generate

    render = generate.render_kubernetes if args.format == "kubernetes" else generate.render
    try:
        text = render(args.runbook_base)
    except ValueError as exc:
        print(f"tlsprobe rules: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


_LOG_LEVELS = ["debug", "info", "warning", "error"]


def add_serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", required=True, metavar="FILE")
    serve.add_argument("--shard", type=_shard, metavar="I/N", help="own only shard I of N")
    serve.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    serve.set_defaults(func=cmd_serve)


def add_demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--listen", default="127.0.0.1:9825", metavar="ADDR:PORT")
    demo.add_argument("--interval", default="30s", help="probe interval (default 30s)")
    demo.add_argument("--state-dir", help="keep history here (default: a temporary directory)")
    demo.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    demo.set_defaults(func=cmd_demo)


def add_validate(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("config", metavar="FILE")
    validate.add_argument(
        "--exo",
        nargs="+",
        metavar="EXPORT",
        help="also compare a tenant with its Exchange Online exports (as import-exo does): "
        "exit 1 when the configuration drifted",
    )
    validate.add_argument("--tenant", help="the tenant --exo compares (default: the only one)")
    validate.set_defaults(func=cmd_validate)


def add_import_exo(exo: argparse.ArgumentParser) -> None:
    exo.description = (
        "Read Get-AcceptedDomain, Get-InboundConnector and Get-OutboundConnector "
        "exports (JSON or CSV) or a Microsoft365DSC configuration, print the tenant file they "
        "imply and its differences from the configuration. Exit 0: no differences, 1: the "
        "configuration drifted from the tenant, 2: an export or the configuration is unusable. "
        "--write writes the tenant file (never the main configuration file)."
    )
    exo.add_argument("exports", nargs="+", metavar="EXPORT", help="export files (any order)")
    exo.add_argument("--tenant", required=True, help="the tenant's name in the configuration")
    exo.add_argument("--config", required=True, metavar="FILE", help="the main configuration")
    exo.add_argument(
        "--tenant-file",
        metavar="FILE",
        help="where the tenant file goes when the configuration names none "
        "(default: exchange-online/TENANT.yml beside the configuration)",
    )
    exo.add_argument("--write", action="store_true", help="write the tenant file")
    exo.set_defaults(func=cmd_import_exo)


def add_history(history: argparse.ArgumentParser) -> None:
    history.add_argument("host", help="host name (or target name)")
    where = history.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="read state_dir from this config")
    where.add_argument("--state-dir", metavar="DIR")
    history.set_defaults(func=cmd_history)


def add_forecast(forecast: argparse.ArgumentParser) -> None:
    forecast.description = (
        "Every endpoint and sender of a running exporter that fails now or will fail within N "
        "days (a certificate of its chain expiring), sorted by date: what breaks, what Exchange "
        "Online does then, and the fix. Reads the last results the exporter keeps in the "
        "configuration's state_dir."
    )
    where = forecast.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the exporter's configuration")
    where.add_argument("--state-dir", metavar="DIR", help="every result kept in DIR (the demo's)")
    forecast.add_argument(
        "--days", type=_forecast_days, default=30.0, help="horizon in days (default 30)"
    )
    forecast.add_argument("--format", choices=["text", "json", "csv"], default="text")
    forecast.set_defaults(func=cmd_forecast)


def add_rules(rules: argparse.ArgumentParser) -> None:
    from tlsprobe.alerting.generate import DEFAULT_RUNBOOK_BASE

    rules.description = (
        "Print the alerting rules, generated from the template shipped with this "
        "version, with runbook links under --runbook-base."
    )
    rules.add_argument(
        "--runbook-base",
        default=DEFAULT_RUNBOOK_BASE,
        metavar="URL",
        help="page the runbook anchors are appended to (default: this version's README)",
    )
    rules.add_argument(
        "--format",
        choices=["prometheus", "kubernetes"],
        default="prometheus",
        help="a plain rules file, or a prometheus-operator PrometheusRule",
    )
    rules.set_defaults(func=cmd_rules)

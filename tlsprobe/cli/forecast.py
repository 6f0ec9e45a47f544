"""`tlsprobe forecast`: what fails now or within N days, from a running exporter's last results.

Reads `state_dir/results.sqlite3` (the exporter writes it every 15 s) read-only, keeps the
rows of the configured targets and senders (with `--state-dir`, every row: the demo has no
configuration file), and prints `exporter.forecast`'s entries.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tlsprobe.exporter import forecast
from tlsprobe.exporter.lastresults import RESULTS_FILENAME, Key, read_rows
from tlsprobe.exporter.state import SENDER_TARGET
from tlsprobe.model import ProbeResult
from tlsprobe.probe.prober import utcnow

if TYPE_CHECKING:
    from tlsprobe.exporter.config import Config


def forecast_command(args: argparse.Namespace) -> int:
    config = None
    if args.state_dir is None:
        # Only here: `--state-dir` reads no configuration, and the parser is most of the imports.
        from tlsprobe.exporter.config import ConfigError, load_config  # noqa: PLC0415

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            where = f"{args.config}: {exc}" if exc.path else str(exc)
            print(f"tlsprobe forecast: {where}", file=sys.stderr)
            return 2
    state_dir = config.state_dir if config is not None else Path(args.state_dir)
    path = state_dir / RESULTS_FILENAME
    try:
        rows = read_rows(path)
    except (OSError, sqlite3.Error) as exc:
        hint = "is tlsprobe serve running with this configuration?"
        print(
            f"tlsprobe forecast: {path}: cannot read last results ({exc}); {hint}", file=sys.stderr
        )
        return 2
    now = utcnow()
    entries = forecast.forecast(_watched(rows, config), now, args.days)
    if args.format == "json":
        text = forecast.to_json(entries, now)
    elif args.format == "csv":
        text = forecast.to_csv(entries, now)
    else:
        text = forecast.to_text(entries, now, args.days)
    sys.stdout.write(text)
    return 0


def _watched(rows: list[tuple[Key, ProbeResult]], config: Config | None) -> list[forecast.Watched]:
    """The rows as `Watched`: those of the configured targets and senders, or all of them."""
    targets = {(t.tenant, t.name) for t in config.targets} if config else None
    senders = {s.key for s in config.send.senders} if config and config.send else set()
    out = []
    for key, result in rows:
        tenant, target = key[0], key[1]
        if target.startswith(SENDER_TARGET):
            name = target.removeprefix(SENDER_TARGET)
            if config is None or (tenant, name) in senders:
                out.append(forecast.Watched(tenant, name, "sender", result))
        elif targets is None or (tenant, target) in targets:
            out.append(forecast.Watched(tenant, target, "endpoint", result))
    return out

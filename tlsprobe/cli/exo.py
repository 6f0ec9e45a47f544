"""`tlsprobe import-exo`: exports in, the tenant file and its drift out. Wiring only.

Dry run by default (prints the tenant file and the differences; exit 1 on drift, for CI);
`--write` writes the tenant file the main configuration names, creating a minimal main file
when there is none, and never rewrites an existing main file (it says what to add instead).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlsprobe.exporter.config import ConfigError, load_config
from tlsprobe.exporter.config.schema import TENANT_NAME
from tlsprobe.exporter.config.yamlfile import YamlFileError, read_yaml
from tlsprobe.exporter.exchange import exports, tenantfile
from tlsprobe.exporter.exchange.errors import ExportError

DRIFT = 1
UNUSABLE = 2


def import_exo(args: argparse.Namespace) -> int:
    try:
        found = _compare(Path(args.config), args.tenant, args.exports, args.tenant_file)
    except _Unusable as exc:
        return _fail(str(exc))
    if not args.write:
        print(f"# {found.tenant_path}\n{found.text}", end="")
        return _report(args.tenant, found.diffs)
    config = Path(args.config)
    return _write(
        args.tenant, config, found.target, found.tenant_path, text=found.text, named=found.named
    )


def drift(config: Path, tenant: str, paths: list[str]) -> int:
    """`validate-config --exo`: the differences only; 0 in step, 1 drifted, 2 unusable."""
    try:
        found = _compare(config, tenant, paths, None)
    except _Unusable as exc:
        return _fail(str(exc), "tlsprobe validate-config")
    return _report(tenant, found.diffs)


class _Unusable(Exception):
    """An export or the configuration cannot be used; the message names which and why."""


@dataclass(frozen=True, slots=True)
class _Comparison:
    target: Path
    """The tenant file as the configuration names it (relative to it, or absolute)."""
    tenant_path: Path
    named: bool
    """Whether the configuration names the tenant file already."""
    text: str
    diffs: list[str]


def _compare(config: Path, tenant: str, paths: list[str], tenant_file: str | None) -> _Comparison:
    if not TENANT_NAME.fullmatch(tenant):
        raise _Unusable("--tenant: must be 1-100 letters, digits, '_', '.' or '-'")
    try:
        export = exports.read_exports([Path(p) for p in paths])
    except ExportError as exc:
        raise _Unusable(str(exc)) from None
    try:
        section, named = _tenant_section(config, tenant)
    except (YamlFileError, ValueError) as exc:
        raise _Unusable(f"{config}: {exc}") from None
    if named is not None and tenant_file is not None and Path(tenant_file) != named:
        raise _Unusable(
            f"--tenant-file {tenant_file}: {config} names another tenant file for "
            f"tenants.{tenant} (exchange_online: {named}); drop --tenant-file or change it there"
        )
    target = named or Path(tenant_file or f"exchange-online/{tenant}.yml")
    tenant_path = target if target.is_absolute() else config.parent / target
    plan = tenantfile.plan(export)
    try:
        current = _current(section, tenant_path if named else None)
    except (YamlFileError, ValueError) as exc:
        raise _Unusable(f"{tenant_path}: {exc}") from None
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    text = tenantfile.render(tenant, plan.block)
    diffs = tenantfile.differences(current, plan.block)
    return _Comparison(target, tenant_path, named is not None, text, diffs)


def _report(tenant: str, diffs: list[str]) -> int:
    for line in diffs:
        print(f"drift: tenants.{tenant}: {line}", file=sys.stderr)
    if not diffs:
        print(f"tenants.{tenant}: matches the tenant's exports", file=sys.stderr)
    return DRIFT if diffs else 0


def _write(tenant: str, config: Path, target: Path, path: Path, *, text: str, named: bool) -> int:
    refused = tenantfile.refuse_to_replace(path, config)
    if refused is not None:
        return _fail(f"tenant file {path} {refused}")
    tenantfile.write_atomically(path, text)
    print(f"wrote {path}")
    if not config.exists():
        tenantfile.write_atomically(
            config, f"tenants:\n  {tenant}:\n    exchange_online: {target.as_posix()}\n"
        )
        print(f"wrote {config} (a minimal configuration naming it)")
    elif not named:
        print(
            f"add to {config}, under tenants.{tenant}:\n"
            f"    exchange_online: {target.as_posix()}\n"
            "and remove accepted_domains and certificate_domain there (the import owns them)"
        )
        return 0
    try:
        load_config(config)
    except ConfigError as exc:
        print(f"{config}: {exc}", file=sys.stderr)
        return UNUSABLE
    return 0


def _tenant_section(config: Path, tenant: str) -> tuple[dict[str, Any], Path | None]:
    """The tenant's section in the main file ({} when absent) and the tenant file it names."""
    if not config.exists():
        return {}, None
    data = read_yaml(config)
    tenants = data.get("tenants") if isinstance(data, dict) else None
    section = tenants.get(tenant) if isinstance(tenants, dict) else None
    if not isinstance(section, dict):
        return {}, None
    named = section.get("exchange_online")
    if named is not None and not isinstance(named, str):
        raise ValueError(f"tenants.{tenant}.exchange_online: must be a file name")
    return section, Path(named) if named else None


def _current(section: dict[str, Any], tenant_file: Path | None) -> dict[str, Any]:
    """What the configuration says about the tenant now: the section and its tenant file."""
    current = dict(section)
    if tenant_file is not None and tenant_file.exists():
        owned = read_yaml(tenant_file)
        if owned is not None and not isinstance(owned, dict):
            raise ValueError("must be a mapping")
        current.update(owned or {})
    return current


def _fail(message: str, command: str = "tlsprobe import-exo") -> int:
    print(f"{command}: {message}", file=sys.stderr)
    return UNUSABLE

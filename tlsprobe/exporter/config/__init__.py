"""The exporter's YAML configuration: parsed once into frozen values, validated strictly.

A configuration mistake must be caught when the file is loaded (at start, on reload and by
`tlsprobe validate-config`), never an hour later in a probe.  Every problem becomes a
`ConfigError` naming the offending key as a path (`tenants.contoso.targets[2].port: must be
1-65535`); unknown keys, wrong types, impossible values and unreadable trust stores are all
refused.  This package is the public entry point; inside it, `schema` holds the keys and the
frozen values, `values` and `fields` read single values, and `resolve` applies defaults, then
tenant, then target. The other configuration files and sections live here too: `web` (the web
configuration file: TLS and basic auth), `allowrules` (the `/probe` allowlist), `send` and
`sendparse` (the send side's `receiver:` and `senders:`). Every file is read by the shared
bounded reader `yamlfile` (safe loader plus a duplicate-key check).
"""

from __future__ import annotations

from pathlib import Path

from tlsprobe.exporter.config.resolve import resolve
from tlsprobe.exporter.config.schema import (
    ADDRESSES,
    DEFAULT_LISTEN_PORT,
    DEFAULT_PORT,
    MAX_DAYS,
    MAX_DURATION,
    Config,
    ConfigError,
    DnsSettings,
    TargetConfig,
    TenantConfig,
    WebSettings,
    shard_of,
)
from tlsprobe.exporter.config.values import format_duration, kind, parse_duration
from tlsprobe.exporter.config.yamlfile import MAX_YAML_BYTES, YamlFileError, read_yaml

MAX_CONFIG_BYTES = MAX_YAML_BYTES

__all__ = [
    "ADDRESSES",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_PORT",
    "MAX_CONFIG_BYTES",
    "MAX_DAYS",
    "MAX_DURATION",
    "Config",
    "ConfigError",
    "DnsSettings",
    "TargetConfig",
    "TenantConfig",
    "WebSettings",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "shard_of",
]


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a configuration file; any problem is a ConfigError."""
    source = Path(path).absolute()
    try:
        data = read_yaml(source, max_bytes=MAX_CONFIG_BYTES)
    except YamlFileError as exc:
        raise ConfigError("", exc.message, source) from None
    return parse_config(data, base_dir=source.parent, source=source)


def parse_config(data: object, *, base_dir: Path, source: Path | None = None) -> Config:
    """Validate parsed YAML (plain dicts, lists and scalars) into a Config.

    Relative paths resolve against `base_dir` (the configuration file's directory).  Raises
    ConfigError only; independent problems (one per section, tenant and target) are all
    collected into its `problems`.
    """
    if data is None:
        raise ConfigError("", "the configuration is empty", source)
    if not isinstance(data, dict):
        raise ConfigError("", f"must be a mapping at the top level, got {kind(data)}", source)
    return resolve(data, base_dir=base_dir, source=source)

"""The exporter's YAML configuration: parsed once into frozen values, validated strictly.

A configuration mistake must be caught when the file is loaded (at start, on reload and by
`tlsprobe validate-config`), never an hour later in a probe.  Every problem becomes a
`ConfigError` naming the offending key as a path (`tenants.contoso.targets[2].port: must be
1-65535`); unknown keys, wrong types, impossible values and unreadable trust stores are all
refused.  Target settings are resolved here, once: per-target values override the tenant's,
which override `defaults`, so the scheduler reads finished `TargetConfig` values and never
consults a default again.  The YAML is read with PyYAML's safe loader only (plus a duplicate-key
check, because a silently overridden key is a lost setting).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from tlsprobe.exporter import links
from tlsprobe.model import HostPortError, Mode, Policy, is_ip_literal, parse_host_port
from tlsprobe.probe import o365
from tlsprobe.probe.evaluate import TrustStore, TrustStoreError

MAX_CONFIG_BYTES: Final = 1 << 20
"""Larger files are refused before parsing: no real configuration comes close."""

DEFAULT_PORT: Final = 25
DEFAULT_LISTEN_PORT: Final = 9825
MAX_DURATION: Final = 365 * 86400.0
MAX_DAYS: Final = 3650
ADDRESSES: Final = ("all", "one")

_T = TypeVar("_T")

_TOP_KEYS = ("state_dir", "web", "dns", "defaults", "tenants", "targets")
_WEB_KEYS = (
    "listen",
    "config_file",
    "probe_allowlist",
    "max_concurrent_requests",
    "max_connections",
    "header_timeout",
    "idle_timeout",
    "probe_min_interval",
    "external_url",
)
_DNS_KEYS = ("nameservers", "port", "timeout")
_DEFAULT_KEYS = (
    "interval",
    "timeout",
    "warn_days",
    "crit_days",
    "concurrency",
    "retries",
    "ca_file",
    "addresses",
    "ehlo_name",
    "port",
)
_TENANT_KEYS = ("accepted_domains", "certificate_domain", "targets")
_TARGET_KEYS = (
    "name",
    "host",
    "mx",
    "port",
    "mode",
    "address",
    "sni",
    "ehlo_name",
    "expected_certificate",
    "addresses",
    "interval",
    "timeout",
    "retries",
    "warn_days",
    "crit_days",
    "ca_file",
    "certificate_domain",
)

_TENANT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?",
    re.ASCII,
)
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_MAX_SHOWN_CHARS = 80


class ConfigError(Exception):
    """A configuration problem, located by the path of the offending key.

    `path` is "" for problems with the file as a whole (missing, not YAML, empty).  When
    several independent problems were found, `problems` holds them all (this one first);
    `str()` shows this one only, on one line.
    """

    def __init__(self, path: str, message: str, file: str | Path | None = None) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message
        self.file = None if file is None else str(file)
        self.problems: tuple[ConfigError, ...] = (self,)

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return f"{self.file}: {self.message}" if self.file else self.message


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The HTTP server: where it listens and what `/probe` may check ad hoc."""

    listen_host: str
    """IP or host name to bind; "" for every interface."""
    listen_port: int
    config_file: Path | None
    """exporter-toolkit web-config.yml (TLS and basic auth); None serves plain HTTP."""
    probe_allowlist: tuple[str, ...]
    """Normalized entries: IP networks as `192.0.2.0/24` (a single IP as `/32` or `/128`), or
    host patterns (`mail.example.net`, `*.contoso.com`); an IP or pattern may carry `:PORT`
    (`192.0.2.7:2525`, `[2001:db8::1]:2525`, `mx.example.net:25`).  Empty: `/probe` checks
    nothing."""
    max_concurrent_requests: int
    external_url: str | None = None
    """Where users reach the exporter (Prometheus' --web.external-url convention: a reverse
    proxy's address); links in pages and alerts start with it. None: this host's name."""
    max_connections: int = 512
    """Open HTTP connections at most; at start lowered to fit the descriptor limit."""
    header_timeout: float = 10.0
    """Seconds a new connection has to send its request headers."""
    idle_timeout: float = 15.0
    """Seconds an idle keep-alive connection stays open."""
    probe_min_interval: float = 10.0
    """Seconds between two probes of one target through `/probe`; requests in between get
    the last result."""


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver used for MX and A/AAAA discovery."""

    nameservers: tuple[str, ...]
    """IP addresses; empty means the system resolver (/etc/resolv.conf)."""
    port: int
    timeout: float


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One configured target with every setting resolved (target over tenant over defaults)."""

    tenant: str
    """Tenant name; "" for top-level targets."""
    name: str
    """Unique within the tenant; defaults to the host or mx value."""
    host: str | None
    """Normalized host name (A-labels) or IP literal; None for an mx target."""
    mx: str | None
    """Normalized mail domain whose MX hosts are discovered; None for a host target."""
    port: int
    mode: Mode
    address: str | None
    """Fixed IP to connect to (no DNS); None resolves the host."""
    sni: str | None
    """Server name to send.  Host targets: the host unless overridden; None when `sni: false`
    or the host is an IP literal.  Mx targets: a fixed name if configured, else None, and the
    scheduler sends each discovered MX host's name unless `send_sni` is False."""
    ehlo_name: str | None
    """None: the machine's FQDN."""
    addresses: str
    """"all" probes every A and AAAA address of each host; "one" probes the first."""
    interval: float
    timeout: float
    retries: int
    ca_file: Path | None
    """PEM trust store (verified readable at load); None: the system store."""
    policy: Policy
    send_sni: bool = True
    """False when the configuration says `sni: false`."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """An Office 365 tenant: the domains its connector accepts mail for."""

    name: str
    accepted_domains: tuple[str, ...]
    """Normalized (lower-case A-labels, no trailing dot)."""
    certificate_domain: str | None
    """The connector's TlsSenderCertificateName, normalized (`*.contoso.com` or a literal)."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole exporter configuration."""

    source: Path | None
    """The file it was loaded from; None when built from data."""
    state_dir: Path
    web: WebSettings
    dns: DnsSettings
    concurrency: int
    """Global limit on probes in flight."""
    tenants: tuple[TenantConfig, ...]
    targets: tuple[TargetConfig, ...]
    """Every target, tenants' first (in file order), then top-level ones."""
    defaults_port: int = DEFAULT_PORT
    """The `defaults:` values, for targets built outside the file (ad hoc `/probe`)."""
    defaults_interval: float = 300.0
    defaults_timeout: float = 30.0
    defaults_ca_file: Path | None = None

    def shard(self, index: int, count: int) -> Config:
        """Keep only the targets this shard owns (`--shard index/count`).

        Ownership is a stable hash of "tenant/name", so every target lands in exactly one
        shard, and the same one on every host and after every restart.
        """
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"invalid shard {index}/{count}: need 0 <= index < count")
        kept = tuple(t for t in self.targets if shard_of(t.key, count) == index)
        return dataclasses.replace(self, targets=kept)


def shard_of(key: tuple[str, str], count: int) -> int:
    """The shard (0..count-1) that owns a target; stable across runs and Python versions."""
    digest = hashlib.sha256(f"{key[0]}/{key[1]}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


# --- durations -----------------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number of seconds, or text like 30s, 5m, 1h30m, 250ms, 2d.

    Units go from largest to smallest, each at most once (as in Prometheus).  Raises
    ValueError with a message fit to follow a key path.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"must be a duration such as 30s, 5m or 1h30m, or a number of seconds, "
            f"got {_kind(value)}"
        )
    seconds = _duration_seconds(value) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)}")
    return seconds


def _duration_seconds(text: str) -> float:
    stripped = text.strip()
    if _PLAIN_NUMBER.fullmatch(stripped):
        return float(stripped)
    match = _DURATION.fullmatch(stripped)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"invalid duration {_show(text)}: use a number of seconds or a value like "
            "30s, 5m, 1h30m, 250ms"
        )
    return sum(float(v) * _UNIT_SECONDS[unit] for unit, v in match.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest unit form: 300 -> "5m", 5400 -> "1h30m", 0.25 -> "250ms", 0 -> "0s"."""
    remaining = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    if remaining:
        parts.append(f"{remaining}ms")
    return "".join(parts) or "0s"


# --- loading -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (which it would silently override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then a key of its own is an override, not a duplicate
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key; the safe loader reports it itself
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a configuration file; any problem is a ConfigError."""
    source = Path(path).absolute()
    data = _read_yaml(source)
    return parse_config(data, base_dir=source.parent, source=source)


def _read_yaml(source: Path) -> object:
    try:
        with source.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read: {exc.strerror or exc}", source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", "larger than 1 MiB; refusing to parse it", source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("", f"not UTF-8 text (line {line})", source) from None
    try:
        # A subclass of SafeLoader: only plain YAML types, never arbitrary Python objects.
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        raise ConfigError("", _yaml_message(exc), source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", "YAML error: " + " ".join(str(exc).split()), source) from None
    except RecursionError:
        raise ConfigError("", "YAML nesting is too deep", source) from None


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if mark is None:
        return f"YAML error: {problem}"
    return f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def parse_config(data: object, *, base_dir: Path, source: Path | None = None) -> Config:
    """Validate parsed YAML (plain dicts, lists and scalars) into a Config.

    Relative paths resolve against `base_dir` (the configuration file's directory).  Raises
    ConfigError only; independent problems (one per section, tenant and target) are all
    collected into its `problems`.
    """
    if data is None:
        raise ConfigError("", "the configuration is empty", source)
    if not isinstance(data, dict):
        raise ConfigError("", f"must be a mapping at the top level, got {_kind(data)}", source)
    return _Parser(base_dir).config(data, source)


# --- the parser ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Defaults:
    """The `defaults:` section; every target starts from these."""

    interval: float = 300.0
    timeout: float = 30.0
    warn_days: float = 21.0
    crit_days: float = 7.0
    retries: int = 2
    ca_file: Path | None = None
    addresses: str = "all"
    ehlo_name: str | None = None
    port: int = DEFAULT_PORT


class _Parser:
    """Walks the document, collecting one problem per independent unit."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []
        self._trust_checked: set[Path] = set()

    def attempt(self, parse: Callable[[], _T]) -> _T | None:
        """Run one unit's parse; record its problem and carry on with the next unit."""
        try:
            return parse()
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def config(self, data: dict[Any, Any], source: Path | None) -> Config:
        top = _mapping(data, "", _TOP_KEYS)
        state_dir = self.attempt(lambda: self.state_dir(top.get("state_dir", "./state")))
        web = self.attempt(lambda: self.web(top.get("web")))
        dns = self.attempt(lambda: _dns(top.get("dns")))
        defaults_and_concurrency = self.attempt(lambda: self.defaults(top.get("defaults")))
        defaults, concurrency = defaults_and_concurrency or (_Defaults(), 50)
        tenants_data = self.attempt(lambda: _mapping_of_any(top.get("tenants"), "tenants"))
        tenants: list[TenantConfig] = []
        targets: list[TargetConfig] = []
        for key, value in (tenants_data or {}).items():
            parsed = self.attempt(functools.partial(self.tenant, key, value, defaults))
            if parsed is not None:
                tenants.append(parsed[0])
                targets.extend(parsed[1])
        loose = self.attempt(lambda: _list(top.get("targets"), "targets"))
        tenant = TenantConfig(name="", accepted_domains=(), certificate_domain=None)
        targets.extend(self.targets(loose or [], "targets", tenant, defaults))
        if not targets and not self.errors:
            where = "targets" if "targets" in top and "tenants" not in top else "tenants"
            self.errors.append(ConfigError(where, "no targets configured"))
        if self.errors:
            first = self.errors[0]
            first.problems = tuple(self.errors)
            raise first
        assert state_dir is not None and web is not None and dns is not None
        return Config(
            source=source,
            state_dir=state_dir,
            web=web,
            dns=dns,
            concurrency=concurrency,
            tenants=tuple(tenants),
            targets=tuple(targets),
            defaults_port=defaults.port,
            defaults_interval=defaults.interval,
            defaults_timeout=defaults.timeout,
            defaults_ca_file=defaults.ca_file,
        )

    def path(self, value: object, where: str) -> Path:
        text = _string(value, where)
        if not text:
            raise ConfigError(where, "must not be empty")
        return self.base_dir / text

    def state_dir(self, value: object) -> Path:
        path = self.path(value, "state_dir")
        if _exists(path) and not path.is_dir():
            raise ConfigError("state_dir", f"{path} exists and is not a directory")
        return path

    def web(self, value: object) -> WebSettings:
        web = _mapping(value, "web", _WEB_KEYS)
        host, port = _listen(web.get("listen", f":{DEFAULT_LISTEN_PORT}"), "web.listen")
        config_file = None
        if "config_file" in web:
            config_file = self.path(web["config_file"], "web.config_file")
            _check_readable(config_file, "web.config_file")
        allowlist = _list(web.get("probe_allowlist"), "web.probe_allowlist")
        return WebSettings(
            listen_host=host,
            listen_port=port,
            config_file=config_file,
            probe_allowlist=tuple(
                _allow_entry(v, f"web.probe_allowlist[{i}]") for i, v in enumerate(allowlist)
            ),
            max_concurrent_requests=_int(
                web.get("max_concurrent_requests", 16), "web.max_concurrent_requests", 1, 10000
            ),
            external_url=_external_url(web.get("external_url")),
            max_connections=_int(web.get("max_connections", 512), "web.max_connections", 8, 65536),
            header_timeout=_bounded_duration(web, "header_timeout", 10.0, 0.1, 300),
            idle_timeout=_bounded_duration(web, "idle_timeout", 15.0, 0.1, 3600),
            probe_min_interval=_bounded_duration(web, "probe_min_interval", 10.0, 0, 86400),
        )

    def defaults(self, value: object) -> tuple[_Defaults, int]:
        section = _mapping(value, "defaults", _DEFAULT_KEYS)
        concurrency = _int(section.pop("concurrency", 50), "defaults.concurrency", 1, 10000)
        return self.overrides(section, "defaults", _Defaults()), concurrency

    def overrides(self, section: Mapping[str, object], where: str, base: _Defaults) -> _Defaults:
        """Apply the settings a defaults or target section may override to `base`."""
        readers: dict[str, Callable[[object, str], Any]] = {
            "interval": _duration,
            "timeout": _duration,
            "warn_days": _days,
            "crit_days": _days,
            "retries": lambda value, at: _int(value, at, 0, 10),
            "ca_file": self.ca_file,
            "addresses": lambda value, at: _choice(value, at, ADDRESSES),
            "ehlo_name": _ehlo_name,
            "port": lambda value, at: _int(value, at, 1, 65535),
        }
        changes: dict[str, Any] = {
            key: readers[key](value, f"{where}.{key}")
            for key, value in section.items()
            if key in readers
        }
        result = dataclasses.replace(base, **changes)
        _check_consistent(result, section, where)
        return result

    def ca_file(self, value: object, where: str) -> Path:
        path = self.path(value, where)
        if path not in self._trust_checked:
            try:
                TrustStore.from_pem_file(path)
            except TrustStoreError as exc:
                raise ConfigError(where, str(exc)) from None
            self._trust_checked.add(path)
        return path

    def tenant(
        self, key: object, value: object, defaults: _Defaults
    ) -> tuple[TenantConfig, list[TargetConfig]]:
        where = f"tenants.{_show_key(key)}"
        if not isinstance(key, str):
            raise ConfigError(where, f"tenant name must be a string (quote it), got {_kind(key)}")
        if not _TENANT_NAME.fullmatch(key):
            raise ConfigError(where, "tenant name must be 1-100 letters, digits, '_', '.' or '-'")
        section = _mapping(value, where, _TENANT_KEYS)
        domains = _list(section.get("accepted_domains"), f"{where}.accepted_domains")
        tenant = TenantConfig(
            name=key,
            accepted_domains=tuple(
                dict.fromkeys(
                    _domain(d, f"{where}.accepted_domains[{i}]") for i, d in enumerate(domains)
                )
            ),
            certificate_domain=_connector(section, where),
        )
        raw_targets = _list(section.get("targets"), f"{where}.targets")
        return tenant, self.targets(raw_targets, f"{where}.targets", tenant, defaults)

    def targets(
        self, items: Sequence[object], where: str, tenant: TenantConfig, defaults: _Defaults
    ) -> list[TargetConfig]:
        parsed: list[TargetConfig] = []
        first_index: dict[str, int] = {}
        for index, item in enumerate(items):
            at = f"{where}[{index}]"
            target = self.attempt(functools.partial(self.target, item, at, tenant, defaults))
            if target is None:
                continue
            if target.name in first_index:
                named = isinstance(item, dict) and item.get("name") is not None
                self.errors.append(
                    ConfigError(
                        f"{at}.name" if named else at,
                        f"duplicate target name {_show(target.name)} (also "
                        f"{where}[{first_index[target.name]}]); give each target its own name",
                    )
                )
                continue
            first_index[target.name] = index
            parsed.append(target)
        return parsed

    def target(
        self, value: object, where: str, tenant: TenantConfig, defaults: _Defaults
    ) -> TargetConfig:
        section = _mapping(value, where, _TARGET_KEYS)
        host, mx = _host_or_mx(section, where)
        settings = self.overrides(section, where, defaults)
        address = None
        if "address" in section:
            if mx is not None:
                raise ConfigError(
                    f"{where}.address", "not allowed with mx (the MX hosts are discovered)"
                )
            address = _ip(section["address"], f"{where}.address")
        sni, send_sni = _sni(section, where, host)
        certificate_domain = _connector(section, where) or tenant.certificate_domain
        name = section.get("name", host or mx)
        return TargetConfig(
            tenant=tenant.name,
            name=_name(name, f"{where}.name"),
            host=host,
            mx=mx,
            port=settings.port,
            mode=_mode(section, where, settings.port),
            address=address,
            sni=sni,
            ehlo_name=settings.ehlo_name,
            addresses=settings.addresses,
            interval=settings.interval,
            timeout=settings.timeout,
            retries=settings.retries,
            ca_file=settings.ca_file,
            policy=Policy(
                certificate_domain=certificate_domain,
                accepted_domains=tenant.accepted_domains,
                warn_days=settings.warn_days,
                crit_days=settings.crit_days,
                expected=_expected(section.get("expected_certificate"), where),
            ),
            send_sni=send_sni,
        )


# --- sections ------------------------------------------------------------------------------


def _dns(value: object) -> DnsSettings:
    section = _mapping(value, "dns", _DNS_KEYS)
    nameservers = _list(section.get("nameservers"), "dns.nameservers")
    if "nameservers" in section and not nameservers:
        raise ConfigError(
            "dns.nameservers", "must not be empty (omit it to use the system resolver)"
        )
    timeout = _duration(section.get("timeout", 5.0), "dns.timeout")
    if timeout <= 0:
        raise ConfigError("dns.timeout", "must be greater than 0")
    return DnsSettings(
        nameservers=tuple(_ip(v, f"dns.nameservers[{i}]") for i, v in enumerate(nameservers)),
        port=_int(section.get("port", 53), "dns.port", 1, 65535),
        timeout=timeout,
    )


def _check_consistent(settings: _Defaults, section: Mapping[str, object], where: str) -> None:
    """Cross-field rules, reported at whichever key this section set."""
    if settings.interval < 1:
        raise ConfigError(f"{where}.interval", "must be at least 1s")
    if settings.timeout <= 0:
        raise ConfigError(f"{where}.timeout", "must be greater than 0")
    if settings.timeout >= settings.interval:
        if "timeout" in section or "interval" not in section:
            raise ConfigError(
                f"{where}.timeout",
                f"must be less than interval ({format_duration(settings.interval)})",
            )
        raise ConfigError(
            f"{where}.interval",
            f"must be greater than timeout ({format_duration(settings.timeout)})",
        )
    if settings.crit_days > settings.warn_days:
        if "crit_days" in section or "warn_days" not in section:
            raise ConfigError(
                f"{where}.crit_days", f"must not exceed warn_days ({settings.warn_days:g})"
            )
        raise ConfigError(
            f"{where}.warn_days", f"must not be less than crit_days ({settings.crit_days:g})"
        )


def _host_or_mx(section: Mapping[str, object], where: str) -> tuple[str | None, str | None]:
    if "host" in section and "mx" in section:
        raise ConfigError(where, "give either host or mx, not both")
    if "host" in section:
        return _host(section["host"], f"{where}.host"), None
    if "mx" in section:
        return None, _domain(section["mx"], f"{where}.mx")
    raise ConfigError(where, "needs host (a server) or mx (a mail domain whose MX hosts to probe)")


def _mode(section: Mapping[str, object], where: str, port: int) -> Mode:
    if "mode" not in section:
        return Mode.IMPLICIT if port == 465 else Mode.STARTTLS
    return Mode(_choice(section["mode"], f"{where}.mode", tuple(m.value for m in Mode)))


def _sni(section: Mapping[str, object], where: str, host: str | None) -> tuple[str | None, bool]:
    """(name to send, whether to send one); `sni: false` sends none."""
    value = section.get("sni")
    if value is False:
        return None, False
    if value is None:
        return (None if host is None or is_ip_literal(host) else host), True
    at = f"{where}.sni"
    if not isinstance(value, str):
        raise ConfigError(at, f"must be a server name, or false to send none; got {_kind(value)}")
    if is_ip_literal(value):
        raise ConfigError(at, "an IP address cannot be sent as SNI; give a host name or false")
    return _domain(value, at), True


def _connector(section: Mapping[str, object], where: str) -> str | None:
    if "certificate_domain" not in section:
        return None
    at = f"{where}.certificate_domain"
    text = _string(section["certificate_domain"], at)
    try:
        return str(o365.ConnectorPattern.parse(text))
    except o365.ConnectorPatternError as exc:
        raise ConfigError(at, str(exc)) from None


def _expected(value: object, where: str) -> tuple[str, ...]:
    at = f"{where}.expected_certificate"
    if value is None:
        return ()
    if isinstance(value, str):
        return (_pin(value, at),)
    items = _list(value, at, "a string or a list of strings")
    return tuple(dict.fromkeys(_pin(v, f"{at}[{i}]") for i, v in enumerate(items)))


def _pin(value: object, where: str) -> str:
    """A SHA-256 fingerprint (stored as bare lower-case hex) or `<I>issuer<S>subject`."""
    text = _string(value, where).strip()
    bare = text.replace(":", "")
    if _FINGERPRINT.fullmatch(bare):
        return bare.lower()
    issuer, sep, subject = text.removeprefix("<I>").partition("<S>")
    if text.startswith("<I>") and sep and issuer.strip() and subject.strip():
        return text
    raise ConfigError(
        where,
        "must be a SHA-256 fingerprint (64 hex digits, colons allowed) or Exchange's "
        "'<I>issuer<S>subject'",
    )


def _listen(value: object, where: str) -> tuple[str, int]:
    text = _string(value, where)
    host, sep, port = text.rpartition(":")
    usage = f"must be HOST:PORT, [IPv6]:PORT or :PORT, got {_show(text)}"
    if not sep:
        raise ConfigError(where, usage)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not is_ip_literal(host) or ":" not in host:
            raise ConfigError(where, usage)
    elif ":" in host:
        raise ConfigError(
            where, f"write an IPv6 address in brackets ([::1]:PORT), got {_show(text)}"
        )
    elif host and not is_ip_literal(host) and not _valid_host_name(o365.normalize_name(host)):
        raise ConfigError(where, usage)
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(where, f"port must be 1-65535, got {_show(port)}")
    return host, int(port)


def _allow_entry(value: object, where: str) -> str:
    """A CIDR network, or an IP / host name / `*.domain` with an optional `:PORT`."""
    text = _string(value, where).strip()
    if "/" in text:
        return _allow_network(text, where)
    usage = (
        f"{_show(text)} is not a CIDR network, or HOST[:PORT] where HOST is a host name, "
        "'*.domain' or IP address"
    )
    try:
        host, port = parse_host_port(text)
    except HostPortError:
        raise ConfigError(where, usage) from None
    if is_ip_literal(host):
        address = ipaddress.ip_address(host)
        if port is None:
            return str(ipaddress.ip_network(address))
        return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    if host == "*":
        raise ConfigError(where, "a bare '*' would allow probing any host; list hosts or domains")
    rest = host.removeprefix("*.")
    name = o365.normalize_name(rest)
    if not _valid_host_name(name):
        raise ConfigError(where, usage)
    pattern = name if rest == host else f"*.{name}"
    return pattern if port is None else f"{pattern}:{port}"


def _allow_network(text: str, where: str) -> str:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(where, f"{_show(text)} is not an IP network") from None
    if network.prefixlen == 0:
        raise ConfigError(where, f"{_show(text)} would allow probing any address")
    return str(network)


def _check_readable(path: Path, where: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


# --- scalars -------------------------------------------------------------------------------


def _mapping(value: object, where: str, allowed: Sequence[str]) -> dict[str, object]:
    """A mapping with only `allowed` keys; null values count as absent."""
    section = _mapping_of_any(value, where)
    for key in section:
        if not isinstance(key, str) or key not in allowed:
            raise ConfigError(
                _join(where, _show_key(key)),
                f"unknown key {_show(key)} (expected one of: {', '.join(sorted(allowed))})",
            )
    return {str(k): v for k, v in section.items() if v is not None}


def _mapping_of_any(value: object, where: str) -> dict[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a mapping, got {_kind(value)}")
    return value


def _external_url(value: object) -> str | None:
    if value is None:
        return None
    try:
        return links.parse_external_url(_string(value, "web.external_url"))
    except ValueError as exc:
        raise ConfigError("web.external_url", str(exc)) from exc


def _list(value: object, where: str, expected: str = "a list") -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(where, f"must be {expected}, got {_kind(value)}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, got {_kind(value)}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ConfigError(where, "must not contain control characters")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"must be an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise ConfigError(where, f"must be {low}-{high}")
    return value


def _days(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"must be a number of days, got {_kind(value)}")
    if not (math.isfinite(value) and 0 <= value <= MAX_DAYS):
        raise ConfigError(where, f"must be 0-{MAX_DAYS}")
    return float(value)


def _duration(value: object, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def _bounded_duration(
    section: Mapping[str, object], key: str, default: float, low: float, high: float
) -> float:
    where = f"web.{key}"
    seconds = _duration(section.get(key, default), where)
    if not low <= seconds <= high:
        raise ConfigError(where, f"must be {low:g}s-{high:g}s")
    return seconds


def _choice(value: object, where: str, choices: Iterable[str]) -> str:
    text = _string(value, where)
    options = tuple(choices)
    if text not in options:
        raise ConfigError(where, f"must be one of: {', '.join(options)}; got {_show(text)}")
    return text


def _name(value: object, where: str) -> str:
    text = _string(value, where)
    if not text.strip() or len(text) > 253:
        raise ConfigError(where, "must be 1-253 characters, not only spaces")
    return text


def _ip(value: object, where: str) -> str:
    text = _string(value, where)
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(where, f"{_show(text)} is not an IP address") from None


def _host(value: object, where: str) -> str:
    text = _string(value, where).strip()
    if is_ip_literal(text):
        return str(ipaddress.ip_address(text))
    name = o365.normalize_name(text)
    if not _valid_host_name(name):
        raise ConfigError(where, f"{_show(text)} is not a valid host name or IP address")
    return name


def _domain(value: object, where: str) -> str:
    text = _string(value, where).strip()
    name = o365.normalize_name(text)
    if not _valid_host_name(name):
        raise ConfigError(where, f"{_show(text)} is not a valid domain name")
    return name


def _ehlo_name(value: object, where: str) -> str:
    """A host name, or an address literal as RFC 5321 writes it: [192.0.2.1], [IPv6:...]."""
    text = _string(value, where).strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        tagged = inner[:5].lower() == "ipv6:"
        address = inner[5:] if tagged else inner
        if is_ip_literal(address) and tagged == (":" in address):
            return text
        raise ConfigError(where, f"{_show(text)}: write [192.0.2.1] or [IPv6:2001:db8::1]")
    name = o365.normalize_name(text)
    if not _valid_host_name(name):
        raise ConfigError(where, f"{_show(text)} is not a host name or address literal")
    return name


def _valid_host_name(name: str) -> bool:
    """LDH labels of 1-63 characters, at most 253 in all; the last label not all digits."""
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


# --- messages ------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """The YAML name of a value's type, for "must be X, got Y"."""
    names: list[tuple[type, str]] = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "list"),
        (dict, "mapping"),
        (bytes, "binary"),
        (type(None), "null"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: object) -> str:
    """Quote a value for a one-line message: escape unprintables, cut long text."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[: _MAX_SHOWN_CHARS - 3] + "..."
    return f"'{text}'"


def _show_key(key: object) -> str:
    return _show(key)[1:-1]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key

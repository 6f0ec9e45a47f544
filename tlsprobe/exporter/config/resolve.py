"""Resolution of a parsed document into a `Config`: defaults, then tenant, then target.

Per-target values override the tenant's, which override `defaults`, so the scheduler reads
finished `TargetConfig` values and never consults a default again.  Independent units (each
section, tenant and target) are parsed separately, so one run reports every problem found.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from tlsprobe.exporter.config import exo, fields, maintenance, sendparse
from tlsprobe.exporter.config.schema import (
    ADDRESSES,
    DEFAULT_HOSTS_FILE,
    DEFAULT_KEYS,
    DEFAULT_LISTEN_PORT,
    DEFAULT_PORT,
    DNS_KEYS,
    TARGET_KEYS,
    TENANT_KEYS,
    TENANT_NAME,
    TOP_KEYS,
    WEB_KEYS,
    Config,
    ConfigError,
    DnsSettings,
    TargetConfig,
    TenantConfig,
    WebSettings,
)
from tlsprobe.exporter.config.send import SenderConfig
from tlsprobe.exporter.config.values import (
    choice,
    days,
    display_name,
    domain_name,
    duration,
    ehlo_value,
    format_duration,
    integer,
    ip_text,
    kind,
    listing,
    mapping,
    mapping_of_any,
    string_of,
)
from tlsprobe.exporter.config.yamlfile import MAX_YAML_BYTES
from tlsprobe.model import Policy
from tlsprobe.probe.x509.evaluate import TrustStore, TrustStoreError

_T = TypeVar("_T")


def resolve(data: dict[Any, Any], *, base_dir: Path, source: Path | None) -> Config:
    """The Config a top-level mapping describes; raises ConfigError with every problem."""
    return _Parser(base_dir).config(data, source)


@dataclass(frozen=True, slots=True)
class _Defaults:
    """The `defaults:` section; every target starts from these."""

    interval: float = 300.0
    timeout: float = 30.0
    warn_days: float = 21.0
    crit_days: float = 7.0
    fixed_expiry_days: bool = False
    """warn_days or crit_days was set here or in defaults: no lifetime-aware thresholds."""
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
        self._merged: dict[str, dict[str, Any]] = {}

    def section(self, key: str, value: object) -> dict[str, Any]:
        """A tenant's section with its `exchange_online` file folded in, read once."""
        where = f"tenants.{key}"
        if key not in self._merged:
            section = mapping(value, where, TENANT_KEYS)
            self._merged[key] = exo.merged_section(section, where, self.base_dir)
        return self._merged[key]

    def attempt(self, parse: Callable[[], _T]) -> _T | None:
        """Run one unit's parse; record its problem and carry on with the next unit."""
        try:
            return parse()
        except ConfigError as exc:
            self.errors.append(exc)
            return None
        except _Reported:
            return None  # its problems are recorded already

    def each(self, parses: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """Run every field's parse, recording every problem (not only the first); raise
        `_Reported` when any failed, so the unit holding them is dropped."""
        before = len(self.errors)
        values = {name: self.attempt(parse) for name, parse in parses.items()}
        if len(self.errors) > before:
            raise _Reported
        return values

    def config(self, data: dict[Any, Any], source: Path | None) -> Config:
        top = mapping(data, "", TOP_KEYS)
        state_dir = self.attempt(lambda: self.state_dir(top.get("state_dir", "./state")))
        web = self.attempt(lambda: self.web(top.get("web")))
        dns = self.attempt(lambda: dns_settings(top.get("dns"), self.base_dir))
        defaults_and_concurrency = self.attempt(lambda: self.defaults(top.get("defaults")))
        defaults, concurrency = defaults_and_concurrency or (_Defaults(), 50)
        tenants_data = self.attempt(lambda: mapping_of_any(top.get("tenants"), "tenants"))
        tenants: list[TenantConfig] = []
        targets: list[TargetConfig] = []
        for number, (key, value) in enumerate((tenants_data or {}).items(), 1):
            parsed = self.attempt(functools.partial(self.tenant, key, value, defaults, number))
            if parsed is not None:
                tenants.append(parsed[0])
                targets.extend(parsed[1])
        senders = [
            sender
            for key, value in (tenants_data or {}).items()
            for sender in self.attempt(functools.partial(self.senders, key, value, defaults)) or []
        ]
        send = self.attempt(lambda: sendparse.send_side(top, senders, self.base_dir))
        loose = self.attempt(lambda: listing(top.get("targets"), "targets"))
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
            send=send,
        )

    def senders(self, key: object, value: object, defaults: _Defaults) -> list[SenderConfig]:
        """A tenant's `senders:` (the tenant itself is judged by `tenant`)."""
        if not _tenant_named(key) or not isinstance(value, dict) or "senders" not in value:
            return []  # a tenant with a bad name is reported by `tenant`
        where = f"tenants.{key}"
        value = self.section(key, value)
        domains = listing(value.get("accepted_domains"), f"{where}.accepted_domains")
        policy = Policy(
            certificate_domain=fields.connector(value, where),
            accepted_domains=tuple(
                domain_name(d, f"{where}.accepted_domains[{i}]") for i, d in enumerate(domains)
            ),
            warn_days=defaults.warn_days,
            crit_days=defaults.crit_days,
            fixed_expiry_days=defaults.fixed_expiry_days,
            inbound_connector=exo.inbound_name(value, where),
        )
        return sendparse.senders(
            key,
            value["senders"],
            f"{where}.senders",
            policy,
            self.base_dir,
            default_ca=defaults.ca_file,
        )

    def path(self, value: object, where: str) -> Path:
        text = string_of(value, where)
        if not text:
            raise ConfigError(where, "must not be empty")
        return self.base_dir / text

    def state_dir(self, value: object) -> Path:
        path = self.path(value, "state_dir")
        if fields.exists(path) and not path.is_dir():
            raise ConfigError("state_dir", f"{path} exists and is not a directory")
        return path

    def web(self, value: object) -> WebSettings:
        web = mapping(value, "web", WEB_KEYS)
        host, port = fields.listen_address(
            web.get("listen", f":{DEFAULT_LISTEN_PORT}"), "web.listen"
        )
        config_file = None
        if "config_file" in web:
            config_file = self.path(web["config_file"], "web.config_file")
            fields.check_readable(config_file, "web.config_file", MAX_YAML_BYTES)
        allowlist = listing(web.get("probe_allowlist"), "web.probe_allowlist")
        return WebSettings(
            listen_host=host,
            listen_port=port,
            config_file=config_file,
            probe_allowlist=tuple(
                fields.allow_entry(v, f"web.probe_allowlist[{i}]") for i, v in enumerate(allowlist)
            ),
            max_concurrent_requests=integer(
                web.get("max_concurrent_requests", 16), "web.max_concurrent_requests", 1, 10000
            ),
            external_url=fields.external_url(web.get("external_url")),
            max_connections=integer(
                web.get("max_connections", 512), "web.max_connections", 8, 65536
            ),
            header_timeout=_bounded_duration(web, "header_timeout", 10.0, 0.1, 300),
            idle_timeout=_bounded_duration(web, "idle_timeout", 15.0, 0.1, 3600),
            probe_min_interval=_bounded_duration(web, "probe_min_interval", 10.0, 0, 86400),
        )

    def defaults(self, value: object) -> tuple[_Defaults, int]:
        section = mapping(value, "defaults", DEFAULT_KEYS)
        concurrency = integer(section.pop("concurrency", 50), "defaults.concurrency", 1, 10000)
        return self.overrides(section, "defaults", _Defaults()), concurrency

    def overrides(self, section: Mapping[str, object], where: str, base: _Defaults) -> _Defaults:
        """Apply the settings a defaults or target section may override to `base`."""
        readers: dict[str, Callable[[object, str], Any]] = {
            "interval": duration,
            "timeout": duration,
            "warn_days": days,
            "crit_days": days,
            "retries": lambda value, at: integer(value, at, 0, 10),
            "ca_file": self.ca_file,
            "addresses": lambda value, at: choice(value, at, ADDRESSES),
            "ehlo_name": ehlo_value,
            "port": lambda value, at: integer(value, at, 1, 65535),
        }
        before = len(self.errors)
        changes = {
            key: self.attempt(functools.partial(readers[key], value, f"{where}.{key}"))
            for key, value in section.items()
            if key in readers
        }
        # The cross-field rules are checked on the keys that did parse, so that `port: 0` with
        # `interval: 0s` reports both.
        valid: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        if "warn_days" in valid or "crit_days" in valid:
            valid["fixed_expiry_days"] = True
        result = dataclasses.replace(base, **valid) if valid else base
        self.attempt(lambda: _check_consistent(result, section, where))
        if len(self.errors) > before:
            raise _Reported
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
        self, key: object, value: object, defaults: _Defaults, number: int = 1
    ) -> tuple[TenantConfig, list[TargetConfig]]:
        # A tenant's name is in the path of every key below it, so only a valid one is shown.
        if not isinstance(key, str):
            raise ConfigError(
                "tenants",
                f"tenant number {number}: name must be a string (quote it), got {kind(key)}",
            )
        if not TENANT_NAME.fullmatch(key):
            raise ConfigError(
                "tenants",
                f"tenant number {number}: name must be 1-100 letters, digits, '_', '.' or '-'",
            )
        where = f"tenants.{key}"
        section = self.section(key, value)
        domains = listing(section.get("accepted_domains"), f"{where}.accepted_domains")
        tenant = TenantConfig(
            name=key,
            accepted_domains=tuple(
                dict.fromkeys(
                    domain_name(d, f"{where}.accepted_domains[{i}]") for i, d in enumerate(domains)
                )
            ),
            certificate_domain=fields.connector(section, where),
            networks=_networks(section, where),
            inbound_connector=exo.inbound_name(section, where),
            outbound=exo.outbound_routes(section, where),
            labels=fields.labels(section, where),
            maintenance=maintenance.windows(section.get("maintenance"), where),
        )
        raw_targets = listing(section.get("targets"), f"{where}.targets")
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
                        f"duplicate target name (also {where}[{first_index[target.name]}]); "
                        "give each target its own name",
                    )
                )
                continue
            first_index[target.name] = index
            parsed.append(target)
        return parsed

    def target(
        self, value: object, where: str, tenant: TenantConfig, defaults: _Defaults
    ) -> TargetConfig:
        section = mapping(value, where, TARGET_KEYS)
        host, mx = fields.host_or_mx(section, where)
        parsed = self.each(
            {
                "settings": lambda: self.overrides(section, where, defaults),
                "address": lambda: _address(section, where, mx),
                "sni": lambda: fields.sni_setting(section, where, host),
                "connector": lambda: fields.connector(section, where),
                "name": lambda: display_name(section.get("name", host or mx), f"{where}.name"),
                "pins": lambda: fields.expected_pins(section.get("expected_certificate"), where),
                "dns_policies": lambda: fields.dns_policies(section, where, mx),
                "networks": lambda: _networks(section, where),
                "labels": lambda: fields.labels(section, where, tenant.labels),
                "issuer_bound": lambda: fields.issuer_bound(section, where),
                "maintenance": lambda: maintenance.windows(section.get("maintenance"), where),
            }
        )
        settings: _Defaults = parsed["settings"]
        if isinstance(value, dict) and "ca_file" in value and value["ca_file"] is None:
            # An explicit null is the system store, not "inherit defaults.ca_file".
            settings = dataclasses.replace(settings, ca_file=None)
        sni, send_sni = parsed["sni"]
        certificate_domain = parsed["connector"] or tenant.certificate_domain
        dane, mta_sts_domain = parsed["dns_policies"]
        outbound = exo.route_for(tenant.outbound, host, mx)
        relay = bool(certificate_domain or tenant.accepted_domains)
        hostname_required = exo.hostname_required(
            section, where, mx=mx, routed=outbound is not None, relay=relay
        )
        return TargetConfig(
            tenant=tenant.name,
            name=parsed["name"],
            host=host,
            mx=mx,
            port=settings.port,
            mode=fields.mode_setting(section, where, settings.port),
            address=parsed["address"],
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
                fixed_expiry_days=settings.fixed_expiry_days,
                expected=parsed["pins"],
                outbound=outbound,
                hostname_required=hostname_required,
                inbound_connector=tenant.inbound_connector,
            ),
            send_sni=send_sni,
            dane=dane,
            mta_sts_domain=mta_sts_domain,
            networks=parsed["networks"] if "networks" in section else tenant.networks,
            labels=parsed["labels"],
            issuer_bound=parsed["issuer_bound"],
            maintenance=tenant.maintenance + parsed["maintenance"],
        )


def _tenant_named(key: object) -> TypeGuard[str]:
    return isinstance(key, str) and TENANT_NAME.fullmatch(key) is not None


class _Reported(Exception):
    """A unit whose problems `_Parser.each` has recorded: drop it, report nothing more."""


def _networks(section: Mapping[str, object], where: str) -> tuple[str, ...]:
    """`networks`: CIDRs where MX discovery may lead to loopback, link-local or unspecified."""
    items = listing(section.get("networks"), f"{where}.networks")
    return tuple(
        fields.allow_network(str(n), f"{where}.networks[{i}]") for i, n in enumerate(items)
    )


def _address(section: Mapping[str, object], where: str, mx: str | None) -> str | None:
    if "address" not in section:
        return None
    if mx is not None:
        raise ConfigError(f"{where}.address", "not allowed with mx (the MX hosts are discovered)")
    return ip_text(section["address"], f"{where}.address")


# --- sections ------------------------------------------------------------------------------


def dns_settings(value: object, base_dir: Path) -> DnsSettings:
    section = mapping(value, "dns", DNS_KEYS)
    hosts_file: Path | None = DEFAULT_HOSTS_FILE
    if section.get("hosts_file", True) is False:
        hosts_file = None
    elif "hosts_file" in section:
        text = string_of(section["hosts_file"], "dns.hosts_file")
        if not text:
            raise ConfigError("dns.hosts_file", "must be a path, or false to ask DNS only")
        hosts_file = base_dir / text
        # Named here, it must be one (only its head is read, so any size does).
        fields.check_readable(hosts_file, "dns.hosts_file", None)
    nameservers = listing(section.get("nameservers"), "dns.nameservers")
    if "nameservers" in section and not nameservers:
        raise ConfigError(
            "dns.nameservers", "must not be empty (omit it to use the system resolver)"
        )
    timeout = duration(section.get("timeout", 5.0), "dns.timeout")
    if timeout <= 0:
        raise ConfigError("dns.timeout", "must be greater than 0")
    return DnsSettings(
        nameservers=tuple(ip_text(v, f"dns.nameservers[{i}]") for i, v in enumerate(nameservers)),
        port=integer(section.get("port", 53), "dns.port", 1, 65535),
        timeout=timeout,
        hosts_file=hosts_file,
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


def _bounded_duration(
    section: Mapping[str, object], key: str, default: float, low: float, high: float
) -> float:
    where = f"web.{key}"
    seconds = duration(section.get(key, default), where)
    if not low <= seconds <= high:
        raise ConfigError(where, f"must be {low:g}s-{high:g}s")
    return seconds

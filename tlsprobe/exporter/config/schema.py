"""The configuration's shape: its keys, its frozen values and the error every problem becomes.

Nothing here reads or validates; `resolve` builds these values from a parsed document and
`tlsprobe.exporter.config` is the public entry point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tlsprobe.exporter.config.allowrules import Rule, parse_rule
from tlsprobe.exporter.config.send import SendSideConfig
from tlsprobe.model import Mode, OutboundRule, Policy

DEFAULT_PORT: Final = 25
DEFAULT_LISTEN_PORT: Final = 9825
MAX_DURATION: Final = 365 * 86400.0
MAX_DAYS: Final = 3650
ADDRESSES: Final = ("all", "one")

TENANT_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
"""What a tenant's name may be (it is a metric label and, for `import-exo`, a file name)."""
TOP_KEYS = ("state_dir", "web", "dns", "defaults", "tenants", "targets", "receiver")
WEB_KEYS = (
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
DEFAULT_HOSTS_FILE: Final = Path("/etc/hosts")
DNS_KEYS = ("nameservers", "port", "timeout", "hosts_file")
DEFAULT_KEYS = (
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
TENANT_KEYS = (
    "accepted_domains",
    "certificate_domain",
    "targets",
    "senders",
    "networks",
    "exchange_online",
    "inbound_connector",
    "outbound_connectors",
    "labels",
)
TARGET_KEYS = (
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
    "dane",
    "mta_sts_domain",
    "networks",
    "hostname_check",
    "labels",
)

MAX_LABELS: Final = 16
"""Labels per target, its tenant's and its own together (`labels:`)."""
MAX_LABEL_NAME: Final = 64
MAX_LABEL_VALUE: Final = 128
RESERVED_LABELS: Final = frozenset(
    {
        # Every label name of tlsprobe's own series (tests hold this to the metric table),
        # and Prometheus' target labels: a configured label must never shadow one in a join.
        *("tenant", "target", "host", "address", "port", "sender", "job", "instance"),
        *("phase", "check", "reason", "version", "cipher", "dnssec", "domain", "mode"),
        *("fingerprint_sha256", "subject", "issuer", "serial", "names", "status", "result"),
        *("certificate_domain", "accepted_domains", "change", "reasons", "previous_failing"),
        *("outcome", "python", "event_loop", "url", "le", "quantile", "alertname", "severity"),
        *("connector", "detail", "direction", "other_tenant", "rule"),
    }
)
"""Names `labels:` may not use."""


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
    probe_rules: tuple[Rule, ...] = dataclasses.field(init=False, repr=False, compare=False)
    """`probe_allowlist` parsed, once, when the settings are built."""

    def __post_init__(self) -> None:
        rules = tuple(parse_rule(entry) for entry in self.probe_allowlist)
        object.__setattr__(self, "probe_rules", rules)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver used for MX and A/AAAA discovery."""

    nameservers: tuple[str, ...]
    """IP addresses; empty means the system resolver (/etc/resolv.conf)."""
    port: int
    timeout: float
    hosts_file: Path | None = DEFAULT_HOSTS_FILE
    """Asked before DNS for configured hosts (as `tlsprobe check`'s system resolver does);
    None when `hosts_file: false`."""


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
    dane: bool = False
    """Judge TLSA records (`dane` check); default true for mx targets."""
    mta_sts_domain: str | None = None
    """MTA-STS policy domain (`mta_sts` check); default the mail domain of an mx target."""
    networks: tuple[str, ...] = ()
    """The tenant's networks: MX-discovered loopback, link-local or unspecified addresses
    inside one are probed; others of those kinds are skipped (exporter/mxguard.py)."""
    labels: tuple[tuple[str, str], ...] = ()
    """`labels:` of the tenant, overridden by the target's, sorted by name: the extra labels of
    `tlsprobe_target_info`."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """An outbound connector: where it delivers (smart hosts, or the MX of its recipient
    domains) and what it validates (`rule`)."""

    rule: OutboundRule
    smart_hosts: tuple[str, ...] = ()
    recipient_domains: tuple[str, ...] = ()
    use_mx: bool = False


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """An Office 365 tenant: the domains its connector accepts mail for."""

    name: str
    accepted_domains: tuple[str, ...]
    """Normalized (lower-case A-labels, no trailing dot)."""
    certificate_domain: str | None
    """The connector's TlsSenderCertificateName, normalized (`*.contoso.com` or a literal)."""
    networks: tuple[str, ...] = ()
    """CIDR networks MX discovery may lead to even when loopback, link-local or unspecified."""
    inbound_connector: str | None = None
    """The Exchange name of the OnPremises inbound connector (from the import)."""
    outbound: tuple[OutboundRoute, ...] = ()
    """The outbound connectors that deliver to the tenant's servers (from the import)."""
    labels: tuple[tuple[str, str], ...] = ()
    """`labels:`, sorted by name; every target of the tenant inherits them."""


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
    send: SendSideConfig | None = None
    """The receiver and the tenants' senders (`receiver:`); None: the send side is off."""

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

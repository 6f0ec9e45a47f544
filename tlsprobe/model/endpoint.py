"""What is probed: the endpoint, its key, the policy it is judged against, and host[:port]
parsing."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeAlias

from tlsprobe.model.enums import Mode, TlsSettings

EndpointKey: TypeAlias = tuple[str, str, str, str, int]
"""(tenant, target, host, address, port): one probed endpoint, wherever it is kept (latest
results, history, logs); address is "" when unknown. As metric labels, the port is its text."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One thing to connect to: the name checked, and where and how to connect."""

    host: str
    """Host name the certificate is judged against (an IP literal skips the hostname check)."""
    port: int = 25
    mode: Mode = Mode.STARTTLS
    address: str | None = None
    """IP to connect to; None means resolve `host`."""
    sni: str | None = None
    """Server name sent in the ClientHello; None sends none (IP literals never get one)."""
    ehlo_name: str = "localhost"
    target: str = ""
    """Configured target name (the `target` metric label); defaults to host."""

    @property
    def name(self) -> str:
        return self.target or self.host


@dataclass(frozen=True, slots=True)
class OutboundRule:
    """The Exchange Online outbound connector that delivers to a server: what it validates."""

    name: str
    """The connector's Exchange name (`Get-OutboundConnector`'s `Name`)."""
    tls_settings: TlsSettings
    tls_domain: str | None = None
    """`TlsDomain` (a name or `*.domain`), normalized; None: the smart host's own name."""

    @property
    def rule(self) -> str:
        """The rule as Exchange names it: `TlsSettings DomainValidation, TlsDomain *.x.com`."""
        text = f"TlsSettings {self.tls_settings.value}"
        if self.tls_settings is TlsSettings.DOMAIN_VALIDATION:
            text += f", TlsDomain {self.tls_domain or '(the smart host name)'}"
        return text


@dataclass(frozen=True, slots=True)
class ConnectorRef:
    """The Exchange Online connector a verdict speaks for (`o365_ready` and its outputs)."""

    direction: str
    """"inbound" (the relay sends to Exchange Online) or "outbound" (Exchange Online delivers
    to the server)."""
    name: str
    """The connector's Exchange name; "" when the configuration does not know it."""
    rule: str
    """What that connector demands, in Exchange terms."""

    def describe(self) -> str:
        named = f" '{self.name}'" if self.name else ""
        return f"{self.direction} connector{named} ({self.rule})"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the certificate is judged against. Pure data; no trust store here."""

    certificate_domain: str | None = None
    """Connector TlsSenderCertificateName: literal name or `*.domain`."""
    accepted_domains: tuple[str, ...] = ()
    warn_days: float = 21.0
    crit_days: float = 7.0
    expected: tuple[str, ...] = ()
    """Pinned certificates: SHA-256 fingerprints (hex) or `<I>issuer<S>subject` strings."""
    fixed_expiry_days: bool = False
    """True when warn_days or crit_days was configured: both apply as they are. Otherwise the
    thresholds follow the certificate's lifetime (`probe.evaluate.expiry_thresholds`)."""
    outbound: OutboundRule | None = None
    """Server side: the outbound connector that routes to this host; it governs readiness."""
    hostname_required: bool = True
    """False: the RFC 9525 `hostname` check is informational (a relay no MX and no outbound
    connector points at: nobody dials it by that name)."""
    inbound_connector: str | None = None
    """The Exchange name of the OnPremises inbound connector `certificate_domain` comes from."""

    @property
    def connector(self) -> ConnectorRef:
        """The connector the verdict speaks for: the outbound one when it routes here, else
        the inbound (OnPremises) one whose rule the certificate is held to."""
        if self.outbound is not None:
            return ConnectorRef("outbound", self.outbound.name, self.outbound.rule)
        if self.certificate_domain:
            rule = f"TlsSenderCertificateName {self.certificate_domain}"
        elif self.accepted_domains:
            rule = "a certificate name in an accepted domain"
        else:
            rule = "no certificate domain configured"
        return ConnectorRef("inbound", self.inbound_connector or "", rule)


def is_ip_literal(text: str) -> bool:
    """An IPv4 or IPv6 address (no brackets, no port)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostPortError(ValueError):
    """A HOST[:PORT] string that cannot be parsed."""


def parse_host_port(value: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [v6] or [v6]:PORT. A bare IPv6 literal has no port."""
    value = value.strip()
    port: str | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise HostPortError(f"cannot parse {value!r}: expected [IPv6]:PORT")
        port = rest[1:] or None
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host = value
    if not host or any(c.isspace() for c in host):
        raise HostPortError(f"invalid host {value!r}")
    if port is None:
        return host, None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise HostPortError(f"invalid port {port!r}: must be 1-65535")
    return host, int(port)

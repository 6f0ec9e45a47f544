"""The server side as Exchange Online's outbound connector judges it (`outbound_connector`).

When Exchange Online delivers to an on-premises server through an outbound connector (its smart
host, or the MX of its recipient domains), it validates the server's certificate by the
connector's `TlsSettings`: `EncryptionOnly` needs a TLS session only, `CertificateValidation` a
trusted, unexpired chain, `DomainValidation` that and a certificate name matching `TlsDomain`
(a literal name, or `*.domain` for the domain and its whole subtree; without `TlsDomain`, the
smart host's own name). Pure function of checks already made and the leaf's names: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlsprobe.model import Check, CheckName, OutboundRule, Status, TlsSettings, is_ip_literal
from tlsprobe.probe.names import show
from tlsprobe.probe.x509 import o365

OUTBOUND = CheckName.OUTBOUND_CONNECTOR

SYMPTOM = (
    "queues the mail this connector routes here and retries, then returns it to the sender "
    "(the TLS negotiation fails the connector's TlsSettings)"
)


def check_outbound(
    rule: OutboundRule,
    host: str | None,
    dns_names: Sequence[str],
    common_names: Sequence[str],
    trusted: Check,
) -> Check:
    """Would the outbound connector `rule` deliver to a server that served this chain?

    `trusted` is the `chain_trusted` verdict of the same chain (a path to a trusted root, every
    certificate on it valid now): the connector weighs it as its `TlsSettings` say, so an
    `EncryptionOnly` connector to a self-signed smart host is ready while `chain_trusted` still
    reports the chain."""
    who = f"outbound connector {show(rule.name)} ({rule.rule})"
    if rule.tls_settings is TlsSettings.ENCRYPTION_ONLY:
        return Check(OUTBOUND, Status.OK, f"{who}: TLS session established, nothing more asked")
    if trusted.status is not Status.OK:
        return _fail(f"{who} needs a trusted chain: {trusted.message}")
    if rule.tls_settings is TlsSettings.CERTIFICATE_VALIDATION:
        return Check(OUTBOUND, Status.OK, f"{who}: trusted chain")
    return _domain_validation(rule, who, host, dns_names, common_names)


def _domain_validation(
    rule: OutboundRule,
    who: str,
    host: str | None,
    dns_names: Sequence[str],
    common_names: Sequence[str],
) -> Check:
    wanted = rule.tls_domain or host
    if not wanted or (rule.tls_domain is None and is_ip_literal(wanted.strip("[]"))):
        return Check(
            OUTBOUND,
            Status.UNKNOWN,
            f"{who}: no TlsDomain and the smart host is an address; the name is not judged",
        )
    # Certificate names as a TLS client reads them: SAN dNSNames, the CN only without a SAN.
    names = list(dns_names) or list(common_names)
    try:
        pattern = o365.ConnectorPattern.parse(wanted)
    except o365.ConnectorPatternError:
        return _fail(f"{who}: the TlsDomain is not a valid name; fix it on the connector")
    if pattern.wildcard:
        matched = o365.match_connector(pattern, names).matched
    else:
        matched = o365.hostname_matches(pattern.domain, names)
    if matched is not None:
        return Check(
            OUTBOUND, Status.OK, f"{who}: trusted chain, certificate name {show(matched)} matches"
        )
    shown = ", ".join(show(n) for n in names[:5]) or "none"
    return _fail(f"{who}: no certificate name matches {show(str(pattern))}; names: {shown}")


def _fail(message: str) -> Check:
    return Check(OUTBOUND, Status.CRITICAL, message, SYMPTOM)

"""Render a `ProbeResult` for people (the 3 a.m. text report) and for programs (JSON).

The JSON shape is a documented contract (README, "JSON output"); the exporter's
`/probe?debug=true` and `tlsprobe check --json` both use `to_json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tlsprobe import policyreport
from tlsprobe.model import (
    UNREADABLE,
    CertFacts,
    CertPart,
    Phase,
    Policy,
    ProbeResult,
    Status,
    readable_time,
)
from tlsprobe.probe.software import MailServer, identify
from tlsprobe.probe.x509.evaluate import days_left, expiry_thresholds


def iso_time(moment: datetime) -> str | None:
    """ISO 8601 in UTC; None (JSON null) for a date the certificate's encoding did not give.
    The JSON output and the exporter's outcome log write certificate dates with it."""
    if not readable_time(moment.timestamp()):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def cert_json(facts: CertFacts) -> dict[str, Any]:
    return {
        "subject": facts.subject,
        "issuer": facts.issuer,
        "serial": facts.serial,
        "not_before": iso_time(facts.not_before),
        "not_after": iso_time(facts.not_after),
        "sha256": facts.sha256,
        "dns_names": list(facts.dns_names),
        "common_names": list(facts.common_names),
        "key": facts.key,
        "signature_algorithm": facts.signature_algorithm,
        "is_ca": facts.is_ca,
        "self_issued": facts.self_issued,
        "exchange_name": facts.exchange_name,
    }


def to_json(result: ProbeResult) -> dict[str, Any]:
    endpoint = result.endpoint
    return {
        "target": {
            "name": endpoint.name,
            "host": endpoint.host,
            "port": endpoint.port,
            "address": result.address,
            "mode": endpoint.mode.value,
            "sni": endpoint.sni,
        },
        "status": result.status.label,
        "error": (
            {"kind": result.error.kind.value, "message": result.error.message}
            if result.error
            else None
        ),
        "tls": (
            {"version": result.tls.version, "cipher": result.tls.cipher} if result.tls else None
        ),
        "chain": [cert_json(c) for c in result.chain],
        "checks": [
            {"name": c.name, "status": c.status.label, "message": c.message}
            | ({"exchange_online": c.symptom} if c.symptom and c.status is not Status.OK else {})
            for c in result.checks
        ],
        "o365_ready": result.o365_ready,
        "o365_connector": connector_json(result),
        "o365_failing": [str(name) for name in result.o365_failing],
        **({"dane": policyreport.dane_json(result.dane)} if result.dane else {}),
        "started_at": result.started_at,
        "phases": {name: round(seconds, 6) for name, seconds in result.phases.items()},
    }


def connector_json(result: ProbeResult) -> dict[str, str] | None:
    """The connector `o365_ready` speaks for: direction, Exchange name, rule."""
    ref = result.connector
    return None if ref is None else {"direction": ref.direction, "name": ref.name, "rule": ref.rule}


def summary_line(
    result: ProbeResult,
    now: datetime,
    *,
    policy: Policy | None = None,
    timeout: float | None = None,
) -> str:
    """Nagios first line: `TLSPROBE STATUS - what | perfdata`.

    Perfdata follows the plugin guidelines, `'label'=value[UOM];[warn];[crit];[min];[max]`:
    `days_left` (the leaf's) with the thresholds `not_expired` applies to it under `policy`,
    `total` in seconds from 0 to the probe's `timeout`; without a policy or timeout that field
    is empty. The thresholds are plain numbers (`days_left=90.0;21;7;;`, as check_ssl_cert
    prints), not the guidelines' range `21:` that "alert below 21" strictly is: Icinga 2 and
    Checkmk keep only plain-number thresholds (for graphs) and drop ranges.
    """
    endpoint = result.endpoint
    where = f"{endpoint.host}:{endpoint.port}"
    if result.error:
        what = f"{where}: {result.error.kind.value}: {result.error.message}"
    else:
        failing = [c for c in result.checks if c.status in (Status.CRITICAL, Status.WARNING)]
        if not failing and result.status is Status.UNKNOWN:
            failing = [c for c in result.checks if c.status is Status.UNKNOWN]
        what = f"{where}: " + (
            "; ".join(f"{c.name}: {c.message}" for c in failing) if failing else "certificate OK"
        )
    total = result.phases.get(Phase.TOTAL, 0.0)
    perf = [perfdata("total", f"{total:.3f}", "s", minimum=0.0, maximum=timeout)]
    leaf = result.leaf
    if leaf is not None and not leaf.unreadable(CertPart.VALIDITY):
        warn, crit = expiry_thresholds(policy, leaf) if policy is not None else (None, None)
        left = f"{days_left(leaf, now):.1f}"
        perf.insert(0, perfdata("days_left", left, warn=warn, crit=crit))
    return f"TLSPROBE {result.status.name} - {what} | {' '.join(perf)}"


def perfdata(
    label: str,
    value: str,
    uom: str = "",
    *,
    warn: float | None = None,
    crit: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> str:
    """One perfdata figure, `label=value[UOM];[warn];[crit];[min];[max]`, every number in the
    value's unit and None as an empty field. Labels here never need quotes."""
    fields = ";".join("" if f is None else _number(f) for f in (warn, crit, minimum, maximum))
    return f"{label}={value}{uom};{fields}"


def _number(value: float) -> str:
    """A plain decimal (the guidelines' class [-0-9.]: no exponent), at most 3 decimals."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def human(
    result: ProbeResult,
    now: datetime,
    *,
    sender: bool = False,
    policy: Policy | None = None,
    timeout: float | None = None,
) -> str:
    """The report; `sender=True` for a client certificate a relay presented (send side).
    `policy` and `timeout` give the perfdata its thresholds and bounds (`summary_line`)."""
    lines = [summary_line(result, now, policy=policy, timeout=timeout), ""]
    lines += _sender(result) if sender else _connection(result)
    if result.leaf is not None:
        lines += _leaf(result.leaf, now, identify(result.transcript))
        lines += _chain(result.chain)
    lines += policyreport.dane_lines(result.dane) if result.dane else []
    lines += _checks(result)
    return "\n".join(lines) + "\n"


def _connection(result: ProbeResult) -> list[str]:
    endpoint = result.endpoint
    address = result.address or "-"
    tls = f"{result.tls.version} {result.tls.cipher}" if result.tls else "no TLS session"
    sni = endpoint.sni or "(none)"
    return [
        f"Endpoint      {endpoint.host} port {endpoint.port} via {address}, "
        f"{endpoint.mode.value}, SNI {sni}",
        f"TLS           {tls}",
        f"Office 365    {result.readiness}",
        "",
    ]


def _sender(result: ProbeResult) -> list[str]:
    endpoint = result.endpoint
    tls = f"{result.tls.version} {result.tls.cipher}" if result.tls else "no TLS session"
    return [
        f"Sender        {result.address or '-'} (EHLO {endpoint.host}) to port {endpoint.port}, "
        f"SNI {endpoint.sni or '(none)'}",
        f"TLS           {tls}",
        f"Office 365    {'ready' if result.o365_ready else 'NOT ready'} for a certificate-based "
        "connector (client certificate, as Exchange Online sees it)",
        "",
    ]


def _leaf(leaf: CertFacts, now: datetime, server: MailServer) -> list[str]:
    left = days_left(leaf, now)
    remaining = f"{left:.0f} days left" if left >= 0 else f"EXPIRED {-left:.0f} days ago"
    valid = (
        UNREADABLE
        if leaf.unreadable(CertPart.VALIDITY)
        else f"{leaf.not_before:%Y-%m-%d} to {leaf.not_after:%Y-%m-%d %H:%M} UTC ({remaining})"
    )
    return [
        "Certificate",
        f"  subject     {leaf.subject}",
        f"  names (SAN) {', '.join(leaf.dns_names) or '(none: CN only)'}",
        f"  issuer      {leaf.issuer}",
        f"  valid       {valid}",
        f"  key         {leaf.key}, {leaf.signature_algorithm}",
        f"  sha256      {leaf.sha256}",
        f"  serial      {leaf.serial}",
        *_install(leaf, server),
        "",
    ]


_CHAIN_FILE = "a file with this certificate, then its intermediates"
_INSTALL = {
    MailServer.POSTFIX: "  Postfix     smtp_tls_chain_files (relaying) / smtpd_tls_chain_files "
    "(receiving): the key, this certificate, then its intermediates",
    MailServer.EXIM: f"  Exim        tls_certificate = {_CHAIN_FILE} (remote_smtp transport "
    "for relaying, main section for receiving)",
}


def _install(leaf: CertFacts, server: MailServer) -> list[str]:
    """How to bind this certificate, for the server the banner names (all when it names none)."""
    exchange = f"  Exchange    Set-SendConnector -TlsCertificateName '{leaf.exchange_name}'"
    if server is MailServer.EXCHANGE:
        return [exchange]
    if server is MailServer.UNKNOWN:
        return [exchange, *_INSTALL.values()]
    return [_INSTALL[server]]


def _chain(chain: Iterable[CertFacts]) -> list[str]:
    chain = list(chain)
    lines = ["Chain as sent"]
    for index, cert in enumerate(chain):
        kind = "root" if cert.self_issued else ("intermediate" if index else "leaf")
        lines.append(f"  {index}  {kind:<12} {cert.subject}")
        readable = not cert.unreadable(CertPart.VALIDITY)
        until = f"{cert.not_after:%Y-%m-%d}" if readable else UNREADABLE
        lines.append(f"     {'':<12} issued by {cert.issuer}, until {until}")
    root_sent = any(c.self_issued for c in chain[1:])
    lines.append("  (root sent along: harmless)" if root_sent else "  (root not sent: normal)")
    lines.append("")
    return lines


def _checks(result: ProbeResult) -> list[str]:
    if not result.checks:
        return []
    lines = ["Checks"]
    for check in result.checks:
        lines.append(f"  {check.status.name:<9} {check.name:<20} {check.message}")
        if check.symptom and check.status in (Status.CRITICAL, Status.WARNING):
            lines.append(f"  {'':<9} {'':<20} Exchange Online: {check.symptom}")
    return lines

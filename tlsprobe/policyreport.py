"""Render DANE findings and an MTA-STS domain policy for people and for JSON.

`report` shows a probe result; this module adds what `tlsprobe check --dane` and
`--mta-sts DOMAIN` learnt: every TLSA record with its verdict (which one matched, which is the
staged next key, which are unusable and why), and the policy domain's TXT id, mode, `mx`
patterns, `max_age` and TLS-RPT destinations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlsprobe.model import DaneFindings, DnssecStatus, TlsaMatch, TlsaVerdict
from tlsprobe.probe.listing import REPORT_ITEMS, item, listed

if TYPE_CHECKING:
    # Only a type here: `tlsprobe check` without --mta-sts need not load the policy parser.
    from tlsprobe.probe.dns.mtasts import DomainPolicy


def dane_json(findings: DaneFindings) -> dict[str, Any]:
    return {
        "name": findings.name,
        "dnssec": findings.status.value,
        "mx_dnssec": findings.mx_status.value if findings.mx_status else None,
        # A failed lookup decides nothing: whether DANE applies is not known (null).
        "applicable": None if findings.status is DnssecStatus.FAILED else findings.applicable,
        "detail": findings.detail or None,
        # The first REPORT_ITEMS records, matched ones first; `records_total` counts them all.
        "records": [
            {"record": v.record.text, "match": v.match.value, "note": v.note}
            for v in _shown(findings)
        ],
        "records_total": len(findings.records),
    }


def _shown(findings: DaneFindings) -> list[TlsaVerdict]:
    order = sorted(findings.records, key=lambda v: v.match is not TlsaMatch.MATCHED)
    return order[:REPORT_ITEMS]


def dane_lines(findings: DaneFindings) -> list[str]:
    mx = f", MX {findings.mx_status.value}" if findings.mx_status else ""
    lines = [f"DANE          {findings.name} TLSA ({findings.status.value}{mx})"]
    if findings.detail:
        lines.append(f"  resolver    {findings.detail}")
    if findings.status is DnssecStatus.BOGUS:
        lines.append("  bogus: DNSSEC validation failed; validating senders defer every message")
    elif findings.status is DnssecStatus.FAILED:
        lines.append("  lookup failed: DANE not judged; validating senders that see it defer")
    elif not findings.records:
        lines.append("  no TLSA records: DANE not applicable")
    for verdict in _shown(findings):
        lines.append(f"  {verdict.match.value:<10}  {verdict.record.text}")
        lines.append(f"  {'':<10}  {verdict.note}")
    if len(findings.records) > REPORT_ITEMS:
        lines.append(f"  ... and {len(findings.records) - REPORT_ITEMS} more records")
    return [*lines, ""]


def sts_json(domain: DomainPolicy) -> dict[str, Any]:
    policy = domain.policy
    return {
        "domain": domain.domain,
        "id": domain.policy_id,
        "error": domain.error or None,
        "mode": policy.mode.value if policy else None,
        "max_age": policy.max_age if policy else None,
        "mx": [item(m) for m in policy.mx[:REPORT_ITEMS]] if policy else [],
        "mx_total": len(policy.mx) if policy else 0,
        "policy_sha256": policy.sha256 if policy else None,
        "tlsrpt_rua": list(domain.tlsrpt_rua),
    }


def sts_lines(domain: DomainPolicy) -> list[str]:
    policy = domain.policy
    if not domain.published:
        head = f"MTA-STS       {domain.domain}: no policy published (not applicable)"
    elif policy is None:
        head = f"MTA-STS       {domain.domain} id {domain.policy_id or '-'}: {domain.error}"
    else:
        head = (
            f"MTA-STS       {domain.domain} id {domain.policy_id}: mode {policy.mode.value}, "
            f"max_age {policy.max_age}s, mx {listed(policy.mx, REPORT_ITEMS, ', ') or '(none)'}"
        )
    rua = ", ".join(domain.tlsrpt_rua) or "(no _smtp._tls record)"
    return [head, f"TLS-RPT       {rua}", ""]

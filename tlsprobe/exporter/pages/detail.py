"""The detail view of one endpoint (`GET /endpoint?...`): what an alert's `detail_url` opens.

Everything an on-call engineer needs about one endpoint on one page: the verdict and each
check's finding with the Exchange Online symptom, the chain exactly as the server sent it, the
certificate timeline (spans and every change, rollbacks named) and a link that probes it again
with the SMTP transcript (`/probe?debug=true`). Pure: the server passes the state and history.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

from tlsprobe.exporter import links
from tlsprobe.exporter.history.store import ChangeEvent, Drift, HistoryStore, TimelineEntry
from tlsprobe.exporter.history.timeline import Change, Span, changes, spans
from tlsprobe.exporter.pages.status import STATUS_COLOURS, STYLE, age, change_words, when
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import (
    UNREADABLE,
    CertFacts,
    CertPart,
    EndpointKey,
    ProbeResult,
    readable_time,
)
from tlsprobe.probe.change import Change as ChangeClassified

e = html.escape


def detail_page(state: EndpointState, history: HistoryStore | None, started_at: float) -> str:
    """The detail view with the endpoint's history read from the store (blocking: a thread)."""
    tenant, target, host, address, port = state.label_values
    key = (tenant, target, host, address, int(port))
    timeline, events, classes = read_history(history, key)
    return detail_html(state, timeline, events, time.time(), started_at, classes=classes)


Classes = dict[tuple[EndpointKey, float], ChangeClassified]


def read_history(
    history: HistoryStore | None, key: EndpointKey
) -> tuple[list[Span], list[Change], Classes]:
    """One history row's spans, changes and the class of each change (blocking: a thread);
    none without a history."""
    if history is None:
        return [], [], {}
    tenant, target, host, _, _ = key
    served: list[TimelineEntry] = [
        entry for entry in history.timeline(host, tenant=tenant, target=target) if entry.key == key
    ]
    events: list[ChangeEvent] = history.change_events(key)
    return spans(served, events), changes(events), history.change_classes(key)


def detail_html(
    state: EndpointState,
    spans: Sequence[Span],
    changes: Sequence[Change],
    now: float,
    started_at: float,
    *,
    classes: Mapping[tuple[EndpointKey, float], ChangeClassified] | None = None,
) -> str:
    tenant, target, host, address, port = state.label_values
    result = state.result
    restored = " (restored at start)" if result.started_at < started_at else ""
    title = f"{tenant}/{target}: {host} at {address}:{port}"
    colour = STATUS_COLOURS[result.status]
    parts = [
        page_head(title),
        f'<p>Status <b style="color:#fff;background:{colour};padding:0 6px">'
        f"{result.status.name}</b>; Exchange Online {e(result.readiness)}. "
        f"Last probe {when(result.started_at)}"
        f" ({age(now - result.started_at)}{restored}); page generated {when(now)}.</p>\n",
        f'<p><a href="{e(links.probe_debug_path(tenant, target))}">Probe again now, with the'
        " SMTP transcript</a> (<code>/probe?debug=true</code>)</p>\n",
        checks_html(result),
        chain_html(result.chain, now),
        history_html(spans, changes, state.key, classes or {}),
        _latest_change(state),
        "</body></html>\n",
    ]
    return "".join(parts)


def page_head(title: str) -> str:
    """The document up to and including the `<h1>`, with the way back to the status page."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}'
        f'</title>\n{STYLE}</head><body>\n<p><a href="/">&larr; all endpoints</a></p>\n'
        f"<h1>{e(title)}</h1>\n"
    )


def checks_html(result: ProbeResult) -> str:
    rows = [
        f"<tr><td>{e(c.name)}</td><td>{c.status.name}</td><td>{e(c.message)}</td>"
        f"<td>{e(c.symptom) or '-'}</td></tr>"
        for c in result.checks
    ]
    error = ""
    if result.error is not None:
        error = (
            f"<p>Probe failed: <b>{e(result.error.kind.value)}</b>: {e(result.error.message)}</p>"
        )
    tls = ""
    if result.tls is not None:
        tls = f"<p>TLS: {e(result.tls.version)}, {e(result.tls.cipher)}</p>"
    table = (
        "<table><thead><tr><th>Check</th><th>Status</th><th>Finding</th>"
        "<th>Exchange Online symptom</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p>No checks: no certificate was seen.</p>"
    )
    return f"<h2>Checks</h2>\n{error}{tls}{table}\n"


def chain_html(chain: Sequence[CertFacts], now: float, *, sender: str = "the server") -> str:
    """The chain in the order `sender` sent it (0 is the leaf)."""
    if not chain:
        return "<h2>Chain as sent</h2>\n<p>No certificate was received.</p>\n"
    rows = []
    for index, cert in enumerate(chain):
        days = (cert.not_after.timestamp() - now) / 86400
        names = ", ".join(cert.dns_names) or "-"
        validity = (
            UNREADABLE
            if cert.unreadable(CertPart.VALIDITY)
            else f"{when(cert.not_before.timestamp())}<br>{when(cert.not_after.timestamp())}"
            f"<br><small>{days:.0f} days left</small>"
        )
        rows.append(
            f"<tr><td>{index}</td><td>{e(cert.subject)}<br><small>issuer {e(cert.issuer)}"
            f"</small></td><td>{e(names)}</td><td>{validity}</td>"
            f"<td>{e(cert.key)}<br><small>{e(cert.signature_algorithm)}</small></td>"
            f"<td><code>{e(cert.sha256)}</code><br><small>serial {e(cert.serial)}</small></td></tr>"
        )
    return (
        f"<h2>Chain as sent</h2>\n<p>In the order {sender} sent it (0 is the leaf).</p>\n"
        "<table><thead><tr><th>#</th><th>Subject</th><th>Names</th><th>Valid</th><th>Key</th>"
        "<th>SHA-256</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>\n"
    )


def _until(not_after: float) -> str:
    return when(not_after) if readable_time(not_after) else UNREADABLE


def _classified(change: ChangeClassified | None) -> str:
    return f": {change_words(change)}" if change is not None else ""


def _latest_change(state: EndpointState) -> str:
    return latest_change_html(state.drift)


def latest_change_html(drift: Drift | None) -> str:
    """How the latest change was classified, and whether it paged; empty before one."""
    if drift is None or drift.change is None or not drift.changes_total:
        return ""
    return f"<p>Latest change ({when(drift.since)}): {change_words(drift.change)}.</p>\n"


def history_html(
    spans: Sequence[Span],
    changes: Sequence[Change],
    key: EndpointKey,
    classes: Mapping[tuple[EndpointKey, float], ChangeClassified],
) -> str:
    if not spans:
        return "<h2>Certificate history</h2>\n<p>Nothing recorded yet.</p>\n"
    span_rows = [
        f"<tr><td>{when(s.start)}</td><td>{when(s.end)}{' (current)' if s.current else ''}</td>"
        f"<td><code>{e(s.cert.fingerprint[:16])}</code>"
        f"{' <b>rollback</b>' if s.rollback else ''}</td><td>{e(s.cert.subject)}</td>"
        f"<td>{e(', '.join(s.cert.names) or '-')}</td><td>{_until(s.cert.not_after)}</td></tr>"
        for s in spans
    ]
    rollback = " (rollback to a certificate served before)"
    change_rows = [
        f"<li>{when(c.at)}: <code>{e((c.old or '?')[:16])}</code> &rarr; "
        f"<code>{e(c.new[:16])}</code>{rollback if c.rollback else ''}"
        f"{_classified(classes.get((key, c.at)))}</li>"
        for c in changes
    ]
    return (
        "<h2>Certificate history</h2>\n<table><thead><tr><th>From</th><th>Until</th>"
        "<th>Fingerprint</th><th>Subject</th><th>Names</th><th>Expires</th></tr></thead><tbody>"
        + "".join(span_rows)
        + "</tbody></table>\n<h3>Changes</h3>\n<ul>"
        + ("".join(change_rows) or "<li>none</li>")
        + "</ul>\n"
    )

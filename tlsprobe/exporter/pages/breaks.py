"""The status page's "What breaks when": the forecast's entries as a table, and a timeline.

The entries are `tlsprobe.exporter.forecast.forecast`'s, the same function `tlsprobe forecast`
prints, so the page and the command line never disagree. The timeline is inline SVG, drawn on
the server (no script): one bar per endpoint's certificate from now to its expiry (the chain's
first certificate to expire, as `not_expired` judges it), coloured by the endpoint's verdict,
with the warning and critical thresholds `expiry_thresholds` applies to that certificate marked
on it. Both are bounded: `LIMIT` entries and bars, the soonest, then how many more there are.
SVG text is XML: everything is escaped, and control characters (not allowed in XML) replaced.
"""

from __future__ import annotations

import heapq
import html
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import NamedTuple

from tlsprobe.exporter.forecast import DEFAULT_DAYS, Entry
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import CertFacts, CertPart, Policy, Status
from tlsprobe.probe.names import host_port
from tlsprobe.probe.x509.evaluate import expiry_thresholds

LIMIT = 50
"""Entries in the table, and bars in the timeline: the soonest; the rest are counted."""
_DAY = 86400.0
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

Policies = Mapping[tuple[str, str], Policy]
"""(tenant, target) to its policy, for the thresholds; a missing one is the defaults'."""


def text(value: str) -> str:
    """`value` as HTML and XML text or attribute: escaped, without control characters."""
    return html.escape(_CONTROL.sub("\ufffd", value))


def entries_table(entries: Sequence[Entry], now: datetime, limit: int = LIMIT) -> str:
    """The forecast's entries as a table, the first `limit` of them."""
    if not entries:
        return f"<p>Nothing fails now or within {DEFAULT_DAYS:g} days.</p>\n"
    rows = []
    for entry in entries[:limit]:
        when = "now" if entry.now else f"in {entry.days_left(now):.0f} d"
        rows.append(
            f"<tr><td>{entry.when:%Y-%m-%d}<br><small>{when}</small></td>"
            f"<td>{text(entry.tenant or '-')}</td><td>{text(entry.name)}"
            f"<br><small>{text(entry.kind)} {text(entry.where)}</small></td>"
            f'<td class="w">{text(entry.what)}</td><td class="w">{text(entry.symptom or "-")}</td>'
            f'<td class="w">{text(entry.fix)}</td></tr>\n'
        )
    more = len(entries) - limit
    tail = (
        f"<p><small>and {more} more (<code>tlsprobe forecast</code> lists them all)</small></p>\n"
        if more > 0
        else ""
    )
    return (
        '<table class="forecast"><thead><tr><th>When</th><th>Tenant</th><th>Target</th>'
        "<th>What breaks</th><th>Exchange Online symptom</th><th>Fix</th></tr></thead>\n<tbody>\n"
        + "".join(rows)
        + "</tbody></table>\n"
        + tail
    )


class Expiring(NamedTuple):
    """An endpoint's certificate to draw: the chain's first to expire, and when."""

    at: float
    state: EndpointState
    cert: CertFacts


def expiring(state: EndpointState) -> Expiring | None:
    """The chain's first certificate to expire (what `not_expired` judges); None when the
    leaf's validity is unreadable or there is no chain."""
    chain = [c for c in state.result.chain if not c.unreadable(CertPart.VALIDITY)]
    if not chain or chain[0] is not state.result.chain[0]:
        return None
    cert = min(chain, key=lambda c: c.not_after)
    return Expiring(cert.not_after.timestamp(), state, cert)


WIDTH, LABEL, ROW, TOP = 1200, 380, 16, 22
"""The SVG's user units: its width, the labels' column, a bar's row and the axis above."""


def timeline(
    certs: Sequence[Expiring],
    now: float,
    policies: Policies,
    colours: Mapping[Status, str],
    limit: int = LIMIT,
) -> str:
    """The SVG timeline of the `limit` soonest expiries among `certs` (each endpoint's
    `expiring` certificate), and how many more."""
    if not certs:
        return "<p>No certificate to draw.</p>\n"
    # Keyed by the time alone (no tuple per endpoint); ties keep the order given.
    shown = heapq.nsmallest(limit, certs, key=attrgetter("at"))
    span = max(30.0, *((end - now) / _DAY for end, _, _ in shown))

    def scale(days: float) -> float:
        return LABEL + (WIDTH - LABEL - 10) * max(0.0, min(days, span)) / span

    height = TOP + ROW * len(shown) + 8
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}"'
        f' width="100%" role="img" aria-label="certificate expiry timeline">'
    ]
    for tick in range(5):
        days = span * tick / 4
        x = scale(days)
        label = "now" if tick == 0 else f"+{days:.0f} d"
        anchor = "end" if tick == 4 else "middle"  # the last label inside the picture
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{TOP - 9}" font-size="11" text-anchor="{anchor}">{label}</text>'
        )
    for row, (end, state, cert) in enumerate(shown):
        parts.append(
            _bar(row, end, state, cert, now=now, policies=policies, colours=colours, scale=scale)
        )
    parts.append("</svg>\n")
    more = len(certs) - len(shown)
    legend = (
        "<p><small>One bar per endpoint's certificate (the chain's first to expire), from now to"
        " its expiry, in the colour of the endpoint's status; the orange mark is where it starts"
        " to warn, the red where it turns critical (the thresholds applied to it)."
        + (f" And {more} more expiring later." if more > 0 else "")
        + "</small></p>\n"
    )
    return "".join(parts) + legend


def _bar(
    row: int,
    end: float,
    state: EndpointState,
    cert: CertFacts,
    *,
    now: float,
    policies: Policies,
    colours: Mapping[Status, str],
    scale: Callable[[float], float],
) -> str:
    y = TOP + row * ROW
    _, _, name, address, port = state.key
    label = f"{state.tenant or '-'}/{state.target} {host_port(name, port)}"
    if len(label) > 60:
        label = label[:57] + "..."
    left = (end - now) / _DAY
    warn, crit = expiry_thresholds(policies.get((state.tenant, state.target), Policy()), cert)
    whose = "" if cert is state.result.chain[0] else " (a chain CA)"
    title = (
        f"{state.tenant}/{state.target} {host_port(name, port)} ({address}){whose}: expires"
        f" {datetime.fromtimestamp(end, UTC):%Y-%m-%d} ({left:.0f} days); warns under"
        f" {warn:.0f} days left, critical under {crit:.0f}"
    )
    x0, x1 = scale(0), scale(left)
    colour = colours[state.result.status]
    out = [
        f'<g><title>{text(title)}</title><text x="{LABEL - 6}" y="{y + 11}" font-size="11"'
        f' text-anchor="end">{text(label)}</text>'
        f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 2):.1f}" height="{ROW - 4}"'
        f' fill="{colour}"/>'
    ]
    for days, mark in ((left - warn, "#ef6c00"), (left - crit, "#c62828")):
        if 0 <= days <= left:  # a threshold still ahead, on the bar
            x = scale(days)
            out.append(  # on a white edge: visible on a bar of its own colour
                f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + ROW}" stroke="#fff"'
                f' stroke-width="5"/><line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + ROW}"'
                f' stroke="{mark}" stroke-width="3"/>'
            )
    if left <= 0:
        out.append(f'<text x="{x0 + 6:.1f}" y="{y + 11}" font-size="11">expired</text>')
    out.append("</g>")
    return "".join(out)

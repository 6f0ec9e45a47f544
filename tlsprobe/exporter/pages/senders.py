"""The status page's send-side section: one row per configured sender (its client certificate
as Exchange Online sees it, and its canary), below the servers' table, each sender's name a
link to its detail view (`sender_detail`). A sender whose last canary failed is critical, and
every sender counts in the page header. HTML-escaped values only; kept apart from the server
rows so either can change alone."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

from tlsprobe.exporter import links
from tlsprobe.exporter.pages.status import Section
from tlsprobe.exporter.state import CanaryState, SenderState
from tlsprobe.model import Status

Colours = Mapping[Status, str]


def senders_section(states: Sequence[SenderState], now: float, colours: Colours) -> Section:
    """An `<h2>` and a table (status cells in the servers' `colours`); empty without senders."""
    if not states:
        return Section("", ())
    ordered = sorted(states, key=_order)
    rows = "\n".join(_row(state, now, colours) for state in ordered)
    return Section(_table(rows), tuple(state.status for state in ordered))


SENDER_PAGING_NOTE = (
    "What pages (with the shipped rules): a client certificate Exchange Online would refuse,"
    " a risky change of it (at once, one page per new certificate, one with the server side's"
    " when the relay serves it too), a canary that fails. What does not: a clean renewal, a"
    " leaf without the clientAuth EKU or one that differs from the served certificate"
    " (warnings), a sender silent past its session_expected_within (a warning), a relay whose"
    " nodes present different certificates."
)


def _table(rows: str) -> str:
    return (
        "<h2>Senders: the certificate each relay presents when it sends</h2>\n"
        f"<p><small>{SENDER_PAGING_NOTE}</small></p>\n"
        "<table><thead><tr><th>Tenant</th><th>Sender</th><th>Status</th><th>Days left</th>"
        "<th>O365 ready</th><th>Names</th><th>Fingerprint</th><th>Last session</th>"
        "<th>Canary</th><th>Failing checks</th></tr></thead>\n<tbody>\n"
        f"{rows}\n</tbody></table>\n"
    )


def _order(state: SenderState) -> tuple[int, str, str]:
    return (-int(state.status), state.sender.tenant, state.sender.name)


def _row(state: SenderState, now: float, colours: Colours) -> str:
    e = html.escape
    result = state.result
    status = state.status
    leaf = result.leaf if result else None
    days = f"{(leaf.not_after.timestamp() - now) / 86400:.0f}" if leaf else "-"
    names = ", ".join(leaf.dns_names or leaf.common_names) if leaf else "-"
    fingerprint = leaf.sha256[:16] if leaf else "-"
    seen = _when(result.started_at) + f" from {result.address}" if result else "no session yet"
    expected = state.sender.session_expected_within
    if result is not None and expected is not None and now - result.started_at > expected:
        # What TlsprobeSenderSilent says: this verdict is about an old session.
        seen += f" (STALE: none for {_duration(now - result.started_at)}, expected within "
        seen += f"{_duration(expected)})"
    problems = [
        f"<b>{e(c.name)}</b>: {e(c.message)}"
        for c in (result.checks if result else ())
        if c.status in (Status.CRITICAL, Status.WARNING)
    ]
    if result is not None and result.error is not None and not problems:
        problems.append(f"<b>{e(result.error.kind.value)}</b>: {e(result.error.message)}")
    if state.canary is not None and not state.canary.success:
        problems.append(f"<b>canary</b>: {e(_canary(state.canary, configured=True))}")
    ready = "yes" if result is not None and result.o365_ready else "no"
    if result is not None and result.connector is not None and result.connector.name:
        ready += f" (inbound {e(result.connector.name)})"
    href = e(links.sender_path(*state.sender.key))
    return (
        f"<tr><td>{e(state.sender.tenant)}</td>"
        f'<td><a href="{href}">{e(state.sender.name)}</a></td>'
        f'<td style="color:#fff;background:{colours[status]}">{status.name}</td>'
        f"<td>{days}</td><td>{ready}</td><td>{e(names)}</td><td><code>{fingerprint}</code></td>"
        f"<td>{e(seen)}</td><td>{e(_canary(state.canary, configured=bool(state.sender.canary)))}"
        f"</td><td>{'<br>'.join(problems) or 'none'}</td></tr>"
    )


def _canary(canary: CanaryState | None, *, configured: bool) -> str:
    if not configured:
        return "not configured"
    if canary is None:
        return "none ended yet"
    if canary.success and canary.round_trip is not None:
        return f"arrived in {canary.round_trip:.1f} s ({_when(canary.at)})"
    reason = canary.reason.value if canary.reason else "failed"
    return f"{reason}: {canary.message} ({_when(canary.at)})"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))

"""The status page's send-side section: one row per configured sender (its client certificate
as Exchange Online sees it, and its canary), beside the servers' table. HTML-escaped values
only; kept apart from the server rows so either can change alone."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

from tlsprobe.exporter.state import CanaryState, SenderState
from tlsprobe.model import Status

Colours = Mapping[Status, str]


def senders_section(states: Sequence[SenderState], now: float, colours: Colours) -> str:
    """An `<h2>` and a table (status cells in the servers' `colours`); empty without senders."""
    if not states:
        return ""
    rows = "\n".join(_row(state, now, colours) for state in sorted(states, key=_order))
    return (
        "<h2>Senders: the certificate each relay presents when it sends</h2>\n"
        "<table><thead><tr><th>Tenant</th><th>Sender</th><th>Status</th><th>Days left</th>"
        "<th>O365 ready</th><th>Names</th><th>Fingerprint</th><th>Last session</th>"
        "<th>Canary</th><th>Failing checks</th></tr></thead>\n<tbody>\n"
        f"{rows}\n</tbody></table>\n"
    )


def _order(state: SenderState) -> tuple[int, str, str]:
    status = state.result.status if state.result else Status.UNKNOWN
    return (-int(status), state.sender.tenant, state.sender.name)


def _row(state: SenderState, now: float, colours: Colours) -> str:
    e = html.escape
    result = state.result
    status = result.status if result else Status.UNKNOWN
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
    ready = "yes" if result is not None and result.o365_ready else "no"
    if result is not None and result.connector is not None and result.connector.name:
        ready += f" (inbound {e(result.connector.name)})"
    return (
        f"<tr><td>{e(state.sender.tenant)}</td><td>{e(state.sender.name)}</td>"
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

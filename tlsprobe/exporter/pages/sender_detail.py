"""The detail view of one sender (`GET /sender?tenant=&sender=`): what a sender page links to.

The send side's counterpart of the endpoint view (`detail`), on one page: the sender's status
(critical while its last canary failed), each check of the client certificate it presented last
with the Exchange Online symptom, the chain exactly as the relay presented it, which leaf each
of its addresses presents now, the sender's certificate history (one for all its addresses:
spans, rollbacks and every change), and its recent canaries. Everything shown is escaped and
bounded: the addresses by `presented.MAX_ADDRESSES`, the canaries by `senders.CANARY_HISTORY`,
the history by the database's retention. Pure apart from `sender_page`, which reads the history
(blocking: the server calls it in a thread).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from tlsprobe.exporter.history.store import HistoryStore
from tlsprobe.exporter.history.timeline import Change, Span
from tlsprobe.exporter.pages.detail import (
    Classes,
    chain_html,
    checks_html,
    history_html,
    latest_change_html,
    page_head,
    read_history,
)
from tlsprobe.exporter.pages.status import STATUS_COLOURS, age, when
from tlsprobe.exporter.state import CanaryState, SenderState
from tlsprobe.model import EndpointKey

e = html.escape
MAX_MESSAGE = 500
"""Characters of a canary's message shown (a relay's reply is free text)."""


def sender_page(
    state: SenderState, history: HistoryStore | None, key: EndpointKey, started_at: float
) -> str:
    """The view with the sender's history row `key` read from the store."""
    spans, changes, classes = read_history(history, key)
    return sender_html(state, spans, changes, time.time(), started_at, classes=classes, key=key)


def sender_html(
    state: SenderState,
    spans: Sequence[Span],
    changes: Sequence[Change],
    now: float,
    started_at: float,
    *,
    classes: Classes | None = None,
    key: EndpointKey | None = None,
) -> str:
    """`classes`: the class of each change of the sender's history row `key`."""
    tenant, name = state.sender.key
    title = f"{tenant}/{name}: the certificate this relay presents when it sends"
    result = state.result
    colour = STATUS_COLOURS[state.status]
    if result is None:
        seen = "No session from this sender yet."
        body = "<h2>Checks</h2>\n<p>No session yet: nothing has been judged.</p>\n"
    else:
        restored = " (restored at start)" if result.started_at < started_at else ""
        seen = (
            f"Last session {when(result.started_at)} ({age(now - result.started_at)}{restored})"
            f" from {e(result.address or '?')}, EHLO {e(result.endpoint.host)}."
        )
        body = checks_html(result) + chain_html(result.chain, now, sender="the relay")
    # As the endpoint view says it: the inbound connector it speaks for, the rules that fail.
    ready = f"Exchange Online {e(result.readiness)}" if result else "Exchange Online ready: no"
    parts = [
        page_head(title),
        f'<p>Status <b style="color:#fff;background:{colour};padding:0 6px">'
        f"{state.status.name}</b>; {ready}. {seen}"
        f" Sessions since start: {state.sessions}; page generated {when(now)}.</p>\n",
        _canary_line(state),
        body,
        _addresses(state),
        latest_change_html(state.drift),
        history_html(spans, changes, key or ("", "", "", "", 0), classes or {}),
        _canaries(state),
        "</body></html>\n",
    ]
    return "".join(parts)


def _canary_line(state: SenderState) -> str:
    canary = state.canary
    if canary is None or canary.success:
        return ""
    reason = canary.reason.value if canary.reason else "failed"
    message = e(canary.message[:MAX_MESSAGE])
    return (
        f"<p><b>Canary failing</b> ({e(reason)}: {message}, {when(canary.at)}): mail "
        "through this relay is probably stuck as well; the sender is critical until a canary "
        "arrives again.</p>\n"
    )


def _addresses(state: SenderState) -> str:
    if not state.addresses:
        return ""
    newest = state.drift.fingerprint if state.drift else None
    rows = "".join(
        f"<tr><td>{e(address or '?')}</td><td><code>{e(fingerprint[:16])}</code>"
        f"{' (the newest)' if fingerprint == newest else ''}</td></tr>"
        for address, fingerprint in state.addresses
    )
    return (
        "<h2>Presented now, by address</h2>\n<p>The leaf each address of this sender presented "
        "last (within a day). A certificate none of them presented before is a change.</p>\n"
        "<table><thead><tr><th>Address</th><th>Leaf SHA-256</th></tr></thead><tbody>"
        f"{rows}</tbody></table>\n"
    )


def _canaries(state: SenderState) -> str:
    if state.sender.canary is None:
        return "<h2>Canary</h2>\n<p>No canary configured for this sender.</p>\n"
    failures = ", ".join(f"{reason.value} {count}" for reason, count in state.canary_failures)
    rows = "".join(_canary_row(c) for c in reversed(state.canaries))
    table = (
        "<table><thead><tr><th>Ended</th><th>Outcome</th><th>Round trip or reason</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p>No canary has ended since the start.</p>"
    )
    return (
        "<h2>Canary history</h2>\n<p>The newest first, since the start"
        f"{f'; failures by reason: {e(failures)}' if failures else ''}.</p>\n{table}\n"
    )


def _canary_row(canary: CanaryState) -> str:
    if canary.success:
        trip = f"{canary.round_trip:.1f} s" if canary.round_trip is not None else "-"
        return f"<tr><td>{when(canary.at)}</td><td>arrived</td><td>{trip}</td></tr>"
    reason = canary.reason.value if canary.reason else "failed"
    return (
        f"<tr><td>{when(canary.at)}</td><td><b>failed</b></td>"
        f"<td>{e(reason)}: {e(canary.message[:MAX_MESSAGE])}</td></tr>"
    )

"""The status page (`GET /`): one table row per endpoint, built from its latest result.

The table is a list of `Column`s, each a header and a function from an endpoint's state to a
cell, so a new kind of finding is a new column (or a new row source), not a new page. Rendering
rows is the expensive part at 18,000 endpoints, so rows are cached like /metrics caches each
endpoint's text: a row is rendered again only when its endpoint has a new result or the hour
changes (days left are shown to the hour; times are absolute). With 18,000 endpoints some result
is new every few milliseconds, so the joined page is also kept for `PAGE_TTL` seconds: however
many clients ask, the page costs one sort and join per `PAGE_TTL`, and says when it was made.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tlsprobe.exporter import links
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import CertPart, Status
from tlsprobe.probe.change import Change
from tlsprobe.probe.names import host_port

STATUS_COLOURS = {
    Status.OK: "#2e7d32",
    Status.WARNING: "#ef6c00",
    Status.CRITICAL: "#c62828",
    Status.UNKNOWN: "#616161",
}
_BAD = (Status.CRITICAL, Status.WARNING)
PAGE_TTL = 10.0
"""Seconds a joined page is served again before it is rebuilt (the page refreshes every 30)."""


def when(moment: float) -> str:
    """An absolute time with its zone: pages are read from anywhere."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


@dataclass(frozen=True, slots=True)
class Section:
    """A table of other rows below the endpoints' (the senders', the cross-tenant findings'):
    its HTML, and the status of each of its rows, which the page header counts with the
    endpoints'."""

    html: str
    statuses: tuple[Status, ...]


Sections = Callable[[], Sequence[Section]]


@dataclass(frozen=True, slots=True)
class Context:
    """What a cell needs beyond the endpoint's state."""

    now: float
    started_at: float
    """When this exporter started: older results were restored from the last run."""
    maintenance: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """(tenant, target) in an open maintenance window: when it closes."""


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Callable[[EndpointState, Context], str]
    """HTML of the cell (escaped by the column itself)."""
    wraps: bool = False
    """Free text that may break anywhere (a trust-store path, a long DN), so that the table
    fits the screen instead of scrolling sideways."""


e = html.escape


def host(name: str) -> str:
    """A host name as HTML that may break after its dots (`<wbr>`), so long names wrap."""
    return e(name).replace(".", ".<wbr>")


def _endpoint(state: EndpointState, ctx: Context) -> str:
    _, _, name, address, port = state.key
    where = host_port(address, port)
    href = e(links.detail_path(state.label_values))
    return f'<a href="{href}">{host(name)}</a><br><small>{e(where)}</small>'


def _status(state: EndpointState, ctx: Context) -> str:
    until = ctx.maintenance.get((state.tenant, state.target))
    if until is None:
        return state.result.status.name
    return f"{state.result.status.name}<br><small>maintenance until {when(until)}</small>"


def _last_probe(state: EndpointState, ctx: Context) -> str:
    taken = state.result.started_at
    if taken < ctx.started_at:
        return f"{when(taken)}<br><small>restored at start</small>"
    return when(taken)


def _days_left(state: EndpointState, ctx: Context) -> str:
    leaf = state.result.leaf
    if leaf is None:
        return "-"
    if leaf.unreadable(CertPart.VALIDITY):
        return "?"
    days = (leaf.not_after.timestamp() - ctx.now) / 86400
    return f"{days:.0f}" if abs(days) >= 1 else f"{days:.1f}"


def _names(state: EndpointState, ctx: Context) -> str:
    leaf = state.result.leaf
    return ", ".join(map(host, leaf.dns_names or leaf.common_names)) if leaf else "-"


def _issuer(state: EndpointState, ctx: Context) -> str:
    leaf = state.result.leaf
    return e(leaf.issuer) if leaf else "-"


def _last_change(state: EndpointState, ctx: Context) -> str:
    if state.drift is None:
        return "-"
    change = state.drift.change
    verdict = "" if change is None or not state.drift.changes_total else f"; {change_words(change)}"
    return (
        f"{when(state.drift.since)}<br><small>{state.drift.changes_total} changes{verdict}</small>"
    )


def change_words(change: Change) -> str:
    """How a change is shown: what pages and what does not, in the page's words."""
    if change.risky:
        return f"<b>risky</b> (paged): {e(change.text)}"
    # A renewal's details say what changed that needs nothing ("intermediate rotated: ...").
    return "clean renewal (no page)" + (f": {e(change.text)}" if change.details else "")


def _failing(state: EndpointState, ctx: Context) -> str:
    result = state.result
    problems = [f"<b>{e(c.name)}</b>: {e(c.message)}" for c in result.checks if c.status in _BAD]
    if result.error is not None and not problems:
        # A STARTTLS failure already reads as its check; other failures have no check.
        problems.append(f"<b>{e(result.error.kind.value)}</b>: {e(result.error.message)}")
    return "<br>".join(problems) or "none"


def _symptom(state: EndpointState, ctx: Context) -> str:
    """What Exchange Online does about it: the NDR `tlsprobe check` prints."""
    symptoms = dict.fromkeys(
        c.symptom for c in state.result.checks if c.status in _BAD and c.symptom
    )
    return "<br>".join(e(s) for s in symptoms) or "-"


def _ready(state: EndpointState) -> str:
    """yes/no; below it the connector's direction and Exchange name where known, then each
    failing rule on a line of its own (short lines: the table must fit the screen)."""
    result = state.result
    ref = result.connector
    lines = ["yes" if result.o365_ready else "no"]
    if ref is not None and ref.name:
        lines.append(f"<small>{e(ref.direction)} {e(ref.name)}</small>")
    lines += [f"<small>{e(name)}</small>" for name in result.o365_failing]
    return "<br>".join(lines)


COLUMNS: tuple[Column, ...] = (
    Column("Tenant", lambda s, _: e(s.tenant)),
    Column("Target", lambda s, _: e(s.target)),
    Column("Endpoint", _endpoint),
    Column("Status", _status),
    Column("Last probe", _last_probe),
    Column("Days left", _days_left),
    Column("O365 ready", lambda s, _: _ready(s)),
    Column("Names", _names),
    Column("Issuer", _issuer),
    Column("Last change", _last_change),
    Column("Failing checks", _failing, wraps=True),
    Column("Exchange Online symptom", _symptom, wraps=True),
)


def render_row(state: EndpointState, ctx: Context, columns: Sequence[Column] = COLUMNS) -> str:
    colour = STATUS_COLOURS[state.result.status]
    cells = []
    for column in columns:
        style = f' style="color:#fff;background:{colour}"' if column.header == "Status" else ""
        wraps = ' class="w"' if column.wraps else ""
        cells.append(f"<td{style}{wraps}>{column.cell(state, ctx)}</td>")
    return "<tr>" + "".join(cells) + "</tr>\n"


class StatusPage:
    """Renders `GET /` from cached rows; see the module docstring for what is cached how long."""

    def __init__(self, columns: Sequence[Column] = COLUMNS) -> None:
        self.columns = tuple(columns)
        self._rows: dict[
            tuple[str, ...], tuple[EndpointState, tuple[int, float | None], bytes]
        ] = {}
        self._page: tuple[float, bytes] | None = None

    def render(
        self,
        snapshot: Callable[[], Sequence[EndpointState]],
        now: float,
        started_at: float,
        maintenance: Callable[[], Mapping[tuple[str, str], float]] = dict,
        sections: Sections = tuple,
    ) -> bytes:
        """The page; `snapshot`, `maintenance` (the targets in an open window, see `Context`)
        and `sections` are called only when the page is rebuilt."""
        if self._page is not None and 0 <= now - self._page[0] < PAGE_TTL:
            return self._page[1]
        states = snapshot()
        hour = int(now // 3600)
        ctx = Context(now=now, started_at=started_at, maintenance=maintenance())
        keyed = sorted(((-int(s.result.status), s.label_values), s) for s in states)
        rows = [self._row(key, state, ctx, hour) for (_, key), state in keyed]
        if len(self._rows) > len(keyed):
            live = {key for (_, key), _ in keyed}
            for key in [k for k in self._rows if k not in live]:
                del self._rows[key]
        body = _page(self.columns, rows, states, now, sections())
        self._page = (now, body)
        return body

    def _row(self, key: tuple[str, ...], state: EndpointState, ctx: Context, hour: int) -> bytes:
        # A row changes with its result, the hour and its maintenance window opening or closing.
        moment = (hour, ctx.maintenance.get((state.tenant, state.target)))
        cached = self._rows.get(key)
        if cached is not None and cached[0] is state and cached[1] == moment:
            return cached[2]
        row = render_row(state, ctx, self.columns).encode()
        self._rows[key] = (state, moment, row)
        return row


def _page(
    columns: Sequence[Column],
    rows: list[bytes],
    states: Sequence[EndpointState],
    now: float,
    sections: Sequence[Section] = (),
) -> bytes:
    """The page in one join of the cached rows, encoded when they were rendered: at 50,000
    endpoints the body is about 100 MB, and each copy of it (a str join, the page around it,
    the encoding) cost more than the rest of the page. The header counts the `sections`' rows
    with the endpoints'."""
    counts = Counter(s.result.status for s in states)
    counts.update(status for section in sections for status in section.statuses)
    summary = ", ".join(f"{counts[s]} {s.label}" for s in Status if counts[s]) or "no endpoints yet"
    header = "".join(f"<th>{e(c.header)}</th>" for c in columns)
    empty = (
        f'<tr><td colspan="{len(columns)}">No results yet: the first probes are running.</td></tr>'
    )
    top = (
        _HEAD + f"<p>SMTP certificates as Exchange Online sees them: {e(summary)}. Generated"
        f' {when(now)}. <a href="/metrics">/metrics</a></p>\n'
        f"<p><small>{PAGING_NOTE}</small></p>\n"
        f"<table><thead><tr>{header}</tr></thead>\n<tbody>\n"
    )
    bottom = "</tbody></table>" + "".join(section.html for section in sections) + "</body></html>\n"
    return b"".join([top.encode(), *(rows or [empty.encode()]), bottom.encode()])


PAGING_NOTE = (
    "What pages (with the shipped rules): a critical check, a risky certificate change (at once,"
    " one page per new certificate however many ports and nodes serve it), a pool node left"
    " behind for 30 minutes, an exporter down for 15 minutes. What does not: a clean renewal"
    " (shown as such under Last change; from another intermediate of the same CA too, but on"
    " Exchange), a warning (an overdue renewal, a CN-only name), an"
    " exporter restart or outage (alerts hold as they were until it is back)."
)

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
td.w{overflow-wrap:anywhere;min-width:10em} td code{overflow-wrap:anywhere}
th{background:#f0f0f0} small{color:#666} code{font-size:12px}
</style>"""

_HEAD = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tlsprobe</title>
<meta http-equiv="refresh" content="30">
{STYLE}</head><body>
<h1>tlsprobe</h1>
"""

"""The status page (`GET /`): one table row per endpoint, built from its latest result.

The table is a list of `Column`s, each a header and a function from an endpoint's state to a
cell, so a new kind of finding is a new column (or a new row source), not a new page. Rendering
rows is the expensive part at 18,000 endpoints, so rows are cached like /metrics caches each
endpoint's text: a row is rendered again only when its endpoint has a new result or the hour
changes (days left are shown to the hour; times are absolute). With 18,000 endpoints some result
is new every few milliseconds, so the joined page is also kept for `PAGE_TTL` seconds: however
many clients ask, the page costs one sort and join per `PAGE_TTL`, and says when it was made.

A request asks for a `View`: a tenant (`?tenant=`), a search (`?q=`) and a page (`?page=`),
each bounded. One snapshot, sorted worst first with its per-tenant counts and its forecast,
serves every view for `PAGE_TTL`; each view's page is kept as long (at most `MAX_VIEWS` of
them) and holds at most `PAGE_SIZE` rows, the failing ones first and the OK ones collapsed, so
only the rows of the pages asked for are ever rendered. Below them, "What breaks when"
(`breaks`): the forecast of the view's endpoints and its timeline.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tlsprobe.exporter import forecast, links
from tlsprobe.exporter.forecast import Entry
from tlsprobe.exporter.pages import breaks
from tlsprobe.exporter.state import EndpointState, SenderState
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


PAGE_SIZE = 100
"""Endpoint rows on one page (`?page=` pages through the rest): 10,000 endpoints are 100 pages
of about the same size, not one page of 10,000 rows."""
MAX_VIEWS = 32
"""Pages (one per tenant, search and page number asked for) kept for `PAGE_TTL`; the oldest
goes first."""
MAX_TENANTS = 100
"""Tenants in the summary table (worst first); the rest are counted and reached by `?tenant=`."""
MAX_QUERY = 100
MAX_TENANT = 200
MAX_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class View:
    """What one request asks of the page: a tenant (None: all), a search, a page number."""

    tenant: str | None = None
    q: str = ""
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> View:
        """From the query string, bounded: over-long values are cut, a page that is not a
        number is the first, any other out of range the nearest in range."""
        tenant = query.get("tenant", "")[:MAX_TENANT].strip() or None
        q = " ".join(query.get("q", "")[:MAX_QUERY].split())
        raw = query.get("page", "")[:6]
        page = int(raw) if raw.isascii() and raw.isdigit() else 1
        return cls(tenant, q, min(max(page, 1), MAX_PAGE))

    def href(self, page: int | None = None, tenant: str | None = None) -> str:
        """This view's address (on another page, or of another tenant with no search)."""
        params: dict[str, str | int] = {}
        if tenant is not None:
            params["tenant"] = tenant
        else:
            params.update({"tenant": self.tenant or "", "q": self.q, "page": page or self.page})
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v and v != 1})
        return "/?" + query if query else "/"

    def matches(
        self,
        item: tuple[tuple[str, ...], EndpointState],
        haystack: Callable[[tuple[tuple[str, ...], EndpointState]], str],
    ) -> bool:
        """Whether an endpoint (its key and state) is in this view; `haystack` gives what
        the search looks in (`searched`)."""
        if self.tenant is not None and item[1].tenant != self.tenant:
            return False
        return not self.q or all(word in haystack(item) for word in self.q.lower().split())


def searched(state: EndpointState) -> str:
    """What `?q=` searches, lowercased: target, host, address and the leaf's names."""
    _, target, name, address, _ = state.key
    leaf = state.result.leaf
    names = (*leaf.dns_names, *leaf.common_names) if leaf is not None else ()
    return "\n".join((target, name, address, *names)).lower()


@dataclass(slots=True)
class _Fleet:
    """One snapshot, sorted worst first, with what every view of it shares."""

    at: float
    ordered: list[tuple[tuple[str, ...], EndpointState]]
    tenants: dict[str, Counter[Status]]
    entries: list[Entry]
    """The forecast of every endpoint and sender."""
    maintenance: Mapping[tuple[str, str], float]
    """The targets in an open maintenance window (`Context.maintenance`)."""


class StatusPage:
    """Renders `GET /` from cached rows; see the module docstring for what is cached how long."""

    def __init__(self, columns: Sequence[Column] = COLUMNS) -> None:
        self.columns = tuple(columns)
        self._rows: dict[
            tuple[str, ...], tuple[EndpointState, tuple[int, float | None], bytes]
        ] = {}
        self._derived: dict[tuple[str, ...], tuple[EndpointState, str, breaks.Expiring | None]] = {}
        """Per endpoint, until its next result: what the search looks in, and the certificate
        the timeline draws."""
        self._entries: dict[tuple[str, ...], tuple[EndpointState, int, list[Entry]]] = {}
        self._fleet: _Fleet | None = None
        self._pages: OrderedDict[View, tuple[float, bytes]] = OrderedDict()

    def render(
        self,
        snapshot: Callable[[], Sequence[EndpointState]],
        now: float,
        started_at: float,
        *,
        view: View = View(),
        senders: Callable[[], Sequence[SenderState]] = tuple,
        policies: Callable[[], breaks.Policies] = dict,
        maintenance: Callable[[], Mapping[tuple[str, str], float]] = dict,
        sections: Sections = tuple,
    ) -> bytes:
        """The page of `view`; `snapshot`, `senders` (for the forecast), `policies` (for the
        timeline's thresholds) and `maintenance` (the targets in an open window, see
        `Context`) are called only when a snapshot is taken, `sections` (for this view) only
        when the view's page is made."""
        cached = self._pages.get(view)
        if cached is not None and 0 <= now - cached[0] < PAGE_TTL:
            return cached[1]
        fleet = self._fleet
        if fleet is None or not 0 <= now - fleet.at < PAGE_TTL:
            fleet = self._fleet = self._snapshot(snapshot(), senders(), now, maintenance())
        now = fleet.at  # the page is of that snapshot: made then, kept as long as it is
        hour = int(now // 3600)
        ctx = Context(now=now, started_at=started_at, maintenance=fleet.maintenance)
        # The items of the snapshot and of the cache themselves, not copies: at 18,000
        # endpoints each new tuple per endpoint costs more (in the collector) than the rest.
        chosen = [item for item in fleet.ordered if view.matches(item, self._haystack)]
        dated = [x for k, s in chosen if (x := self._derive(k, s)[2]) is not None]
        pages = max(1, -(-len(chosen) // PAGE_SIZE))
        number = min(view.page, pages)
        shown = chosen[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        bad = [self._row(k, s, ctx, hour) for k, s in shown if s.result.status is not Status.OK]
        ok = [self._row(k, s, ctx, hour) for k, s in shown if s.result.status is Status.OK]
        moment = datetime.fromtimestamp(now, UTC)
        entries = [e for e in fleet.entries if view.tenant in (None, e.tenant)]
        if view.q:
            words = view.q.lower().split()
            entries = [e for e in entries if all(w in f"{e.name} {e.where}".lower() for w in words)]
        section = (
            "<h2>What breaks when</h2>\n"
            + breaks.entries_table(entries, moment)
            + breaks.timeline(dated, now, policies(), STATUS_COLOURS)
        )
        shown_rows = Shown(bad, ok, len(chosen), number, pages)
        body = _page(
            self.columns,
            shown_rows,
            fleet=fleet,
            view=view,
            now=now,
            forecast_html=section,
            sections=sections(),
        )
        self._pages[view] = (now, body)
        self._pages.move_to_end(view)
        while len(self._pages) > MAX_VIEWS:
            self._pages.popitem(last=False)
        return body

    def _snapshot(
        self,
        states: Sequence[EndpointState],
        senders: Sequence[SenderState],
        now: float,
        maintenance: Mapping[tuple[str, str], float],
    ) -> _Fleet:
        ordered = [
            (k, s)
            for (_, k), s in sorted(((-int(s.result.status), s.label_values), s) for s in states)
        ]
        tenants: dict[str, Counter[Status]] = {}
        for state in states:
            tenants.setdefault(state.tenant, Counter())[state.result.status] += 1
        for cache in (self._rows, self._derived, self._entries):
            if len(cache) > len(ordered):
                live = {key for key, _ in ordered}
                for key in [k for k in cache if k not in live]:
                    del cache[key]
        moment, hour = datetime.fromtimestamp(now, UTC), int(now // 3600)
        entries = forecast.forecast(forecast.watched((), senders), moment)
        for key, state in ordered:
            entries += self._forecast(key, state, moment, hour)
        entries.sort(key=forecast.order)
        return _Fleet(now, ordered, tenants, entries, maintenance)

    def _forecast(
        self, key: tuple[str, ...], state: EndpointState, moment: datetime, hour: int
    ) -> list[Entry]:
        """The endpoint's forecast entries, made again when it has a new result or the hour
        changes (as its row): most endpoints have none, and few have a new result."""
        cached = self._entries.get(key)
        if cached is not None and cached[0] is state and cached[1] == hour:
            return cached[2]
        entries = forecast.forecast(forecast.watched((state,)), moment)
        self._entries[key] = (state, hour, entries)
        return entries

    def _haystack(self, item: tuple[tuple[str, ...], EndpointState]) -> str:
        return self._derive(*item)[1]

    def _derive(
        self, key: tuple[str, ...], state: EndpointState
    ) -> tuple[EndpointState, str, breaks.Expiring | None]:
        cached = self._derived.get(key)
        if cached is not None and cached[0] is state:
            return cached
        derived = (state, searched(state), breaks.expiring(state))
        self._derived[key] = derived
        return derived

    def _row(self, key: tuple[str, ...], state: EndpointState, ctx: Context, hour: int) -> bytes:
        # A row changes with its result, the hour and its maintenance window opening or closing.
        moment = (hour, ctx.maintenance.get((state.tenant, state.target)))
        cached = self._rows.get(key)
        if cached is not None and cached[0] is state and cached[1] == moment:
            return cached[2]
        row = render_row(state, ctx, self.columns).encode()
        self._rows[key] = (state, moment, row)
        return row


@dataclass(frozen=True, slots=True)
class Shown:
    """The rows of one page: the failing ones, the OK ones (collapsed), and where it is."""

    bad: list[bytes]
    ok: list[bytes]
    matching: int
    page: int
    pages: int


def _counts(counts: Counter[Status]) -> str:
    return ", ".join(f"{counts[s]} {s.label}" for s in Status if counts[s]) or "no endpoints yet"


def _tenants(fleet: _Fleet, view: View) -> str:
    """The per-tenant summary: worst first, each tenant linking to its own view."""
    order = sorted(
        fleet.tenants.items(),
        key=lambda item: (*(-item[1][s] for s in reversed(Status)), item[0]),
    )
    rows = []
    for tenant, counts in order[:MAX_TENANTS]:
        name = f'<a href="{e(view.href(tenant=tenant))}">{e(tenant)}</a>' if tenant else "-"
        cells = "".join(f"<td>{counts[s]}</td>" for s in reversed(Status))
        rows.append(f"<tr><td>{name}</td><td>{counts.total()}</td>{cells}</tr>\n")
    more = len(order) - MAX_TENANTS
    header = "".join(f"<th>{e(s.label)}</th>" for s in reversed(Status))
    return (
        f'<table class="tenants"><thead><tr><th>Tenant</th><th>Endpoints</th>{header}</tr>'
        "</thead>\n<tbody>\n"
        + "".join(rows)
        + "</tbody></table>\n"
        + (
            f"<p><small>and {more} more tenants (open one with ?tenant=)</small></p>\n"
            if more > 0
            else ""
        )
    )


def _paging(view: View, shown: Shown) -> str:
    first = (shown.page - 1) * PAGE_SIZE + 1 if shown.matching else 0
    last = min(shown.page * PAGE_SIZE, shown.matching)
    links = []
    if shown.page > 1:
        links.append(f'<a href="{e(view.href(page=shown.page - 1))}" rel="prev">previous</a>')
    if shown.page < shown.pages:
        links.append(f'<a href="{e(view.href(page=shown.page + 1))}" rel="next">next</a>')
    where = f"page {shown.page} of {shown.pages}" if shown.pages > 1 else ""
    return (
        f'<p class="paging">Endpoints {first}-{last} of {shown.matching}'
        + (f", {where}: " + " ".join(links) if where else "")
        + "</p>\n"
    )


def _page(
    columns: Sequence[Column],
    shown: Shown,
    *,
    fleet: _Fleet,
    view: View,
    now: float,
    forecast_html: str,
    sections: Sequence[Section] = (),
) -> bytes:
    """The page in one join of the cached rows, encoded when they were rendered (each copy of
    a large body cost more than the rest of the page). The header counts the `sections`' rows
    with the endpoints'."""
    counts: Counter[Status] = Counter()
    for tenant_counts in fleet.tenants.values():
        counts.update(tenant_counts)
    counts.update(status for section in sections for status in section.statuses)
    summary = f"SMTP certificates as Exchange Online sees them: {e(_counts(counts))}"
    if view.tenant is not None:
        mine = fleet.tenants.get(view.tenant)
        summary += f"; tenant {e(view.tenant)}: {e(_counts(mine)) if mine else 'no endpoints'}"
    header = "".join(f"<th>{e(c.header)}</th>" for c in columns)
    hidden = f'<input type="hidden" name="tenant" value="{e(view.tenant)}">' if view.tenant else ""
    search = (
        f'<form method="get" action="/" class="search">{hidden}'
        f'<input type="search" name="q" value="{e(view.q)}" maxlength="{MAX_QUERY}"'
        ' placeholder="target, host, address or name" aria-label="search">'
        ' <button type="submit">Search</button>'
        + (' <a href="/">all tenants</a>' if view.tenant or view.q else "")
        + "</form>\n"
    )
    listing: list[bytes]
    if view.tenant is not None and view.tenant not in fleet.tenants:
        listing = [
            f"<p>No endpoints in tenant {e(view.tenant)}: no such tenant, or no results for it"
            ' yet. <a href="/">All tenants</a></p>\n'.encode()
        ]
    elif not fleet.ordered:
        listing = [b"<p>No results yet: the first probes are running.</p>\n"]
    else:
        table = f'<table class="endpoints"><thead><tr>{header}</tr></thead>\n<tbody>\n'.encode()
        end = b"</tbody></table>\n"
        if shown.bad:
            listing = [table, *shown.bad, end]
        elif shown.matching:
            listing = [b"<p>No failing endpoint on this page.</p>\n"]
        else:
            listing = [b"<p>No endpoint matches the search.</p>\n"]
        if shown.ok:
            summary_ok = f"<details><summary>{len(shown.ok)} OK endpoints on this page</summary>\n"
            listing += [summary_ok.encode(), table, *shown.ok, end, b"</details>\n"]
        listing.append(_paging(view, shown).encode())
    top = (
        _HEAD + f"<p>{summary}. Generated {when(now)}."
        f' <a href="/metrics">/metrics</a></p>\n{search}'
        + (_tenants(fleet, view) if view.tenant is None and fleet.tenants else "")
        + f"<p><small>{PAGING_NOTE}</small></p>\n"
    )
    below = "".join(section.html for section in sections)
    return b"".join(
        [top.encode(), *listing, below.encode(), forecast_html.encode(), b"</body></html>\n"]
    )


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
table.endpoints,table.tenants,table.forecast{font-size:12px;line-height:1.25}
table.endpoints td,table.tenants td,table.forecast td{padding:2px 5px}
table.tenants{width:auto} form.search input{width:22em}
table.forecast td:first-child{white-space:nowrap}
details{margin:.5em 0} summary{cursor:pointer} p.paging{font-size:14px}
</style>"""

_HEAD = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tlsprobe</title>
<meta http-equiv="refresh" content="30">
{STYLE}</head><body>
<h1>tlsprobe</h1>
"""

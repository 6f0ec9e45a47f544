"""An endpoint's certificate timeline as it really was: spans between changes, rollbacks named.

The history keeps, per endpoint, each certificate once (first and last seen) and every change
event (old -> new). A certificate replaced and later restored is one `served` row with a first
and a last sighting around its replacement's, so reading the rows alone hides the rollback.
The spans are therefore built from the events: the first certificate until the first change,
each change's new certificate until the next change, the last one until it was last seen.
Pure: the CLI (`tlsprobe history`) and the detail view render the same spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # store renders `tlsprobe history` with these functions
    from tlsprobe.exporter.history.store import ChangeEvent, TimelineEntry


@dataclass(frozen=True, slots=True)
class Span:
    """One run of one certificate on one endpoint."""

    cert: TimelineEntry
    start: float
    end: float
    """When it was replaced; for the current certificate, when it was last seen."""
    current: bool
    rollback: bool
    """The certificate had been served before, and an intermediate one replaced it."""


@dataclass(frozen=True, slots=True)
class Change:
    at: float
    old: str | None
    new: str
    rollback: bool


def spans(served: Sequence[TimelineEntry], events: Sequence[ChangeEvent]) -> list[Span]:
    """The spans of one endpoint, oldest first, from its served rows and change events."""
    if not served:
        return []
    by_fingerprint = {entry.fingerprint: entry for entry in served}
    ordered = sorted(events, key=lambda e: e[1])
    known = [e for e in ordered if e[3] in by_fingerprint]
    if not known:
        newest = max(served, key=lambda e: (e.last_seen, e.first_seen))
        return [Span(e, e.first_seen, e.last_seen, e is newest, False) for e in served]
    first_fp = known[0][2] if known[0][2] in by_fingerprint else None
    result: list[Span] = []
    seen: set[str] = set()
    if first_fp is not None:
        first = by_fingerprint[first_fp]
        result.append(Span(first, first.first_seen, known[0][1], False, False))
        seen.add(first_fp)
    for index, (_, at, _, new) in enumerate(known):
        cert = by_fingerprint[new]
        last = index == len(known) - 1
        end = cert.last_seen if last else known[index + 1][1]
        result.append(Span(cert, at, max(end, at), last, new in seen))
        seen.add(new)
    return result


def changes(events: Sequence[ChangeEvent]) -> list[Change]:
    """Every change event of one endpoint, oldest first, rollbacks marked."""
    seen: set[str] = set()
    out: list[Change] = []
    for _, at, old, new in sorted(events, key=lambda e: e[1]):
        if old:
            seen.add(old)
        out.append(Change(at, old, new, new in seen))
        seen.add(new)
    return out

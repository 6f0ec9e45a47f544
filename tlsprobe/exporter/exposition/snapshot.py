"""The /metrics body as gzip, rebuilt only where results changed since the last scrape.

Endpoints' and targets' lines sit compressed in `blockcache` blocks; each family's part of the
body (its header and every block's segment for it) is kept joined until a block changes it.
A scrape compares the endpoint states with the previous scrape's (by identity, which is cheap:
a new result is a new state), rebuilds what changed, compresses the few lines no endpoint or
target owns (the send side's, and the exporter registry's exposition after them: the `tail`)
and puts the gzip file together from the segments. An unchanged snapshot costs a pass over the
states and a few kilobytes of compression, not a render and a compression of the whole text.
The same segments serve text 0.0.4 and OpenMetrics: only a counter family's HELP and TYPE
lines differ (kept once per format) and OpenMetrics ends in `# EOF`.
The text is exactly `TextRenderer`'s for the same states (the tests hold them equal); after
endpoints come and go, the order of the lines within a family may differ. Not thread-safe: the
scrape renders one snapshot at a time.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from itertools import compress

from tlsprobe.exporter.exposition import metrics
from tlsprobe.exporter.exposition.blockcache import BLOCK_SIZE, BlockCache, Parts
from tlsprobe.exporter.exposition.deflate import Segment, compressor, gzip_body, joined, segment
from tlsprobe.exporter.exposition.metrics import (
    FAMILY_INDEX,
    METRICS,
    Sample,
    TargetFacts,
    facts_lines,
    family_header,
    sample_line,
    target_facts,
)
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import EndpointKey

TargetKey = tuple[str, str]
Changes = dict[EndpointKey, EndpointState | None]
"""Endpoints with a new state since the last snapshot, and (None) those gone."""


def _endpoint_parts(_: EndpointKey, state: EndpointState) -> Parts:
    # Through the module, so a test can see which thread renders.
    return {FAMILY_INDEX[name]: text for name, text in metrics.render_endpoint(state).items()}


def _target_parts(key: TargetKey, facts: TargetFacts) -> Parts:
    parts: dict[int, bytes] = {}
    for name, line in facts_lines(key, facts):
        index = FAMILY_INDEX[name]
        parts[index] = parts.get(index, b"") + line
    return parts


class SnapshotRenderer:
    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self._endpoints = BlockCache[EndpointKey, EndpointState](
            _endpoint_parts, operator.is_, block_size
        )
        self._targets = BlockCache[TargetKey, TargetFacts](_target_parts, operator.eq, block_size)
        self._by_target: dict[TargetKey, dict[EndpointKey, EndpointState]] = {}
        self._last: list[EndpointState] = []
        self._headers = {
            om: [family_header(m, openmetrics=om) for m in METRICS] for om in (False, True)
        }
        self._header_segments = {
            om: [segment(header) for header in headers] for om, headers in self._headers.items()
        }
        self._families: dict[bool, list[Segment | None]] = {
            om: [None] * len(METRICS) for om in (False, True)
        }
        """Per format and family: its header and every block's lines, joined; None when it has
        none. The OpenMetrics list holds only the families whose header differs (counters)."""
        self._differs = [
            headers[0] != headers[1] for headers in zip(*self._headers.values(), strict=True)
        ]

    def gzip(
        self,
        states: Sequence[EndpointState],
        extra: Iterable[Sample] = (),
        changes: Changes | None = None,
        *,
        tail: bytes = b"",
        openmetrics: bool = False,
    ) -> bytes:
        """The exposition of `states` and `extra` (as `TextRenderer.render`), then `tail` (whole
        families: the exporter registry's), gzipped; OpenMetrics, ending in `# EOF`, when
        `openmetrics`. `changes`: `self.changes(states)` when the caller has it already."""
        if changes is None:
            changes = self.changes(states)
        if changes:
            self._update(states, changes)
        end = tail + b"# EOF\n" if openmetrics else tail
        return gzip_body(self._segments(extra, end, openmetrics))

    def _moved(self, states: Sequence[EndpointState]) -> list[int] | None:
        """The places where `states` has another state for the same endpoint than the last
        snapshot had; None when endpoints came, went or changed places. Results keep their
        endpoints' order, so this is the usual case: a comparison by identity in C."""
        last = self._last
        if len(states) != len(last):
            return None
        places = list(compress(range(len(states)), map(operator.is_not, states, last)))
        if all(states[i].key == last[i].key for i in places):
            return places
        return None

    def held_bytes(self) -> int:
        """Compressed text the cache holds: blocks, and each family's joined copy."""
        joined_copies = sum(
            len(family.data) for kept in self._families.values() for family in kept if family
        )
        return self._endpoints.held_bytes() + self._targets.held_bytes() + joined_copies

    def _update(self, states: Sequence[EndpointState], changes: Changes) -> None:
        self._endpoints.update(changes)
        touched: dict[TargetKey, None] = {}
        for key, state in changes.items():
            target = (key[0], key[1])
            members = self._by_target.setdefault(target, {})
            if state is None:
                members.pop(key, None)
            else:
                members[key] = state
            touched[target] = None
        self._targets.update({target: self._facts(target) for target in touched})
        families = self._endpoints.refresh() | self._targets.refresh()
        for family in families:
            parts = self._endpoints.segments(family) + self._targets.segments(family)
            for om in (False, True) if self._differs[family] else (False,):
                header = self._header_segments[om][family]
                self._families[om][family] = joined([header, *parts]) if parts else None
        self._last = list(states)

    def changes(self, states: Sequence[EndpointState]) -> Changes:
        """The endpoints with a new state since the last scrape, and (None) those gone: the
        work a render will do.

        A state the last scrape showed is the same object now, so identity finds the few new
        ones without computing 10,000 keys; `_last` holds the old states, so no id is reused.
        """
        if states == self._last:
            # Nothing new, the usual case between probes: list equality in C, which takes an
            # identical element as equal without comparing it (equal states render alike).
            return {}
        moved = self._moved(states)
        if moved is not None:
            return {states[i].key: states[i] for i in moved}
        before = {id(state) for state in self._last}
        changes: dict[EndpointKey, EndpointState | None] = {
            state.key: state for state in states if id(state) not in before
        }
        now = {id(state) for state in states}
        for state in self._last:
            if id(state) not in now:
                changes.setdefault(state.key, None)
        return changes

    def _facts(self, target: TargetKey) -> TargetFacts | None:
        members = self._by_target.get(target)
        if not members:
            self._by_target.pop(target, None)
            return None
        return target_facts(members.values())[target]

    def _segments(self, samples: Iterable[Sample], tail: bytes, om: bool) -> list[Segment]:
        """The families in order: cached ones as they are, the rest compressed now, then
        `tail`."""
        lines: dict[int, list[bytes]] = {}
        for sample in samples:
            lines.setdefault(FAMILY_INDEX[sample[0]], []).append(sample_line(sample))
        out: list[Segment] = []
        pending: list[bytes] = []
        engine = compressor()
        headers, differs, kept = self._headers[om], self._differs, self._families[om]
        for index, text_family in enumerate(self._families[False]):
            own = lines.get(index)
            if text_family is None and not own:
                continue
            cached = kept[index] if om and differs[index] else text_family
            if cached is None:
                pending.append(headers[index])
            else:
                if pending:
                    out.append(segment(b"".join(pending), engine))
                    pending = []
                out.append(cached)
            pending.extend(own or ())
        if tail:
            pending.append(tail)
        if pending:
            out.append(segment(b"".join(pending), engine))
        return out

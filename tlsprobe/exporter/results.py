"""The latest result of every endpoint, in memory, for scrapes and the status page.

Results are immutable `EndpointState` values; publishing replaces one entry, and a scrape takes
a shallow copy of the values, so it never waits for a probe and never sees a half-written
result. Only the probing loop writes; the web thread reads through `snapshot` and `for_target`,
whose copies are each one `list(dict.values())`, which CPython runs without letting another
thread in (so without "dictionary changed size during iteration"). No locks are needed.
Endpoints are in the order they first appeared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import EndpointKey


class LatestResults:
    def __init__(self) -> None:
        self._all: dict[EndpointKey, EndpointState] = {}
        """Every endpoint's state in one dict, so a snapshot is one C-level copy."""
        self._by_target: dict[tuple[str, str], dict[EndpointKey, EndpointState]] = {}

    def put(self, state: EndpointState) -> None:
        key = state.key
        self._by_target.setdefault((state.tenant, state.target), {})[key] = state
        self._all[key] = state

    def retain(self, tenant: str, target: str, keep: Iterable[EndpointKey]) -> list[EndpointKey]:
        """Drop the endpoints of a target that its latest cycle no longer found."""
        states = self._by_target.get((tenant, target), {})
        wanted = set(keep)
        gone = [key for key in states if key not in wanted]
        for key in gone:
            del states[key], self._all[key]
        return gone

    def remove_target(self, tenant: str, target: str) -> list[EndpointKey]:
        """Forget a target removed from the configuration; returns its endpoints' keys."""
        states = self._by_target.pop((tenant, target), {})
        for key in states:
            del self._all[key]
        return list(states)

    def snapshot(self) -> list[EndpointState]:
        return list(self._all.values())

    def snapshot_marked(
        self, keys: Iterable[EndpointKey], mark: Callable[[EndpointState], EndpointState]
    ) -> list[EndpointState]:
        """A snapshot with the states of `keys` passed through `mark` (cross-tenant findings):
        one C-level copy, then one lookup per key, whatever the number of endpoints."""
        states = self._all.copy()
        for key in keys:
            state = states.get(key)
            if state is not None:
                states[key] = mark(state)
        return list(states.values())

    def for_target(self, tenant: str, target: str) -> list[EndpointState]:
        return list(self._by_target.get((tenant, target), {}).values())

    def __len__(self) -> int:
        return len(self._all)

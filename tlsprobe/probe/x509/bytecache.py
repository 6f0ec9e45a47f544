"""A least-recently-used cache bounded by bytes as well as by entries.

The evaluation caches are keyed by certificate DER. Counting entries alone bounds nothing when
an endpoint serves a new 100 KiB chain on every connection: 16,384 such entries are gigabytes.
`ByteLRU` charges each entry an estimate of the memory it holds (the caller's `size`, usually
the DER length times a factor for the parsed objects) and drops the least recently used entries
until both the byte and the entry budgets hold. An entry larger than the whole budget is not
kept at all. Thread-safe (a lock around each operation; `compute` runs outside it), because
evaluation may run in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class ByteLRU(Generic[_K, _V]):
    def __init__(self, *, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[_K, tuple[int, _V]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K) -> _V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: _K, value: _V, size: int) -> None:
        with self._lock:
            self._discard(key)
            if size > self.max_bytes:
                return
            self._entries[key] = (size, value)
            self.bytes += size
            while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, (dropped, _) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def _discard(self, key: _K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def memoize(self, key: _K, compute: Callable[[], _V], size: int) -> _V:
        """The cached value for `key`, computing and keeping it on a miss."""
        found = self.get(key)
        if found is None:
            found = compute()
            self.put(key, found, size)
        return found

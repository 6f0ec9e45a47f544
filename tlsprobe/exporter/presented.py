"""Which client certificates a sender presents now, across all its addresses.

A sender is a relay: one node, a pool behind several addresses, or a `peers:` network. Its
sessions come from whichever address sends, so "the sender's certificate changed" cannot be
"this session's leaf differs from the last session's" (two nodes with different leaves would
change on every session). It is: no address of the sender presents this leaf now. `Presented`
keeps, per sender, the leaf each address presented last, for the addresses seen within
`WINDOW`, at most `MAX_ADDRESSES` of them (the least recently seen leaves first). After a
restart it is seeded from the history's sightings within the window, so a node presenting the
leaf it presented before the restart is not a change either. Event loop thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

WINDOW = 86400.0
"""Seconds an address's last leaf counts as presented now (a node that stopped sending is
forgotten a day later: a rollback to its leaf is then a change again)."""
MAX_ADDRESSES = 256
"""Addresses remembered per sender; a `peers:` network may have thousands."""

_RECALLED = "\0history:"
"""The address under which a leaf recalled from the history is remembered (no address has it)."""


class Presented:
    """One sender's addresses and the leaf (SHA-256) each presented last."""

    __slots__ = ("_addresses",)

    def __init__(self, recalled: Iterable[tuple[str, float]] = ()) -> None:
        """`recalled`: (fingerprint, last seen) from the history, oldest first."""
        self._addresses: OrderedDict[str, tuple[str, float]] = OrderedDict()
        for fingerprint, seen_at in recalled:
            self._put(_RECALLED + fingerprint, fingerprint, seen_at)

    def presents(self, fingerprint: str, now: float) -> bool:
        """Whether an address of the sender presented this leaf last, within the window."""
        return any(
            fp == fingerprint and now - seen_at < WINDOW for fp, seen_at in self._addresses.values()
        )

    def record(self, address: str, fingerprint: str, seen_at: float) -> None:
        self._put(address, fingerprint, seen_at)

    def _put(self, address: str, fingerprint: str, seen_at: float) -> None:
        self._addresses[address] = (fingerprint, seen_at)
        self._addresses.move_to_end(address)
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)

    def by_address(self, now: float) -> dict[str, str]:
        """Address -> leaf presented last, within the window (recalled leaves excluded)."""
        return {
            address: fp
            for address, (fp, seen_at) in self._addresses.items()
            if not address.startswith(_RECALLED) and now - seen_at < WINDOW
        }

    def __len__(self) -> int:
        return len(self._addresses)

"""Many members' exposition lines (endpoints or targets), kept compressed in blocks.

Members live in blocks of at most `BLOCK_SIZE`. A block keeps, per metric family, its members'
lines as one compressed `deflate.Segment`, and where each member's lines start in it. When
members change, arrive or leave, only their blocks are rebuilt: the lines of the members that
did not change are cut out of the block's decompressed text, the others rendered afresh, and a
family is compressed again only when its text changed. So the cache holds the exposition
compressed (a small fraction of its size: benchmarks/README.md) instead of as text, and a
scrape after a few results costs a few blocks, not the whole body.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable, Mapping
from itertools import accumulate
from typing import Generic, TypeVar

from tlsprobe.exporter.exposition.deflate import Segment, compressor, segment

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BLOCK_SIZE = 256
"""Members per block: big enough that each family's text compresses well on its own, small
enough that one changed member costs little to splice."""

Parts = Mapping[int, bytes]
"""One member's lines, by family (its place in the metric table)."""


class _Block(Generic[K, V]):
    __slots__ = ("built", "hashes", "members", "offsets", "segments")

    def __init__(self) -> None:
        self.members: dict[K, V] = {}
        self.built: dict[K, V] = {}
        """The members as `segments` show them."""
        self.segments: dict[int, Segment] = {}
        self.offsets: dict[int, array[int]] = {}
        """Per family, where each of `built`'s members' lines start (and the end)."""
        self.hashes: dict[int, array[int]] = {}
        """Per family, the hash of each of `built`'s members' lines."""


class BlockCache(Generic[K, V]):
    """Members by key; `same` tells whether a member's new value renders as its old one."""

    def __init__(
        self,
        render: Callable[[K, V], Parts],
        same: Callable[[V, V], bool],
        size: int = BLOCK_SIZE,
    ) -> None:
        self._render, self._same, self._size = render, same, size
        self._where: dict[K, _Block[K, V]] = {}
        self._blocks: list[_Block[K, V]] = []
        self._roomy: list[_Block[K, V]] = []
        """Blocks that may take a member; new members fill them before a new block opens."""
        self._dirty: dict[int, _Block[K, V]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def update(self, changes: Mapping[K, V | None]) -> None:
        """Set (a value) or drop (None) the given members; the others stay as they are."""
        for key, value in changes.items():
            block = self._where.get(key)
            if value is None:
                if block is not None:
                    self._leave(key, block)
                continue
            if block is None:
                block = self._where[key] = self._take_place()
            elif self._same(block.members[key], value):
                continue
            block.members[key] = value
            self._dirty[id(block)] = block

    def _leave(self, key: K, block: _Block[K, V]) -> None:
        del self._where[key], block.members[key]
        if len(block.members) == self._size - 1:
            self._roomy.append(block)
        self._dirty[id(block)] = block

    def _take_place(self) -> _Block[K, V]:
        while self._roomy and len(self._roomy[-1].members) >= self._size:
            self._roomy.pop()
        if not self._roomy:
            self._roomy.append(_Block())
            self._blocks.append(self._roomy[-1])
        return self._roomy[-1]

    def refresh(self) -> set[int]:
        """Rebuild the blocks changed since the last refresh; returns the families whose
        segments changed."""
        families: set[int] = set()
        for block in self._dirty.values():
            families |= self._rebuild(block)
        if any(not block.members for block in self._dirty.values()):
            self._blocks = [block for block in self._blocks if block.members]
            self._roomy = [block for block in self._roomy if block.members]
        self._dirty.clear()
        return families

    def held_bytes(self) -> int:
        """Compressed text held, over all blocks."""
        return sum(len(s.data) for block in self._blocks for s in block.segments.values())

    def segments(self, family: int) -> list[Segment]:
        return [b.segments[family] for b in self._blocks if family in b.segments]

    def _rebuild(self, block: _Block[K, V]) -> set[int]:
        built, members = block.built, block.members
        fresh = {
            key: self._render(key, value)
            for key, value in members.items()
            if key not in built or not self._same(built[key], value)
        }
        splice = _Splice(block, fresh)
        families = set(block.segments).union(*fresh.values())
        changed = {family for family in sorted(families) if splice.family(family)}
        block.built = dict(members)
        return changed


class _Splice(Generic[K, V]):
    """One block's rebuild: its old text with the fresh members' lines spliced in."""

    def __init__(self, block: _Block[K, V], fresh: Mapping[K, Parts]) -> None:
        self.block, self.fresh = block, fresh
        self.place = {key: i for i, key in enumerate(block.built)}
        self.moved = list(block.members) != list(block.built)
        self.engine = compressor()

    def family(self, family: int) -> bool:
        """Splice one family's text; False when it came out as it was."""
        lines = {key: parts.get(family, b"") for key, parts in self.fresh.items()}
        if not self.moved and self._as_before(family, lines):
            return False
        block = self.block
        old = block.segments.get(family)
        text = memoryview(old.text() if old is not None else b"")
        offsets = block.offsets.get(family)
        pieces: list[bytes | memoryview] = []
        for key in block.members:
            line = lines.get(key)
            if line is not None:
                pieces.append(line)
            elif offsets:  # not fresh, so it was built: its lines are in the old text
                i = self.place[key]
                pieces.append(text[offsets[i] : offsets[i + 1]])
            else:
                pieces.append(b"")
        joined = b"".join(pieces)
        if joined:
            block.segments[family] = segment(joined, self.engine)
            block.offsets[family] = array("I", accumulate(map(len, pieces), initial=0))
            block.hashes[family] = array("q", map(hash, pieces))
        else:
            block.segments.pop(family, None)
            block.offsets.pop(family, None)
            block.hashes.pop(family, None)
        return True

    def _as_before(self, family: int, lines: Mapping[K, bytes]) -> bool:
        """Whether every fresh member's lines of `family` are what the block holds, judged by
        length and hash, so a new result that leaves a family's text alone costs no inflating
        and no compressing of it."""
        offsets, hashes = self.block.offsets.get(family), self.block.hashes.get(family)
        for key, line in lines.items():
            i = self.place[key]
            size = offsets[i + 1] - offsets[i] if offsets else 0
            if len(line) != size or (hashes[i] if hashes else hash(b"")) != hash(line):
                return False
        return True

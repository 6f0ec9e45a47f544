"""Gzip bodies put together from pieces compressed at different times.

Each `Segment` is raw deflate data ending on a full flush: byte-aligned, no final block, no
back-reference into what came before it. Such segments can follow each other in any order and
still form one valid deflate stream, so a scrape body is the segments cached for what did not
change, a fresh segment for what did, one final empty block and the gzip trailer: a single-member
gzip file that every decoder reads (several members would not do: curl and aiohttp stop after the
first). The trailer's CRC-32 of the whole text is combined from the segments' own CRCs, so the
text is never put together uncompressed. Python's zlib module does not expose zlib's
crc32_combine; it is called in the zlib library itself (ctypes), with a pure-Python version of
the same method where that library cannot be loaded (slower by an order of magnitude: see
benchmarks/README.md, "Figures the code relies on").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

LEVEL = 1
"""Faster than the default for about the same size on exposition text (benchmarks/README.md)."""

_POLY = 0xEDB88320
"""CRC-32's polynomial, bit-reflected, as zlib uses it."""
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Gzip member header: deflate, no name, no time, unknown OS."""
_FINAL = b"\x03\x00"
"""An empty final block (fixed Huffman codes): the end of the deflate stream."""


def _multiply(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (zlib's multmodp); `a` is never 0 here."""
    product, bit = 0, 1 << 31
    while True:
        if a & bit:
            product ^= b
            if a & (bit - 1) == 0:
                return product
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    table, power = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(power)
        power = _multiply(power, power)
    return table


_X2N = _powers()
"""x^(2^n) modulo the polynomial, n = 0..31."""


@functools.lru_cache(maxsize=1024)
def _shift(size: int) -> int:
    """x^(8 * size) modulo the polynomial: what appending `size` bytes does to a CRC."""
    power, k = 1 << 31, 3
    while size:
        if size & 1:
            power = _multiply(_X2N[k & 31], power)
        size >>= 1
        k += 1
    return power


def python_combine(crc1: int, crc2: int, size2: int) -> int:
    """CRC-32 of A then B from CRC-32(A), CRC-32(B) and len(B): zlib's crc32_combine."""
    return (_multiply(_shift(size2), crc1) if crc1 else 0) ^ crc2


def _native_combine() -> Callable[[int, int, int], int] | None:
    """crc32_combine64 of the system's zlib (the library Python's zlib module is built on),
    or None where it cannot be loaded."""
    for name in _zlib_names():
        try:
            function = ctypes.CDLL(name).crc32_combine64
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_ulong
        function.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int64)
        if function(zlib.crc32(b"a"), zlib.crc32(b"bc"), 2) != zlib.crc32(b"abc"):
            continue  # not the zlib it claims to be
        return function
    return None


def _zlib_names() -> Iterator[str]:
    yield "libz.so.1"
    # Looked up only where that soname does not load: find_library runs ldconfig or a compiler.
    found = ctypes.util.find_library("z")
    if found:
        yield found


combine: Callable[[int, int, int], int] = _native_combine() or python_combine
"""CRC-32 of two texts one after the other, from their CRCs and the second one's length."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Compressed text that can stand anywhere in a deflate stream, with what the gzip
    trailer needs of it."""

    data: bytes
    crc: int
    size: int
    """Length of the text it holds."""

    def text(self) -> bytes:
        """The text it holds (for splicing new lines into it)."""
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(self.data)


def compressor() -> zlib._Compress:
    """Raw deflate (no header of its own) at `LEVEL`; one may compress many segments."""
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)


def segment(text: bytes, using: zlib._Compress | None = None) -> Segment:
    """`text` compressed as a segment; the full flush lets `using` go on with the next one."""
    engine = using or compressor()
    data = engine.compress(text) + engine.flush(zlib.Z_FULL_FLUSH)
    return Segment(data, zlib.crc32(text), len(text))


def joined(segments: Sequence[Segment]) -> Segment:
    """The segments one after another, as one segment."""
    crc, size = _combined(segments)
    return Segment(b"".join([s.data for s in segments]), crc, size)


def gzip_body(segments: Sequence[Segment]) -> bytes:
    """A complete gzip file of the segments' texts in order."""
    crc, size = _combined(segments)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"".join([_HEADER, *(s.data for s in segments), _FINAL, trailer])


def _combined(segments: Sequence[Segment]) -> tuple[int, int]:
    """CRC-32 and length of the segments' texts one after another."""
    crc, size = 0, 0
    for part in segments:
        crc = combine(crc, part.crc, part.size)
        size += part.size
    return crc, size

"""DANE-TA verdicts, remembered: the path verification is the costly part of judging TLSA.

A DANE-EE record is one hash of the leaf, cheap to recompute on every probe. A DANE-TA record
(usage 2) costs a full path verification from the leaf to the certificate the record names,
on every probe of every endpoint that publishes one: a fleet behind one issuer repeats the same
work each cycle. The verdict depends only on the chain as sent, the record, the reference
names and the clock, so it is kept under exactly that key: a renewed or reordered chain, a
changed record or another next-hop domain misses. It is reused only while the clock stays
between the same two validity boundaries of the chain's certificates (as the trust cache
does), and the cache is bounded in entries and bytes, least recently used first out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tlsprobe.model import Tlsa, TlsaVerdict
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.bytecache import ByteLRU
from tlsprobe.probe.x509.trust import chain_bytes, validity_window

CACHE_ENTRIES = 4096
"""DANE-TA (chain, record, names) triples remembered: a large fleet's distinct ones."""
CACHE_BYTES = 16 << 20

_Key = tuple[tuple[bytes, ...], Tlsa, tuple[str, ...]]
_CACHE: ByteLRU[_Key, tuple[datetime, datetime, TlsaVerdict]] = ByteLRU(
    max_bytes=CACHE_BYTES, max_entries=CACHE_ENTRIES
)


def trust_anchor_verdict(
    chain_der: tuple[bytes, ...],
    record: Tlsa,
    names: tuple[str, ...],
    now: datetime,
    compute: Callable[[], TlsaVerdict],
) -> TlsaVerdict:
    """`compute()`'s verdict for this chain, record and names, from the cache while it holds."""
    key = (chain_der, record, names)
    entry = _CACHE.get(key)
    if entry is not None and entry[0] < now < entry[1]:
        return entry[2]
    verdict = compute()
    window = validity_window([certs.facts_from_der(der) for der in chain_der], now)
    if window is not None:
        size = chain_bytes(chain_der) + len(record.data) + sum(map(len, names)) + 512
        _CACHE.put(key, (*window, verdict), size)
    return verdict


def cached(
    chain_der: tuple[bytes, ...], record: Tlsa, names: tuple[str, ...], now: datetime
) -> bool:
    """Whether `trust_anchor_verdict` would answer from the cache."""
    entry = _CACHE.get((chain_der, record, names))
    return entry is not None and entry[0] < now < entry[1]


def entries() -> int:
    return len(_CACHE)


def clear() -> None:
    _CACHE.clear()

"""Bounded lists in messages and reports: the first few items, then how many more.

A zone or a policy file decides how many records or patterns there are (1,300 TLSA records, a
64 KiB policy of `mx` lines); a message, a report or a JSON document shows a bounded number of
them, each cut to a bound, and counts the rest, so its size never follows the input's.
"""

from __future__ import annotations

from collections.abc import Sequence

MESSAGE_ITEMS = 3
"""Items named in a check's message."""
REPORT_ITEMS = 20
"""Items listed in a report (text or JSON)."""
ITEM_CHARS = 255
"""Characters shown of one item: a whole host name (at most 253), a cut 30 KB `mx` line."""


def item(text: str, limit: int = ITEM_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def listed(items: Sequence[str], limit: int = MESSAGE_ITEMS, sep: str = "; ") -> str:
    """`a; b; c` or `a; b; c; and 1297 more`, each item cut to ITEM_CHARS."""
    shown = sep.join(item(i) for i in items[:limit])
    extra = len(items) - limit
    return f"{shown}{sep}and {extra} more" if extra > 0 else shown

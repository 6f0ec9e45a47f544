"""The flood fleets at once against `tlsprobe serve`, briefly: scrapes answered throughout.

Connections (idle and slow-header, beyond the connection cap), 48 clients with wrong passwords
and a server with a new large certificate before every `/probe`, for `SECONDS`, against an
exporter limited to 512 descriptors (tests/reliability/floods.py). Every authorised scrape must
succeed, descriptors stay below the limit, the history database within its per-endpoint bound
and RSS flat after warm-up. `python -m benchmarks.soak --floods --duration 600` runs it longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.floods import flood_problems, run_floods

pytestmark = pytest.mark.slow

SECONDS = 20.0


async def test_floods_leave_scrapes_answered_and_the_exporter_bounded(tmp_path: Path) -> None:
    samples, counters = await run_floods(tmp_path, SECONDS, report=lambda s: print(s.line()))
    assert flood_problems(samples, counters) == [], "\n".join(s.line() for s in samples)

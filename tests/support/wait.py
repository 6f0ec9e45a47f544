"""Waiting in tests: poll a condition until it holds, with a deadline, never a fixed sleep.

On a loaded two-core machine a fixed sleep is either too short (a flake) or wastes time; a poll
ends as soon as the condition holds and fails with what it was waiting for. `eventually` is for
async tests (its condition may be a plain or an async callable); `poll` and `wait_until` are
for synchronous ones (the end-to-end test, the crash test).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

_T = TypeVar("_T")

WAIT = 15.0
"""Seconds to wait for something that normally takes one or two (a cold interpreter start on
a loaded machine included)."""
EVERY = 0.05
"""Seconds between two looks: short against the waits, long against the work of one look."""


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    timeout: float = WAIT,
    every: float = EVERY,
) -> None:
    """Call `condition` (plain or async) until it returns something true; AssertionError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def poll(
    probe: Callable[[], _T], done: Callable[[_T], bool], *, timeout: float, every: float = 0.5
) -> _T:
    """Call `probe` until `done` holds for its value; returns the last value either way.

    The caller asserts on the returned value, so a timeout fails with the state last seen
    rather than a bare "timed out".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = WAIT, every: float = EVERY
) -> None:
    """The synchronous `eventually`."""
    if not poll(condition, bool, timeout=timeout, every=every):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

"""The event loop `tlsprobe serve` runs on: uvloop when it is installed, else asyncio's own.

uvloop (`pip install tlsprobe[uvloop]`) does the socket and TLS record work of a probe in C
where asyncio's default loop does it in Python, so each probe costs less CPU; nothing else
changes. It stays optional: every code path is tested on the default loop, and the loop in
use is reported as the `event_loop` label of `tlsprobe_build_info`.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoop(enum.StrEnum):
    """The label values of `tlsprobe_build_info{event_loop}`."""

    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when uvloop can be imported; None means asyncio's default."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def running_loop() -> EventLoop:
    """Which kind of loop the caller runs on."""
    module = type(asyncio.get_running_loop()).__module__
    return EventLoop.UVLOOP if module.partition(".")[0] == "uvloop" else EventLoop.ASYNCIO

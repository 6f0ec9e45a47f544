"""Start a tlsprobe exporter for a test and wait until it answers.

Two ways, one place each:
- `in_process(config_path)`: an `Exporter` in the test's own event loop, started and stopped
  around the block (tests/exporter/test_http.py, tests/reliability, benchmarks/soak.py).
- `serving(config, url)`: `python -m tlsprobe serve --config FILE` as a child process, as a
  user runs it, yielded once `/-/ready` answers 200 and killed if the test leaves it running
  (tests/exporter/test_serve.py).

`command()` is the argv of any tlsprobe subcommand run from this checkout (the tests must import
this checkout's package, not an installed one: the child runs with the repository as its
working directory and `python -m`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from tests.support.wait import WAIT, eventually
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import load_config

ROOT = Path(__file__).resolve().parents[2]
"""The repository: `python -m tlsprobe` run from here finds this checkout's package."""


DEMO_STATUS = {
    "healthy": 0,
    "expiring": 1,
    "expired": 2,
    "untrusted": 2,
    "wrong-name": 2,
    "missing-intermediate": 2,
    "not-accepted": 2,
    "no-starttls": 2,
}
"""`tlsprobe demo`'s scenarios (target names) and the `tlsprobe_status` each stands for."""


def command(*args: str) -> list[str]:
    """`tlsprobe ARGS...` with this interpreter."""
    return [sys.executable, "-m", "tlsprobe", *args]


def start_serve(
    config: Path, log: Path, preexec_fn: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`tlsprobe serve` as a plain child process (for tests that kill it or limit it); returns
    it and its /metrics URL once it serves. `preexec_fn` runs in the child before exec."""
    with log.open("a") as stderr:
        process = subprocess.Popen(
            command("serve", "--config", str(config)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            preexec_fn=preexec_fn,  # noqa: PLW1509 (sets a resource limit, nothing else)
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # "tlsprobe serving http://.../metrics (status page ...)"
    assert line.startswith("tlsprobe serving "), (line, log.read_text()[-2000:])
    return process, line.split()[2]


@contextlib.asynccontextmanager
async def in_process(config_path: Path) -> AsyncIterator[Exporter]:
    """The exporter of `config_path` running in this event loop; stopped on leaving."""
    exporter = Exporter(load_config(config_path), config_path)
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()


async def fetch(
    http: aiohttp.ClientSession, url: str | URL, method: str = "GET", **options: Any
) -> tuple[int, str]:
    """One request through `http`: (status, body)."""
    async with http.request(method, url, **options) as response:
        return response.status, await response.text()


async def fetch_once(url: str) -> tuple[int, str]:
    """One GET in a session of its own, five seconds at most."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return await fetch(http, url)


@dataclass
class ServeProcess:
    """A running `tlsprobe serve` child: its process, base URL and combined output."""

    process: asyncio.subprocess.Process
    url: str
    log: Path

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
        """Send `sig`; returns the exit code and the seconds the process took to exit."""
        started = time.monotonic()
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout=WAIT)
        return code, time.monotonic() - started

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def ready(self) -> bool:
        """Whether `/-/ready` answers 200; AssertionError with the log if the child died."""
        if self.process.returncode is not None:
            raise AssertionError(f"serve exited {self.process.returncode}: {self.log_text()}")
        try:
            status, _ = await fetch_once(f"{self.url}/-/ready")
        except aiohttp.ClientError:
            return False
        return status == 200


@contextlib.asynccontextmanager
async def serving(config: Path, url: str) -> AsyncIterator[ServeProcess]:
    """`tlsprobe serve --config FILE` listening at `url`, ready to answer; killed if the test
    leaves it running."""
    log = config.with_suffix(f".{time.monotonic_ns()}.log")
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command("serve", "--config", str(config)),
            stdout=sink,
            stderr=sink,
            cwd=ROOT,
        )
    running = ServeProcess(process, url, log)
    try:
        await eventually(running.ready, "the exporter to answer /-/ready")
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

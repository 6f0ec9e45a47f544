"""A full disk under the state directory: probing and /metrics go on, history resumes.

The state directory lives on a 2 MiB tmpfs the test mounts (the tests run as root, so chmod
would not stop a write; a full file system does). Endpoints whose certificate alternates make
every probe a change that must be written at once. The test fills the file system and expects
`tlsprobe_state_writable 0`, a growing `tlsprobe_state_write_errors_total`, a log line naming
the problem, fresh results and working scrapes meanwhile; then it frees the space and expects
the history written, consistent, and holding the changes seen while the disk was full.
Without permission to mount (not root, no CAP_SYS_ADMIN) the test skips, and fails under
TLSPROBE_REQUIRE_ROOT=1 (CI).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.fleet import FleetEndpoint, FleetProcess
from tests.reliability.harness import (
    check_consistent,
    exporter_config,
    fleet_targets,
    parse_exposition,
    read_history,
    running,
    values,
    write_yaml,
)
from tests.support.exporter import fetch
from tests.support.gates import Gate, unavailable
from tests.support.wait import eventually
from tlsprobe.exporter.app import Exporter

pytestmark = pytest.mark.slow


ENDPOINTS = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(Gate.ROOT, f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def drifting(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[FleetEndpoint], Path]]:
    ca = tmp_path_factory.mktemp("drift") / "ca.pem"
    with FleetProcess(per_kind=ENDPOINTS, ca_out=ca, kinds=["alternating"]) as endpoints:
        yield endpoints, ca


def fill(path: Path) -> None:
    """Write until the file system says ENOSPC."""
    block = b"\0" * 65536
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # The last partial block: tmpfs may still take a few pages smaller than 64 KiB.
    with contextlib.suppress(OSError), path.open("ab", buffering=0) as handle:
        while handle.write(b"\0" * 512):
            pass


async def metric(http: aiohttp.ClientSession, exporter: Exporter, name: str) -> list[float]:
    status, text = await fetch(http, f"{exporter.url}/metrics")
    assert status == 200
    return values(parse_exposition(text), name)


async def test_full_disk_keeps_probing_and_history_resumes(
    tmp_path: Path,
    small_disk: Path,
    drifting: tuple[list[FleetEndpoint], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoints, ca = drifting
    state = small_disk / "state"
    data = exporter_config(
        state, ca, fleet_targets(endpoints), interval="1s", timeout="800ms", retries=0
    )
    path = write_yaml(tmp_path / "tlsprobe.yml", data)
    package = logging.getLogger("tlsprobe")
    propagate, package.propagate = package.propagate, True  # setup_logging may have cut it
    try:
        with caplog.at_level(logging.INFO, logger="tlsprobe"):
            async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
                await _run(exporter, http, small_disk, state, len(endpoints))
    finally:
        package.propagate = propagate
    assert any("cannot be written" in r.getMessage() for r in caplog.records)
    assert any("writable again" in r.getMessage() for r in caplog.records)


async def _run(
    exporter: Exporter, http: aiohttp.ClientSession, disk: Path, state: Path, count: int
) -> None:
    def changes() -> list[float]:
        return [s.drift.changes_total for s in exporter.results.snapshot() if s.drift]

    await eventually(lambda: len(changes()) == count and min(changes()) >= 1, "first changes")
    assert await metric(http, exporter, "tlsprobe_state_writable") == [1.0]

    fill(disk / "filler")
    full_at = time.time()
    await eventually(lambda: not _writable(exporter), "state_writable 0")
    assert await metric(http, exporter, "tlsprobe_state_writable") == [0.0]
    errors = (await metric(http, exporter, "tlsprobe_state_write_errors_total"))[0]
    assert errors >= 1

    # Probing goes on while the disk is full: results renew and changes keep being counted.
    before = {s.target: (s.result.started_at, s.drift) for s in exporter.results.snapshot()}
    await eventually(
        lambda: all(
            s.result.started_at > before[s.target][0] + 1.0 for s in exporter.results.snapshot()
        ),
        "results renewed while the disk is full",
    )
    counted = sum(changes())
    assert counted > sum(d.changes_total for _, d in before.values() if d)
    assert not _writable(exporter)

    (disk / "filler").unlink()
    recovered_at = time.time()
    await eventually(lambda: _writable(exporter), "state_writable 1", timeout=20.0)
    assert await metric(http, exporter, "tlsprobe_state_writable") == [1.0]
    assert (await metric(http, exporter, "tlsprobe_state_write_errors_total"))[0] >= errors

    history = read_history(state / "history.sqlite3")
    check_consistent(history)
    during = [
        at for rec in history.values() for at, _, _ in rec.events if full_at < at < recovered_at
    ]
    assert during, "changes seen while the disk was full never reached the history"
    # What the database holds is what the exporter reports, endpoint by endpoint.
    assert sum(rec.changes_total for rec in history.values()) >= counted


def _writable(exporter: Exporter) -> bool:
    return exporter.history is not None and exporter.history.writable

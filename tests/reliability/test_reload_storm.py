"""Reload storms: many reloads, valid and broken, while probes run; the last valid config rules.

Twelve healthy loopback endpoints are probed every second while the test rewrites the
configuration file sixty times (random target subsets, intervals and names, interleaved with
broken files: bad YAML, unknown keys, impossible values, duplicate names, binary junk, a missing
file) and reloads it, directly and through concurrent `POST /-/reload` requests. Afterwards the
configuration in force must be the last valid one: exactly its targets are scheduled, probed
since that reload and exposed, each series once, none of the removed ones left behind, and
`tlsprobe_config_last_reload_successful` says the very last attempt failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.reliability.fleet import FleetEndpoint, FleetProcess
from tests.reliability.harness import (
    exporter_config,
    fleet_targets,
    label_values,
    parse_exposition,
    running,
    values,
    write_yaml,
)
from tests.support.exporter import fetch
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


RELOADS = 60


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[FleetEndpoint], Path]]:
    ca = tmp_path_factory.mktemp("storm") / "ca.pem"
    with FleetProcess(per_kind=12, ca_out=ca, kinds=["normal"]) as endpoints:
        yield endpoints, ca


def valid_variant(
    rng: random.Random, base: dict[str, Any], endpoints: list[FleetEndpoint]
) -> dict[str, Any]:
    chosen = rng.sample(endpoints, rng.randint(3, len(endpoints)))
    targets = fleet_targets(chosen)
    for target in targets:
        target["interval"] = rng.choice(["1s", "1500ms"])
        if rng.random() < 0.2:
            target["name"] += "-renamed"
    return {**base, "targets": targets}


def broken_variants(base: dict[str, Any]) -> list[Callable[[Path], None]]:
    def text(content: str | bytes) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)

        return write

    def missing(path: Path) -> None:
        path.unlink(missing_ok=True)

    good = yaml.safe_dump(base)
    first = base["targets"][0]
    return [
        text(good + "\ntargets: [\n"),
        text(good.replace("defaults:", "defualts:")),
        text(yaml.safe_dump({**base, "targets": [{**first, "port": 0}]})),
        text(yaml.safe_dump({**base, "targets": [first, first]})),
        text(b"\x00\xff\xfe garbage \x80"),
        text(""),
        missing,
    ]


async def test_reload_storm_leaves_the_last_valid_config_in_force(
    tmp_path: Path, healthy: tuple[list[FleetEndpoint], Path]
) -> None:
    endpoints, ca = healthy
    rng = random.Random(7)
    base = exporter_config(
        tmp_path / "state", ca, fleet_targets(endpoints), interval="1s", timeout="800ms"
    )
    path = write_yaml(tmp_path / "tlsprobe.yml", base)
    broken = broken_variants(base)
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        reload_url = f"{exporter.url}/-/reload"
        last_valid = base
        last_valid_at = started = time.time()
        for i in range(RELOADS):
            final = i == RELOADS - 1
            if not final and rng.random() < 0.6:
                last_valid = valid_variant(rng, base, endpoints)
                write_yaml(path, last_valid)
                ok = True
            else:
                rng.choice(broken)(path)
                ok = False
            if rng.random() < 0.5:
                errors = [await exporter.reload()]
            else:
                answers = await asyncio.gather(
                    *(fetch(http, reload_url, "POST") for _ in range(rng.randint(1, 3)))
                )
                errors = [None if status == 200 else body for status, body in answers]
            assert all((e is None) == ok for e in errors), (i, errors)
            if ok:
                last_valid_at = time.time()
            await asyncio.sleep(rng.uniform(0, 0.03))

        print(f"storm took {time.time() - started:.1f} s")
        wanted = {t["name"] for t in last_valid["targets"]}
        assert {t.name for t in exporter.config.targets} == wanted
        assert exporter.scheduler is not None
        loops = list(exporter.scheduler.tasks)
        assert len(loops) == len(wanted) and not any(t.done() for t in loops)
        try:
            await eventually(
                lambda: _probed_since(exporter, last_valid_at) == wanted,
                "every target of the last valid config probed since it was loaded",
            )
        except AssertionError as exc:
            stale = [
                (s.target, round(s.result.started_at - last_valid_at, 3), s.target in wanted)
                for s in exporter.results.snapshot()
                if s.result.started_at <= last_valid_at or s.target not in wanted
            ]
            raise AssertionError(f"{exc}; (target, started - reload, wanted): {stale}") from None
        await asyncio.sleep(1.5)  # another cycle: anything left over would be back by now
        status, text = await fetch(http, f"{exporter.url}/metrics")
    assert status == 200
    series = parse_exposition(text)  # fails on any duplicate series
    assert label_values(series, "tlsprobe_status", "target") == wanted
    assert values(series, "tlsprobe_status") == [0.0] * len(wanted)
    assert values(series, "tlsprobe_config_last_reload_successful") == [0.0]
    assert values(series, "tlsprobe_targets_configured") == [float(len(wanted))]
    assert values(series, "tlsprobe_endpoints") == [float(len(wanted))]


def _probed_since(exporter: Any, moment: float) -> set[str]:
    states = exporter.results.snapshot()
    if any(s.result.started_at <= moment for s in states):
        return set()
    return {s.target for s in states}

"""/metrics is served on its own thread: answered while the probing loop is blocked.

The exporter runs in the test's event loop (the probing loop); a plain client in another thread
scrapes while a coroutine on that loop blocks it outright, as a long stretch of probe work would.
Before the web server had its own loop, such a scrape waited for the loop (here: for ever).
The snapshot follows the results: a new result shows in the next scrape.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.exporter import in_process
from tests.support.servers import unused_port
from tests.support.wait import WAIT, eventually
from tlsprobe.exporter.app import Exporter


def config(tmp_path: Path, ca_file: Path) -> Path:
    """One target on a closed loopback port: every probe ends in a (failed) result quickly."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "defaults": {"interval": "1s", "timeout": "500ms", "retries": 0, "ca_file": str(ca_file)},
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.test"],
                "targets": [{"name": "closed", "host": "mail.contoso.test", "address": "127.0.0.1",
                             "port": unused_port()}],
            }
        },
    }  # fmt: skip
    path = tmp_path / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def in_thread(get: Callable[[], bytes]) -> tuple[threading.Event, list[bytes]]:
    """Run `get` in a thread of its own; the event is set once it has answered."""
    done, out = threading.Event(), []

    def run() -> None:
        out.append(get())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        body: bytes = response.read()
        return body


def last_probe(text: bytes) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "tlsprobe_last_probe_timestamp_seconds":
                return sample.value
    return 0.0


def newest(exporter: Exporter) -> float:
    return max((s.result.started_at for s in exporter.results.snapshot()), default=0.0)


async def test_metrics_are_answered_while_the_probing_loop_is_blocked(
    tmp_path: Path, ca_file: Path
) -> None:
    async with in_process(config(tmp_path, ca_file)) as exporter:
        await eventually(lambda: newest(exporter) > 0, "a first result")
        bodies = {}
        for path in ("/metrics", "/-/healthy"):
            done, body = in_thread(lambda p=path: scrape(exporter.url + p))  # type: ignore[misc]
            # Blocks this loop, the probing loop, until the answer came (or WAIT passed).
            answered = done.wait(WAIT)
            assert answered, f"{path} was not answered while the probing loop was blocked"
            bodies[path] = body[0]
        assert last_probe(bodies["/metrics"]) > 0
        assert bodies["/-/healthy"] == b"Healthy\n"


async def test_a_new_result_shows_in_the_next_scrape(tmp_path: Path, ca_file: Path) -> None:
    async with in_process(config(tmp_path, ca_file)) as exporter:
        await eventually(lambda: newest(exporter) > 0, "a first result")
        url = exporter.url + "/metrics"
        before = newest(exporter)
        first = last_probe(scrape(url))
        assert first >= before
        await eventually(lambda: newest(exporter) > first, "a newer result")
        after = newest(exporter)
        assert last_probe(scrape(url)) >= after > first

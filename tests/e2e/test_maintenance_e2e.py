"""End to end: a maintenance window of the configuration keeps a real Prometheus and Alertmanager
from paging for a failing endpoint while it is open, and the page goes out once it closes.

Two loopback SMTP servers that offer no STARTTLS (a page: TlsprobeStarttlsUnavailable) are
probed by a real `tlsprobe serve`; one target has a one-off window of `WINDOW_SECONDS` from the
start, the other none. Prometheus (every `for:` cut to 2 s, as in test_prometheus_e2e) and
Alertmanager (the shipped routing and inhibition, every receiver a webhook this test serves)
run as real processes. The test counts the pager notifications at the webhook: the target
without a window pages (the path works), the one in its window does not, although Prometheus
holds its alert firing (the `for:` timer ran through the window); after the window closes,
with no reload, it pages.

Without Prometheus or Alertmanager the module skips, and fails under TLSPROBE_REQUIRE_PROMETHEUS=1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    MAINTENANCE_SERIES,
    ROOT,
    Daemons,
    LoopThread,
    Webhook,
    api,
    exposed_metrics,
    http_get,
    named_metrics,
)
from tests.support.exporter import command
from tests.support.gates import prometheus_tool
from tests.support.servers import Behaviour, SmtpTestServer, unused_port
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

WINDOW_SECONDS = 40.0
"""From writing the configuration to the window's end: the stack starts, the control target
pages and the maintained one's alert fires within it (a few seconds when the machine is idle)."""
SETTLE_SECONDS = 60.0
TENANT = "contoso"
MAINTAINED = "maintained"
CONTROL = "control"
PAGE = "TlsprobeStarttlsUnavailable"


@dataclass(frozen=True)
class Stack:
    exporter: str
    prometheus: str
    window_end: float
    webhook: Webhook


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = prometheus_tool("prometheus")
    alertmanager = prometheus_tool("alertmanager")
    tmp = tmp_path_factory.mktemp("maintenance")
    with LoopThread() as loop, Webhook() as webhook:
        servers = {
            name: loop.run(
                SmtpTestServer(
                    None, behaviour=Behaviour.NO_STARTTLS, hostname=f"{name}.test"
                ).__aenter__()
            )
            for name in (MAINTAINED, CONTROL)
        }
        try:
            with Daemons(tmp) as daemons:
                end = float(int(time.time() + WINDOW_SECONDS))  # whole seconds, as written
                config = tmp / "tlsprobe.yml"
                port = unused_port()
                config.write_text(yaml.safe_dump(exporter_config(servers, tmp, port, end)))
                argv = command("serve", "--config", str(config))
                exporter = daemons.start("tlsprobe", argv, f"http://127.0.0.1:{port}/-/ready")
                manager = daemons.alertmanager(alertmanager, webhook.url)
                prom = daemons.prometheus(prometheus, exporter, manager, "2s")
                yield Stack(exporter, prom, end, webhook)
        finally:
            for server in servers.values():
                loop.run(server.__aexit__(None, None, None))


def exporter_config(
    servers: dict[str, SmtpTestServer], tmp: Path, port: int, end: float
) -> dict[str, Any]:
    def iso(moment: float) -> str:
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    window = {"start": iso(time.time() - 3600), "end": iso(end), "timezone": "UTC"}
    targets = [
        {
            "name": name,
            "host": f"{name}.test",
            "address": "127.0.0.1",
            "port": server.port,
            **({"maintenance": [window]} if name == MAINTAINED else {}),
        }
        for name, server in servers.items()
    ]
    return {
        "state_dir": str(tmp / "state"),
        "web": {"listen": f"127.0.0.1:{port}"},
        "defaults": {"interval": "3s", "timeout": "2s", "retries": 0, "ehlo_name": "probe.test"},
        "tenants": {TENANT: {"targets": targets}},
    }


def pages(stack: Stack, target: str) -> list[str]:
    """Names of the firing alerts of `target` in the pager's notifications, one entry per
    alert per notification."""
    return [
        alert["labels"]["alertname"]
        for payload in stack.webhook.payloads()
        if payload["receiver"] == "pager"
        for alert in payload["alerts"]
        if alert["labels"].get("target") == target and alert["status"] == "firing"
    ]


def firing(stack: Stack) -> set[tuple[str, str]]:
    """(alertname, target) of the alerts Prometheus holds firing."""
    return {
        (a["labels"]["alertname"], a["labels"].get("target", ""))
        for a in api(stack.prometheus, "/api/v1/alerts")["alerts"]
        if a["state"] == "firing"
    }


def maintenance_active(stack: Stack) -> str:
    text = http_get(f"{stack.exporter}/metrics").decode()
    lines = [line for line in text.splitlines() if line.startswith("tlsprobe_maintenance_active")]
    assert len(lines) == 1 and f'target="{MAINTAINED}"' in lines[0], lines
    return lines[0].rsplit(" ", 1)[1]


def test_no_page_in_the_window_and_a_page_after_it(stack: Stack) -> None:
    # In the window: the control target pages, the maintained one's alert fires in
    # Prometheus, inhibited in Alertmanager by TlsprobeMaintenance.
    control = poll(lambda: pages(stack, CONTROL), bool, timeout=SETTLE_SECONDS)
    assert PAGE in control, stack.webhook.payloads()
    wanted = {(PAGE, MAINTAINED), ("TlsprobeMaintenance", MAINTAINED), (PAGE, CONTROL)}
    seen = poll(lambda: firing(stack), lambda f: wanted <= f, timeout=SETTLE_SECONDS)
    assert wanted <= seen, seen
    assert time.time() < stack.window_end, "the stack took the whole window to start"
    assert maintenance_active(stack) == "1.0"
    exposed = exposed_metrics(http_get(f"{stack.exporter}/metrics").decode())
    deploy = named_metrics(p for p in sorted((ROOT / "deploy").rglob("*")) if p.is_file())
    named = {name for names in deploy.values() for name in names if "maintenance" in name}
    assert named == MAINTENANCE_SERIES <= exposed  # what deploy/ names, in an open window
    # The status page says so on the maintained target's row only.
    rows = http_get(f"{stack.exporter}/").decode().split("<tr>")
    marked = [row for row in rows if "maintenance until" in row]
    assert len(marked) == 1 and f">{MAINTAINED}<" in marked[0], marked
    # Until the window closes, not one pager notification for the maintained target.
    while time.time() < stack.window_end - 1:
        assert pages(stack, MAINTAINED) == [], stack.webhook.payloads()
        time.sleep(0.5)
    assert pages(stack, MAINTAINED) == []

    # After it, without a reload: the exporter says so, and the page goes out.
    after = poll(lambda: pages(stack, MAINTAINED), bool, timeout=SETTLE_SECONDS)
    assert time.time() >= stack.window_end
    assert PAGE in after, stack.webhook.payloads()
    assert maintenance_active(stack) == "0.0"
    assert ("TlsprobeMaintenance", MAINTAINED) not in firing(stack)

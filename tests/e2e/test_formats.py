"""Real Prometheus scrapes `tlsprobe serve` in OpenMetrics and in text format 0.0.4, /metrics
and /probe alike.

Prometheus asks for OpenMetrics first (its Accept header prefers
`application/openmetrics-text`); Debian's Prometheus 2.42 has no `scrape_protocols` setting
to ask for text only, so the text jobs go through a loopback relay that sends the exporter the
Accept header of a text-only scraper (`text/plain;version=0.0.4`). Every job goes through such
a relay, which notes the Accept header and the content type of each answer: the OpenMetrics
jobs must get OpenMetrics, the text jobs text 0.0.4, and Prometheus must ingest the same
series from both (counters with their `_total` names, the process series of the exporter's
own registry, the endpoint series of /probe).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemons, query, serve_one_target
from tests.support.gates import prometheus_tool
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

TEXT_ONLY = "text/plain;version=0.0.4"
MAX_BODY = 4 * 1024 * 1024
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Relay:
    """A loopback HTTP relay to the exporter; `accept` replaces the scraper's Accept header
    (None: passed on as it is). Notes (path, Accept sent on, Content-Type answered)."""

    upstream: str
    accept: str | None
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    port: int = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                accept = relay.accept or self.headers.get("Accept") or ""
                headers = {"Accept": accept, "Accept-Encoding": "gzip"}
                request = urllib.request.Request(relay.upstream + self.path, headers=headers)
                with _DIRECT.open(request, timeout=10) as answer:
                    body = answer.read(MAX_BODY)
                    content_type = answer.headers.get("Content-Type", "")
                    encoding = answer.headers.get("Content-Encoding")
                relay.seen.append((self.path, accept, content_type))
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


@contextmanager
def relaying(relay: Relay) -> Iterator[Relay]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), relay.handler())
    relay.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _jobs(openmetrics: Relay, text: Relay) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for fmt, relay in (("openmetrics", openmetrics), ("text", text)):
        target = {"targets": [f"127.0.0.1:{relay.port}"]}
        jobs.append({"job_name": f"metrics-{fmt}", "static_configs": [target]})
        jobs.append(
            {
                "job_name": f"probe-{fmt}",
                "metrics_path": "/probe",
                "params": {"target": ["mx"]},
                "scrape_interval": "2s",
                "static_configs": [target],
            }
        )
    return jobs


def test_prometheus_scrapes_openmetrics_and_text(tmp_path: Path) -> None:
    binary = prometheus_tool("prometheus")
    # Nobody listens on the target's port: the probe fails at once, with every series of a
    # failed probe (the formats are what is under test, not the verdict).
    process, url = serve_one_target(tmp_path, {}, {})
    upstream = url.removesuffix("/metrics")
    try:
        with (
            relaying(Relay(upstream, None)) as om,
            relaying(Relay(upstream, TEXT_ONLY)) as text,
            Daemons(tmp_path) as daemons,
        ):
            prometheus = daemons.scraping(binary, _jobs(om, text))

            def ingested() -> dict[str, dict[str, int]]:
                counts: dict[str, dict[str, int]] = {}
                for expr in (
                    "up == 1",
                    "process_cpu_seconds_total",
                    "process_open_fds",
                    "python_gc_collections_total",
                    "tlsprobe_probes_total",
                    "tlsprobe_build_info",
                    "tlsprobe_probe_success",
                    "tlsprobe_probe_duration_seconds",
                ):
                    for sample in query(prometheus, expr):
                        job = sample["metric"]["job"]
                        counts.setdefault(job, {}).setdefault(expr, 0)
                        counts[job][expr] += 1
                return counts

            counts = poll(
                ingested,
                lambda now: (
                    all(
                        now.get(job, {}).get("tlsprobe_probe_success")
                        for job in ("metrics-openmetrics", "metrics-text")
                    )
                    and all(
                        now.get(job, {}).get("up == 1")
                        for job in ("probe-openmetrics", "probe-text")
                    )
                ),
                timeout=40,
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    assert counts["metrics-openmetrics"] == counts["metrics-text"]
    metrics_series = counts["metrics-text"]
    assert metrics_series["process_cpu_seconds_total"] == 1
    assert metrics_series["process_open_fds"] == 1
    assert metrics_series["python_gc_collections_total"] == 3
    assert metrics_series["tlsprobe_probes_total"] == 4
    assert counts["probe-openmetrics"] == counts["probe-text"]
    probe_series = counts["probe-text"]
    assert probe_series["tlsprobe_probe_success"] == 1
    assert "process_cpu_seconds_total" not in probe_series  # /probe: the probed target only

    for relay, wanted in ((om, "application/openmetrics-text; version=1.0.0"), (text, "text/")):
        paths = {path.split("?")[0] for path, _, _ in relay.seen}
        assert paths == {"/metrics", "/probe"}, relay.seen
        for path, _accept, content_type in relay.seen:
            assert content_type.startswith(wanted), (path, content_type)
    assert all("application/openmetrics-text" in accept for _, accept, _ in om.seen)
    assert all(ct == "text/plain; version=0.0.4; charset=utf-8" for _, _, ct in text.seen)

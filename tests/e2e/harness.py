"""Machinery for the end-to-end test: real daemons, a webhook sink and an asyncio thread.

The end-to-end test runs `tlsprobe serve`, Prometheus and Alertmanager as real processes on
loopback, with scripted SMTP servers in an event loop on a background thread (the test itself
is synchronous: it only polls HTTP APIs). Everything here binds 127.0.0.1, talks to 127.0.0.1
without any proxy, and is torn down by its owner, so a failed test leaves no process, thread or
socket behind. Waits poll with a deadline: on a loaded two-core CI runner a fixed sleep is
either too short or wastes time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import yaml

from tests.support.exporter import start_serve
from tests.support.servers import unused_port
from tests.support.wait import poll

_T = TypeVar("_T")

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tlsprobe.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

# No proxy, whatever the environment says: every daemon of this test is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

# Grafana's variables as the dashboard's "All" selection and a short time range expand them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$tenant": ".*",
    "$target": ".*",
}

MAINTENANCE_SERIES = frozenset(
    {"tlsprobe_maintenance_active", "tlsprobe_maintenance_window_end_timestamp_seconds"}
)
"""Exposed only in an open maintenance window (which would hold back the pages of the main
fleet): test_maintenance_e2e scrapes them, test_prometheus_e2e every other name deploy/ uses."""

METRIC_NAME = re.compile(r"\btlsprobe_[a-z0-9_]+")


def loopback_env() -> dict[str, str]:
    """The environment minus proxy settings, for the daemons this test starts."""
    return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with _OPENER.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def api(base: str, path: str, **params: str) -> Any:
    """The `data` of a Prometheus or Alertmanager v1-style JSON answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    answer = json.loads(http_get(f"{base}{path}{query}"))
    assert answer["status"] == "success", answer
    return answer["data"]


# --- processes -------------------------------------------------------------------------------


class Daemon:
    """A child process whose output goes to a log file; `stop` ends it (kills it if need be)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as sink:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=loopback_env(),
            )

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Poll `url` (a readiness endpoint) until it answers 200."""

        def answers() -> bool:
            if self._process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.tail()}")
            try:
                http_get(url, timeout=2)
            except OSError:
                return False
            return True

        if not poll(answers, bool, timeout=timeout, every=0.1):
            raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


class Daemons:
    """The daemons of one end-to-end stack, started in order and stopped in reverse on exit.

    `start` returns a daemon's base URL once its readiness URL answers; `alertmanager` and
    `prometheus` start the real ones with the shipped routing and rules (holds cut to `hold`),
    Prometheus scraping the exporter and evaluating every second.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Daemon] = []

    def start(self, name: str, argv: list[str], ready: str) -> str:
        daemon = Daemon(name, argv, self.tmp / f"{name}.log")
        self.started.append(daemon)
        daemon.wait_ready(ready)
        return ready.rsplit("/-/", 1)[0]

    def alertmanager(self, binary: str, webhook: str, scale: float | None = None) -> str:
        """`scale`: every timer of the shipped routing divided by it (see `write_scaled_*`);
        None: the quick timers of `write_fast_alertmanager`."""
        config = self.tmp / "alertmanager.yml"
        if scale is None:
            write_fast_alertmanager(ALERTMANAGER_CONFIG, config, webhook)
        else:
            write_scaled_alertmanager(ALERTMANAGER_CONFIG, config, webhook, scale)
        port = unused_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={self.tmp / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Empty: no cluster listener, so no gossip and no peer lookups.
            "--cluster.listen-address=",
        ]
        return self.start("alertmanager", argv, f"http://127.0.0.1:{port}/-/ready")

    def prometheus(
        self, binary: str, exporter: str, alertmanager: str, hold: str, scale: float | None = None
    ) -> str:
        """`scale`: every `for:` and `keep_firing_for:` divided by it; None: every `for:` set
        to `hold`."""
        rules = self.tmp / "tlsprobe.rules.yml"
        if scale is None:
            assert write_fast_rules(RULES, rules, hold) > 10
        else:
            assert write_scaled_rules(RULES, rules, scale) > 10
        return self._prometheus(binary, prometheus_config(exporter, alertmanager, rules))

    def scraping(self, binary: str, scrape_configs: Sequence[Mapping[str, Any]]) -> str:
        """A real Prometheus of `scrape_configs` alone (no rules, no Alertmanager), scraping
        and evaluating every second."""
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": list(scrape_configs),
        }
        return self._prometheus(binary, config)

    def _prometheus(self, binary: str, config: Mapping[str, Any]) -> str:
        path = self.tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
        port = unused_port()
        argv = [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={self.tmp / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        return self.start("prometheus", argv, f"http://127.0.0.1:{port}/-/ready")

    def stop(self) -> None:
        for daemon in reversed(self.started):
            daemon.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_one_target(
    tmp: Path, web: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[subprocess.Popen[str], str]:
    """`tlsprobe serve` of one target, `mx` on a loopback port nobody listens on, probed once an
    hour (a scrape test needs series, not a verdict); `web` beside the listen address. Returns
    the process and its /metrics URL."""
    target = {"name": "mx", "host": "mail.contoso.test", "address": "127.0.0.1"}
    config = {
        "state_dir": str(tmp / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}", **web},
        "defaults": {"interval": "1h", "timeout": "2s", **defaults},
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.test"],
                "targets": [{**target, "port": unused_port()}],
            }
        },
    }
    path = tmp / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(config))
    return start_serve(path, tmp / "serve.log")


def prometheus_config(exporter: str, alertmanager: str, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [host_port(alertmanager)]}]}]
        },
        "scrape_configs": [
            {"job_name": "tlsprobe", "static_configs": [{"targets": [host_port(exporter)]}]}
        ],
    }


def host_port(base: str) -> str:
    return base.removeprefix("http://")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """The samples of an instant query."""
    result: list[dict[str, Any]] = api(prometheus, "/api/v1/query", query=expr)["result"]
    return result


# --- an event loop for the SMTP servers -------------------------------------------------------


class LoopThread:
    """An asyncio loop on a daemon thread; `run` executes a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-smtp", daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


# --- the webhook Alertmanager delivers to -----------------------------------------------------


class Webhook:
    """An HTTP server on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self._payloads: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        received, lock = self._payloads, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with lock:
                    received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: Alertmanager posts often and the test reports what matters."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="e2e-webhook")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._payloads)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- the shipped files, adapted to a test's time scale ----------------------------------------


def write_fast_rules(source: Path, destination: Path, hold: str) -> int:
    """Copy the alert rules with every `for:` set to `hold`; returns how many were rewritten.

    The shipped holds (5 to 30 minutes) would make the test last half an hour; what the test
    proves is which alerts fire, which does not depend on how long they wait.
    """
    rules = yaml.safe_load(source.read_text(encoding="utf-8"))
    rewritten = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
                rewritten += 1
    destination.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return rewritten


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def scaled(duration: str, scale: float) -> str:
    """A Prometheus duration ("10m", "1h30m") divided by `scale`, in whole seconds (at least 1)."""
    parts = _DURATION.findall(duration)
    assert parts, f"not a duration: {duration!r}"
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    return f"{max(1, round(seconds / scale))}s" if seconds else "0s"


def write_scaled_rules(source: Path, destination: Path, scale: float) -> int:
    """Copy the alert rules with every `for:` and `keep_firing_for:` divided by `scale`, the
    timeline of a test that must see them run out (an outage longer than keep_firing_for);
    returns how many were rewritten. The expressions are unchanged (the drift alerts' hour)."""
    rules = yaml.safe_load(source.read_text(encoding="utf-8"))
    rewritten = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = scaled(rule[key], scale)
                    rewritten += 1
    destination.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return rewritten


def write_scaled_alertmanager(source: Path, destination: Path, webhook: str, scale: float) -> None:
    """The shipped routing and inhibition, every receiver pointed at `webhook`, every timer
    (group_wait, group_interval, repeat_interval) divided by `scale`."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    root = config["route"]
    for route in [root, *root.get("routes", [])]:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scaled(route[key], scale)
    destination.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def write_fast_alertmanager(source: Path, destination: Path, webhook: str) -> None:
    """The shipped routing and inhibition, every receiver pointed at `webhook`, quick timers."""
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    root = config["route"]
    # Sub-routes inherit the root's timers unless they set their own.
    for route in [root, *root.get("routes", [])]:
        for key in ("group_wait", "group_interval"):
            if route is root or key in route:
                route[key] = "1s"
        # Long, so a payload seen twice means two notifications, not a resend.
        route["repeat_interval"] = "1h"
    destination.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    expr: str


def dashboard_queries(path: Path) -> list[PanelQuery]:
    """Every PromQL of the dashboard's panels (rows included) and annotations."""
    board = json.loads(path.read_text(encoding="utf-8"))

    def panels(items: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    queries = [
        PanelQuery(panel.get("title", "?"), target["expr"])
        for panel in panels(board["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    annotations = board.get("annotations", {}).get("list", [])
    return queries + [
        PanelQuery(f"annotation {a['name']}", a["expr"]) for a in annotations if a.get("expr")
    ]


def expand_grafana(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def named_metrics(paths: Iterable[Path]) -> dict[str, set[str]]:
    """tlsprobe_* names mentioned in each file, by path relative to the repository."""
    found: dict[str, set[str]] = {}
    for path in paths:
        names = set(METRIC_NAME.findall(path.read_text(encoding="utf-8", errors="replace")))
        if names:
            found[str(path.relative_to(ROOT))] = names
    return found


def exposed_metrics(exposition: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names

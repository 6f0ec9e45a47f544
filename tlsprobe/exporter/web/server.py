"""HTTP: /metrics, /probe, /-/healthy, /-/ready, /-/reload, status page, detail views.

aiohttp serves on its own thread and loop (`thread`), apart from the scheduler's: a scrape
reads snapshots of the in-memory results, and what acts on the probing side goes through
`on_probing`. Every path sits behind the same guards: basic auth when the web config has users,
a cap on concurrent requests (503 beyond it), bounded request bodies, and for `/probe` a
separate cap (429) because a probe costs a connection to a mail server. Authentication comes
before the request cap and limits failed attempts per client (`authgate`), so wrong passwords
never take the places of answered scrapes; open connections are capped before that
(`connections`). `/probe` checks only configured targets, or hosts the configuration's allowlist
names, so the exporter never becomes an open scanner, and probes a target at most once per
`web.probe_min_interval` (`probelimit`). `/metrics` and `/probe` answer OpenMetrics when the
scrape's Accept asks for it, text 0.0.4 otherwise, gzipped when the client takes gzip.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, replace
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tlsprobe import report
from tlsprobe.exporter import links
from tlsprobe.exporter.config import Config, TargetConfig, maintenance
from tlsprobe.exporter.config.web import WebConfig
from tlsprobe.exporter.exchange import attribution
from tlsprobe.exporter.exposition import collector
from tlsprobe.exporter.exposition.collector import ExporterRegistry, wants_openmetrics
from tlsprobe.exporter.exposition.metrics import maintenance_samples
from tlsprobe.exporter.exposition.scrape import Scrape, probe_body
from tlsprobe.exporter.exposition.send import send_side_samples
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.exporter.history.store import HistoryStore
from tlsprobe.exporter.pages.detail import detail_page
from tlsprobe.exporter.pages.sender_detail import sender_page
from tlsprobe.exporter.pages.senders import senders_section
from tlsprobe.exporter.pages.status import STATUS_COLOURS, Section, StatusPage, View
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.senders import SendSide
from tlsprobe.exporter.state import EndpointState, SenderState, state_for
from tlsprobe.exporter.web.allowlist import AllowlistError, check_adhoc
from tlsprobe.exporter.web.authgate import AuthGate, Verdict
from tlsprobe.exporter.web.connections import ConnectionGuard
from tlsprobe.exporter.web.probelimit import ProbeLimiter
from tlsprobe.exporter.web.thread import same_loop
from tlsprobe.model import Mode, ProbeResult
from tlsprobe.probe.prober import utcnow

log = logging.getLogger("tlsprobe.exporter.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OnProbing = Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]
MAX_BODY = 64 * 1024
PROBE_CONCURRENCY = 4
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
SCRAPE_TIMEOUT_MARGIN = 0.5
"""Seconds kept back from the scrape's timeout for rendering and the way back (as
blackbox_exporter's --timeout-offset)."""


class _QuietBadRequests(logging.Filter):
    """aiohttp logs a full traceback at ERROR for every malformed request, so any client could
    fill the log. Such requests already get a 400; keep one debug line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            log.debug("bad HTTP request refused", extra={"fields": {"error": first}})
            return False
        return True


_AIOHTTP_SERVER_LOG = logging.getLogger("aiohttp.server")
if not any(isinstance(f, _QuietBadRequests) for f in _AIOHTTP_SERVER_LOG.filters):
    _AIOHTTP_SERVER_LOG.addFilter(_QuietBadRequests())


class Served(Protocol):
    """What the web server asks of the exporter (`app.Exporter`; the tests' fakes)."""

    results: LatestResults
    send_side: SendSide | None
    history: HistoryStore | None
    config: Config
    resolver: Any
    """dnspython's resolver of the `dns:` section (untyped)."""
    ready: bool
    started_at: float

    @property
    def registry(self) -> ExporterRegistry | None:
        """The exporter's own series for /metrics (None: none)."""

    async def reload(self) -> str | None: ...

    async def probe_now(self, target: TargetConfig) -> list[ProbeResult]: ...


class WebApp:
    """Routes and guards; the exporter supplies the data through `exporter`."""

    def __init__(
        self,
        exporter: Served,
        web_config: WebConfig,
        *,
        max_requests: int = 16,
        probe_min_interval: float = 0.0,
        guard: ConnectionGuard | None = None,
        on_probing: OnProbing = same_loop,
    ) -> None:
        self.exporter = exporter
        self.on_probing = on_probing
        """Runs a coroutine on the probing loop (the scheduler's, the resolver's)."""
        self.web_config = web_config
        """Replaced on reload: users and headers apply from the next request on."""
        self.guard = guard
        self.scrape = Scrape()
        self.status = StatusPage()
        self._attributions = attribution.Attribution()
        self.auth = AuthGate()
        self._requests = asyncio.Semaphore(max_requests)
        self._probes = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._probe_tasks: set[asyncio.Task[Any]] = set()
        self.probe_limiter: ProbeLimiter[tuple[list[ProbeResult], float]] = ProbeLimiter(
            probe_min_interval
        )

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY,
            middlewares=[self._guard],
            handler_args={"max_field_size": 8190},
        )
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/probe", self.probe)
        app.router.add_get("/-/healthy", self.healthy)
        app.router.add_get("/-/ready", self.ready)
        app.router.add_post("/-/reload", self.reload)
        app.router.add_put("/-/reload", self.reload)
        app.router.add_get("/", self.status_page)
        app.router.add_get(links.DETAIL_PATH, self.detail)
        app.router.add_get(links.SENDER_PATH, self.sender_detail)
        # aiohttp before 3.13 declares its signals for aiosignal 1.3's generic; with 1.4 a
        # coroutine function does not type-check there (it runs alike on every version).
        app.on_shutdown.append(self._cancel_probes)  # type: ignore[arg-type,unused-ignore]
        return app

    async def _cancel_probes(self, _app: web.Application) -> None:
        # A /probe may wait out a silent server's whole timeout; shutdown must not wait for it
        # (aiohttp would, up to its shutdown timeout, twice), so cancel it up front.
        for task in list(self._probe_tasks):
            task.cancel()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        web_config = self.web_config  # one request sees one web config, even across a reload
        response = await self._guarded(request, handler, web_config)
        for name, value in web_config.headers.items():
            response.headers[name] = value
        return response

    async def _guarded(
        self, request: web.Request, handler: Handler, web_config: WebConfig
    ) -> web.StreamResponse:
        if request.body_exists and (
            request.content_length is None or request.content_length > MAX_BODY
        ):
            # No handler reads a body; refuse large or unsized (chunked) ones outright.
            return web.Response(
                status=413, text="request body too large\n", headers={"Connection": "close"}
            )
        if web_config.auth_required:
            # Before the request cap: a flood of wrong passwords is limited by the auth gate
            # (per client, and bcrypt's own slots) and never takes an answered scrape's place.
            header = request.headers.get("Authorization", "")
            verdict = await self.auth.check(web_config, header, request.remote)
            if verdict is Verdict.THROTTLED:
                return web.Response(
                    status=429,
                    text="too many failed authentication attempts\n",
                    headers={"Retry-After": "2"},
                )
            if verdict is not Verdict.OK:
                return web.Response(
                    status=401,
                    text="Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="tlsprobe"'},
                )
        if self._requests.locked():
            return web.Response(status=503, text="too many concurrent requests\n")
        async with self._requests:
            return await handler(request)

    def samples(self) -> list[Callable[[], Iterable[Sample]]]:
        """The web side's own numbers (connection guard, auth gate, probe limiter), for the
        exporter's registry; read on this thread, where they are counted."""
        parts: list[Callable[[], Iterable[Sample]]] = [
            self.auth.samples,
            self.probe_limiter.samples,
        ]
        return parts if self.guard is None else [self.guard.samples, *parts]

    # --- handlers --------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        # Snapshots here, the formatting and compression where scrape.py says.
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        states, senders, found = self._published()
        body, gzipped = await self.scrape.body(
            states,
            self.exporter.registry,
            [
                *send_side_samples(self.exporter.send_side, senders),
                *attribution.samples(found),
                *maintenance_samples(self._maintenance()),
            ],
            gzip_ok=_takes_gzip(request),
            openmetrics=openmetrics,
        )
        return _exposition(
            body,
            collector.OPENMETRICS_CONTENT_TYPE if openmetrics else collector.TEXT_CONTENT_TYPE,
            gzipped=gzipped,
        )

    async def healthy(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Healthy\n")

    async def ready(self, request: web.Request) -> web.StreamResponse:
        if not self.exporter.ready:
            return web.Response(status=503, text="Not ready\n")
        return web.Response(text="Ready\n")

    async def reload(self, request: web.Request) -> web.StreamResponse:
        error = await self.on_probing(self.exporter.reload())
        if error:
            return web.Response(status=500, text=f"failed to reload config: {error}\n")
        return web.Response(text="OK\n")

    async def probe(self, request: web.Request) -> web.StreamResponse:
        for param in ("target", "tenant"):  # `module` is judged with the target
            if len(request.query.getall(param, [])) > 1:
                return web.Response(status=400, text=f"{param} given more than once\n")
        name = request.query.get("target", "")
        tenant = request.query.get("tenant")
        debug = request.query.get("debug", "").lower() in ("1", "true", "yes")
        if not name or len(name) > 300:
            return web.Response(status=400, text="target parameter is required\n")
        target = self._configured(name, tenant)
        if isinstance(target, str):
            return web.Response(status=400, text=target + "\n")
        if target is None:
            try:
                target = await self.on_probing(
                    check_adhoc(name, self.exporter.config, self.exporter.resolver)
                )
            except AllowlistError as exc:
                return web.Response(status=403, text=f"forbidden: {exc}\n")
        refused = module_refusal(request.query.getall("module", []), target)
        if refused:
            return web.Response(status=400, text=refused + "\n")
        try:
            target = within_scrape_timeout(target, request.headers.get(SCRAPE_TIMEOUT_HEADER))
        except ValueError as exc:
            return web.Response(status=400, text=f"{SCRAPE_TIMEOUT_HEADER}: {exc}\n")
        task = asyncio.current_task()
        assert task is not None
        self._probe_tasks.add(task)
        try:
            key = (target.tenant, target.name)
            results, elapsed = await self.probe_limiter.run(key, lambda: self._probe_now(target))
        except _ProbesBusy:
            return web.Response(status=429, text="too many /probe requests in flight\n")
        finally:
            self._probe_tasks.discard(task)
        if debug:
            return web.Response(text=_debug_text(target, results, elapsed))
        self._attribution()  # a configured target's certificate another tenant shares
        states = [self._attributions.mark(state_for(target, r)) for r in results]
        body, content_type, gzipped = probe_body(
            states,
            openmetrics=wants_openmetrics(request.headers.get("Accept", "")),
            gzip_ok=_takes_gzip(request),
        )
        return _exposition(body, content_type, gzipped=gzipped)

    async def _probe_now(self, target: TargetConfig) -> tuple[list[ProbeResult], float]:
        if self._probes.locked():
            raise _ProbesBusy
        async with self._probes:
            started = time.perf_counter()
            results = await self.on_probing(self.exporter.probe_now(target))
            return results, time.perf_counter() - started

    def _configured(self, name: str, tenant: str | None) -> TargetConfig | str | None:
        found = [
            t
            for t in self.exporter.config.targets
            if t.name == name and (tenant is None or t.tenant == tenant)
        ]
        if len(found) > 1:
            tenants = ", ".join(sorted(t.tenant for t in found))
            return f"target {name!r} exists in several tenants ({tenants}): add &tenant="
        return found[0] if found else None

    async def status_page(self, request: web.Request) -> web.StreamResponse:
        side = self.exporter.send_side
        view = View.parse(request.query)
        now = time.time()

        published = functools.cache(self._published)  # one snapshot per request

        def snapshot() -> list[EndpointState]:
            return published()[0]

        def all_senders() -> list[SenderState]:
            return published()[1]

        def sections() -> list[Section]:  # below the servers' table: the send side's own
            senders = [s for s in all_senders() if view.tenant in (None, s.sender.tenant)]
            below = [senders_section(senders, now, STATUS_COLOURS)] if side else []
            found = attribution.section(published()[2])
            if found:  # cross-tenant findings: critical in their own words, not counted
                below.append(Section(found, ()))
            return below

        body = self.status.render(
            snapshot,
            now,
            self.exporter.started_at,
            view=view,
            senders=all_senders,
            policies=lambda: {t.key: t.policy for t in self.exporter.config.targets},
            maintenance=self._maintenance_open,
            sections=sections,
        )
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    def _maintenance(self) -> dict[tuple[str, str], float | None]:
        """Per target with maintenance windows, the end of the one open now (or None): asked
        at each scrape, so windows open and close without a reload."""
        targets = self.exporter.config.targets
        return maintenance.status(((t.key, t.maintenance) for t in targets), time.time())

    def _maintenance_open(self) -> dict[tuple[str, str], float]:
        return {key: end for key, end in self._maintenance().items() if end is not None}

    def _published(
        self,
    ) -> tuple[list[EndpointState], list[SenderState], tuple[attribution.Finding, ...]]:
        """The endpoints' and senders' states as every surface shows them: those a
        cross-tenant finding names carry its critical `cross_tenant` check."""
        side = self.exporter.send_side
        found = self._attribution()
        results = self.exporter.results
        senders = side.snapshot() if side is not None else []
        if not found:
            return results.snapshot(), senders, found
        marks = self._attributions
        states = results.snapshot_marked(marks.endpoints, marks.mark)
        return states, [marks.mark(s) for s in senders], found

    def _attribution(self) -> tuple[attribution.Finding, ...]:
        """Cross-tenant findings over every tenant's targets and senders (MC1226222)."""
        side = self.exporter.send_side
        patterns = {t.name: t.certificate_domain for t in self.exporter.config.tenants}
        return self._attributions.current(
            self.exporter.results.snapshot(), side.snapshot() if side is not None else (), patterns
        )

    async def detail(self, request: web.Request) -> web.StreamResponse:
        wanted = tuple(request.query.get(name, "")[:300] for name in links.ENDPOINT_PARAMS)
        self._attribution()  # the findings of now, for `mark`
        state = next(
            (
                s
                for s in map(
                    self._attributions.mark,
                    self.exporter.results.for_target(wanted[0], wanted[1]),
                )
                if s.label_values == wanted
            ),
            None,
        )
        if state is None:
            return web.Response(status=404, text="no such endpoint (it may have left the zone)\n")
        page = await asyncio.to_thread(
            detail_page, state, self.exporter.history, self.exporter.started_at
        )
        return web.Response(text=page, content_type="text/html")

    async def sender_detail(self, request: web.Request) -> web.StreamResponse:
        tenant, name = (request.query.get(p, "")[:300] for p in links.SENDER_PARAMS)
        side = self.exporter.send_side
        self._attribution()  # the findings of now, for `mark`
        state = next(
            (
                self._attributions.mark(s)
                for s in (side.snapshot() if side else ())
                if s.sender.key == (tenant, name)
            ),
            None,
        )
        if side is None or state is None:
            return web.Response(status=404, text="no such sender (not configured now)\n")
        key = side.history_key(state.sender)
        page = await asyncio.to_thread(
            sender_page, state, self.exporter.history, key, self.exporter.started_at
        )
        return web.Response(text=page, content_type="text/html")


def _takes_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


def _exposition(body: bytes, content_type: str, *, gzipped: bool) -> web.Response:
    headers = {"Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


class _ProbesBusy(Exception):
    """Every /probe slot is taken: the request is refused (429), not queued."""


MODULES = {"tlsprobe": None, "smtp_starttls": Mode.STARTTLS, "smtps": Mode.IMPLICIT}
"""What `/probe?module=` accepts: blackbox_exporter's names for what tlsprobe does (the
target's configured mode decides how it is probed; a module must agree with it)."""


def module_refusal(modules: Sequence[str], target: TargetConfig) -> str:
    """Why `module=` cannot be honoured for `target` (the 400's text); empty when it can.
    The value is never echoed."""
    if not modules:
        return ""
    if len(modules) > 1:
        return "module given more than once"
    if modules[0] not in MODULES:
        return f"unknown module: /probe accepts {', '.join(MODULES)}"
    mode = MODULES[modules[0]]
    if mode is not None and mode is not target.mode:
        return (
            f"module {modules[0]} probes {mode} TLS, but target {target.name!r} is configured "
            f"for {target.mode} TLS: use module=tlsprobe or module="
            f"{next(m for m, v in MODULES.items() if v is target.mode)}"
        )
    return ""


def within_scrape_timeout(target: TargetConfig, header: str | None) -> TargetConfig:
    """`target` as a probe that ends before the scrape does: its timeout is at most the
    header's seconds minus a margin (half of them when that leaves less), as blackbox_exporter
    does, and it makes no retry (a retry would outlast the scrape). ValueError when the header
    is not a positive number."""
    if header is None:
        return target
    try:
        scrape = float(header)
    except ValueError:
        raise ValueError(f"not a number of seconds: {header[:20]!r}") from None
    if not (math.isfinite(scrape) and scrape > 0):
        raise ValueError("must be a positive number of seconds")
    deadline = scrape - SCRAPE_TIMEOUT_MARGIN if scrape > 2 * SCRAPE_TIMEOUT_MARGIN else scrape / 2
    return replace(target, timeout=min(target.timeout, deadline), retries=0)


def _debug_text(target: TargetConfig, results: Sequence[ProbeResult], elapsed: float) -> str:
    now = utcnow()
    parts = [f"Probe of target {target.name!r} (tenant {target.tenant!r}) took {elapsed:.3f} s\n"]
    for result in results:
        parts.append(report.human(result, now, policy=target.policy, timeout=target.timeout))
        parts.append("\nSMTP transcript\n")
        parts.extend(f"  {line}\n" for line in result.transcript)
        parts.append("\nResult (JSON)\n" + json.dumps(report.to_json(result), indent=2) + "\n\n")
    config = asdict(target)
    parts.append("Effective target configuration\n")
    parts.append(json.dumps(config, indent=2, default=str) + "\n")
    return "".join(parts)

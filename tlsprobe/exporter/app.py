"""The running exporter: configuration, history, scheduler and web server wired together.

Start-up fails fast and clearly (bad config, unusable state directory, port in use) with exit
code 2. Once running, nothing the endpoints do and no bad reload stops it: a reload that fails
keeps the old configuration in force and sets `tlsprobe_config_last_reload_successful` to 0.
SIGHUP reloads: everything, the `dns:` resolver included, applies from the next lookup on,
except the listening socket, the web limits and state_dir (a restart; the reload says so in the
log). SIGTERM and SIGINT cancel in-flight probes (within 2 s), close the history database
cleanly and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.resolver as dns_resolver
from aiohttp import web

from tlsprobe import __version__
from tlsprobe.exporter import eventloop, links
from tlsprobe.exporter.config import Config, ConfigError, TargetConfig, load_config
from tlsprobe.exporter.config.web import WebConfig, WebConfigError, load_web_config
from tlsprobe.exporter.dnspolicies import DnsPolicies, open_history
from tlsprobe.exporter.exposition.collector import ExporterRegistry, exporter_registry
from tlsprobe.exporter.exposition.table import Sample
from tlsprobe.exporter.history.store import HistoryStore, StateError, history_path
from tlsprobe.exporter.lastresults import (
    FLUSH_INTERVAL,
    RESULTS_FILENAME,
    Key,
    ResultStore,
    restore,
)
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.exporter.senders import SendSide
from tlsprobe.exporter.state import EndpointState
from tlsprobe.exporter.web.connections import (
    Budget,
    ConnectionGuard,
    GuardedSite,
    connection_budget,
)
from tlsprobe.exporter.web.server import WebApp
from tlsprobe.exporter.web.thread import WebThread
from tlsprobe.model import EndpointKey, ProbeResult
from tlsprobe.probe.dns import discover
from tlsprobe.probe.names import host_port

log = logging.getLogger("tlsprobe")

STOP_TIMEOUT = 1.0
"""Seconds a stop waits for in-flight scheduled probes, and for HTTP requests other than /probe
(those are cancelled at once), before cancelling them; both wait side by side."""


class StartupError(Exception):
    """The exporter cannot start; the message says why and what to fix."""


@dataclass
class Exporter:
    config: Config
    config_path: Path | None = None
    shard: tuple[int, int] | None = None
    results: LatestResults = field(default_factory=LatestResults)
    registry: ExporterRegistry = field(default_factory=exporter_registry)
    """The exporter's own series: process, platform, GC, and each part's numbers (`start`)."""
    reload_successful: bool = True
    reload_success_at: float = 0.0
    event_loop: eventloop.EventLoop = eventloop.EventLoop.ASYNCIO
    history: HistoryStore | None = None
    last_results: ResultStore | None = None
    started_at: float = field(default_factory=time.time)
    scheduler: Scheduler | None = None
    resolver: Any = None
    ready: bool = False
    web_config: WebConfig = field(default_factory=WebConfig)
    send_side: SendSide | None = None
    _runner: web.AppRunner | None = None
    _flusher: asyncio.Task[None] | None = None
    _webapp: WebApp | None = None
    _web_thread: WebThread | None = None
    _budget: Budget = field(default_factory=lambda: Budget(0, 0, 0, False))
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _reloads: set[asyncio.Task[str | None]] = field(default_factory=set)
    bound: list[tuple[str, int]] = field(default_factory=list)

    async def start(self) -> None:
        web_config = self.web_config = _web_config(self.config)
        self.resolver = _resolver(self.config)
        try:
            self.history = HistoryStore(history_path(self.config.state_dir))
            self.last_results = ResultStore(self.config.state_dir / RESULTS_FILENAME)
        except StateError as exc:
            if self.history is not None:
                self.history.close()
            raise StartupError(str(exc)) from exc
        restored, sender_rows = restore(self.last_results, self.config, self.results, self.history)
        if restored or sender_rows:
            fields = {"endpoints": restored, "senders": len(sender_rows)}
            log.info("last results restored", extra={"fields": fields})
        self.scheduler = Scheduler(
            self.config,
            results=self.results,
            history=self.history,
            resolver=self.resolver,
            on_publish=self._remember,
            on_forget=self._forget_results,
            dns_policies=DnsPolicies(
                self.config,
                history=open_history(self.config.state_dir),
            ),
        )
        self.reload_success_at = time.time()
        self.event_loop = eventloop.running_loop()
        settings = self.config.web
        self._budget = descriptor_budget(self.config)
        guard = _connection_guard(self.config, self._budget)
        web_thread = self._web_thread = WebThread()
        webapp = self._webapp = WebApp(
            self,
            web_config,
            max_requests=settings.max_concurrent_requests,
            probe_min_interval=settings.probe_min_interval,
            guard=guard,
            on_probing=web_thread.on_probing,
        )
        for part in (self.samples, self.scheduler.samples, *webapp.samples()):
            self.registry.add_part(part)
        if self.scheduler.dns_policies is not None:
            self.registry.add_part(self.scheduler.dns_policies.samples)
        self._runner = web.AppRunner(
            webapp.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_TIMEOUT,
            # aiohttp's default keeps an idle connection (or one that never sends a request)
            # for an hour; each holds a descriptor.
            keepalive_timeout=settings.idle_timeout,
        )
        try:
            self.bound = await web_thread.run(self._listen(guard, web_config))
        except OSError as exc:
            await self._stop_web()
            self.history.close()
            self.last_results.close()
            where = f"{self.config.web.listen_host or '*'}:{self.config.web.listen_port}"
            raise StartupError(f"web.listen {where}: {exc.strerror or exc}") from exc
        await self._start_send_side(sender_rows)
        self.scheduler.start()
        self._flusher = asyncio.create_task(self._flush_last_results(), name="last results")
        self.ready = True
        log.info(
            "tlsprobe started",
            extra={"fields": {"targets": len(self.config.targets), "listen": self.url}},
        )

    async def _listen(self, guard: ConnectionGuard, web_config: WebConfig) -> list[tuple[str, int]]:
        """On the web loop: the server up on its socket; returns the addresses bound."""
        assert self._runner is not None
        await self._runner.setup()
        settings = self.config.web
        site = GuardedSite(
            self._runner,
            settings.listen_host or None,
            settings.listen_port,
            guard,
            ssl_context=web_config.tls,
        )
        await site.start()
        return _bound_addresses(site)

    async def _start_send_side(self, restored: list[tuple[Key, ProbeResult]]) -> None:
        """The receiver, when configured (`receiver:`); off by default. `restored`: the senders'
        last verdicts from before the restart."""
        send = self.config.send
        if send is None:
            return
        assert self.scheduler is not None
        if self._budget.receiver_lowered:
            sessions = self._budget.receiver_sessions
            send = replace(send, receiver=replace(send.receiver, max_sessions=sessions))
        self.send_side = SendSide(
            send,
            history=self.history,
            trust_for=self.scheduler.trust_store,
            server_leaf=self.server_leaf,
            restored=restored,
            on_result=self._remember_sender,
            canaries=self.last_results.load_canaries() if self.last_results else None,
            on_canary=self.last_results.put_canary if self.last_results else None,
        )
        try:
            await self.send_side.start()
        except (OSError, ValueError) as exc:
            assert self._runner is not None and self.history is not None
            await self._stop_web()
            self.history.close()
            where = f"{send.receiver.listen_host}:{send.receiver.listen_port}"
            raise StartupError(f"receiver.listen {where}: {exc}") from exc

    def server_leaf(self, tenant: str, target: str) -> str | None:
        """The leaf the server probe of a target sees now (for `same_as_server`)."""
        for state in self.results.for_target(tenant, target):
            if state.result.leaf is not None:
                return state.result.leaf.sha256
        return None

    @property
    def url(self) -> str:
        host, port = self.bound[0] if self.bound else ("localhost", self.config.web.listen_port)
        host = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104
        scheme = "https" if self.web_config.tls else "http"
        return f"{scheme}://{host_port(host, port)}"

    def _remember(self, state: EndpointState) -> None:
        if self.last_results is not None:
            self.last_results.put(state.label_values, state.result)  # type: ignore[arg-type]

    def _forget_results(self, keys: list[EndpointKey]) -> None:
        if self.last_results is not None:
            self.last_results.forget((t, n, h, a, str(p)) for t, n, h, a, p in keys)

    def _remember_sender(self, key: Key, result: ProbeResult) -> None:
        if self.last_results is not None:
            self.last_results.put(key, result)

    async def _flush_last_results(self) -> None:
        store = self.last_results
        assert store is not None
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await asyncio.to_thread(store.flush)
            except Exception:
                # A bug here must not end persistence for the rest of the run.
                log.exception("writing the last results failed")

    @property
    def external_url(self) -> str:
        """Where users reach this exporter: web.external_url, else this host's name."""
        web = self.config.web
        port = self.bound[0][1] if self.bound else web.listen_port
        return web.external_url or links.default_external_url(port, tls=bool(self.web_config.tls))

    def samples(self) -> Iterator[Sample]:
        """The reload state and what the exporter is, read at scrape time from the web thread
        (the registry collects them)."""
        yield "tlsprobe_config_last_reload_successful", (), 1.0 if self.reload_successful else 0.0
        yield "tlsprobe_config_last_reload_success_timestamp_seconds", (), self.reload_success_at
        yield "tlsprobe_endpoints", (), float(len(self.results))
        python = ".".join(map(str, sys.version_info[:3]))
        yield "tlsprobe_build_info", (__version__, python, self.event_loop.value), 1.0
        if self.bound:
            yield "tlsprobe_external_url_info", (self.external_url,), 1.0

    async def reload(self) -> str | None:
        """Load the configuration file again; returns the error text, or None on success."""
        if self.config_path is None:
            return "no configuration file to reload (demo mode)"
        try:
            config = load_config(self.config_path)
            if self.shard:
                config = config.shard(*self.shard)
            web_config = _web_config(config)
            resolver = _resolver(config) if config.dns != self.config.dns else self.resolver
        except (ConfigError, StartupError) as exc:
            self.reload_successful = False
            log.error("config reload failed", extra={"fields": {"error": str(exc)}})
            return str(exc)
        except Exception as exc:  # a bug must not pass for a good reload
            # A reader bug: the old configuration stays, the failure shows in the metric and
            # in one log line without the exception text (it might quote the file).
            self.reload_successful = False
            log.error("config reload failed", extra={"fields": {"error": type(exc).__name__}})
            return f"cannot load the configuration ({type(exc).__name__})"
        if _restart_only(config) != _restart_only(self.config):
            # The allowlist and the web config's users and headers apply now; the socket, its
            # TLS, the HTTP limits and the open history database stay as started.
            log.warning(
                "web.listen, web.max_concurrent_requests, web.max_connections, the web timeouts,"
                " web.probe_min_interval and state_dir change only on restart",
                extra={"fields": {"file": str(self.config_path)}},
            )
        self._apply_web_config(web_config)
        self._apply_dns(config, resolver)
        self.config = config
        assert self.scheduler is not None
        self.scheduler.apply(config)
        if self.send_side is not None and config.send is not None:
            self.send_side.apply(config.send)
        self.reload_successful = True
        self.reload_success_at = time.time()
        log.info("config reloaded", extra={"fields": {"targets": len(config.targets)}})
        return None

    def _apply_dns(self, config: Config, resolver: Any) -> None:
        """A changed `dns:` section applies to the lookups that follow: discovery, the /probe
        allowlist and (through `Scheduler.apply`) the DANE and MTA-STS lookups. Lookups in flight
        finish with the resolver they started with."""
        if resolver is self.resolver:
            return
        self.resolver = resolver
        assert self.scheduler is not None
        self.scheduler.use_resolver(resolver)
        servers = ",".join(config.dns.nameservers) or "system"
        log.info("dns settings applied", extra={"fields": {"nameservers": servers}})

    def _apply_web_config(self, web_config: WebConfig) -> None:
        """Users and response headers apply from the next request on (a removed user is
        refused at once: the new config starts with no remembered passwords). TLS settings
        belong to the listening socket and change only on restart, which is logged loudly."""
        if (web_config.tls is None) != (self.web_config.tls is None) or (
            web_config.tls_source != self.web_config.tls_source
        ):
            log.warning(
                "web.config_file: tls_server_config changed; TLS settings change only on"
                " restart (users and headers are applied now)",
                extra={"fields": {"file": str(self.config.web.config_file)}},
            )
            web_config = web_config.with_tls(self.web_config.tls, self.web_config.tls_source)
        self.web_config = web_config
        if self._webapp is not None:
            self._webapp.web_config = web_config

    async def probe_now(self, target: TargetConfig) -> list[ProbeResult]:
        assert self.scheduler is not None
        if any(t.key == target.key for t in self.config.targets):
            states = await self.scheduler.run_cycle(target, one_deadline=True)
            return [s.result for s in states]
        return await self.scheduler.probe_unpublished(target, one_deadline=True)

    async def stop(self) -> None:
        self.ready = False
        # aiohttp's default waits up to 60 s for a request in flight; shutdown_timeout bounds
        # that, and the web app cancels /probe requests (they may wait on a silent server).
        stopping = []
        if self.scheduler is not None:
            stopping.append(self.scheduler.stop(timeout=STOP_TIMEOUT))
        stopping.append(self._stop_web())
        if self._flusher is not None:
            self._flusher.cancel()
        if self.send_side is not None:
            stopping.append(self.send_side.stop())
        await asyncio.gather(*stopping)
        if self.history is not None:
            self.history.close()
        if self.last_results is not None:
            self.last_results.close()
        log.info("tlsprobe stopped")

    async def _stop_web(self) -> None:
        if self._web_thread is None:
            return
        if self._runner is not None:
            await self._web_thread.run(self._runner.cleanup())
        await self._web_thread.stop()
        self._web_thread = None

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    def _reload_in_background(self) -> None:
        # The loop keeps only a weak reference to a task; hold it until it is done.
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def request_stop(self) -> None:
        self._stopping.set()


def _web_config(config: Config) -> WebConfig:
    path = config.web.config_file
    try:
        return load_web_config(path) if path else WebConfig()
    except WebConfigError as exc:
        raise StartupError(f"web.config_file: {exc}") from exc


def _resolver(config: Config) -> Any:
    """The discovery resolver of `config.dns`; the system's when no nameservers are given."""
    dns = config.dns
    try:
        return discover.make_resolver(dns.nameservers, port=dns.port, timeout=dns.timeout)
    except dns_resolver.NoResolverConfiguration as exc:
        raise StartupError(
            "dns.nameservers: none given and the system has no resolver configured"
            " (/etc/resolv.conf)"
        ) from exc


def descriptor_budget(config: Config) -> Budget:
    """How the open-file limit is shared: the web port's cap and the receiver's sessions."""
    sessions = config.send.receiver.max_sessions if config.send is not None else 0
    budget = connection_budget(config.web.max_connections, config.concurrency, sessions)
    if budget.receiver_lowered:
        log.warning(
            "receiver.max_sessions lowered to fit the open-file limit",
            extra={
                "fields": {
                    "configured": sessions,
                    "allowed": budget.receiver_sessions,
                    "nofile_limit": budget.descriptor_limit,
                }
            },
        )
    return budget


def _connection_guard(config: Config, budget: Budget) -> ConnectionGuard:
    if budget.lowered:
        log.warning(
            "web.max_connections lowered to fit the open-file limit",
            extra={
                "fields": {
                    "configured": config.web.max_connections,
                    "allowed": budget.connections,
                    "nofile_limit": budget.descriptor_limit,
                    "reserved_for_probes": budget.reserved,
                }
            },
        )
    return ConnectionGuard(budget.connections, config.web.header_timeout)


def _restart_only(config: Config) -> tuple[object, ...]:
    web = config.web
    return (
        web.listen_host,
        web.listen_port,
        web.max_concurrent_requests,
        web.max_connections,
        web.header_timeout,
        web.idle_timeout,
        web.probe_min_interval,
        config.state_dir,
    )


def _bound_addresses(site: web.BaseSite) -> list[tuple[str, int]]:
    server = site._server  # aiohttp keeps the asyncio server here; ports may be ephemeral
    sockets = getattr(server, "sockets", None) or []
    return [(s.getsockname()[0], s.getsockname()[1]) for s in sockets]


async def serve(config: Config, config_path: Path | None, shard: tuple[int, int] | None) -> int:
    exporter = Exporter(config, config_path, shard)
    try:
        await exporter.start()
    except StartupError as exc:
        print(f"tlsprobe serve: {exc}", file=sys.stderr)
        return 2
    print(f"tlsprobe serving {exporter.url}/metrics (status page {exporter.url}/)", flush=True)
    await exporter.run_until_signalled()
    return 0

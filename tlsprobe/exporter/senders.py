"""The send side inside `tlsprobe serve`: the receiver loop, sender verdicts and canaries.

`SendSide` runs the receiver (`probe.send.receiver`) when the configuration has a `receiver:`
section, matches every ended session to a configured sender by its peer address, judges the
client chain (`probe.send.sender.judge_session`, with `same_as_server` against the server probe of
the sender's `server_target`), records the leaf in the sender's one drift history (a change is
a leaf none of its addresses presents now: `presented`), and keeps the latest `SenderState`
per sender for `/metrics` and the status page. Sessions from unknown peers are
only counted (refused at RCPT by the receiver, never given a series of their own). Per sender
with a `canary:`, a task submits a canary every interval; `CanaryBook` pairs arrivals and
expires the missing. Everything runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tlsprobe.exporter.config.send import SenderConfig, SendSideConfig
from tlsprobe.exporter.history.store import Drift, HistoryStore, StateError
from tlsprobe.exporter.presented import WINDOW, Presented
from tlsprobe.exporter.state import (
    SENDER_TARGET,
    CanaryState,
    ResultKey,
    SenderState,
    result_key,
)
from tlsprobe.model import ProbeResult
from tlsprobe.probe.send import canary, receiver
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.smtp import server as smtpserver
from tlsprobe.probe.x509.evaluate import TrustStore, TrustStoreError

log = logging.getLogger("tlsprobe.senders")

CANARY_HISTORY = 50
"""Canary outcomes kept per sender for its detail view."""
_EXPIRY_TICK = 1.0
"""Seconds between checks for canaries past their deadline."""

TrustFor = Callable[[Path | None], TrustStore]
SenderKey = tuple[str, str]
"""(tenant, sender name)."""
ServerLeaf = Callable[[str, str], str | None]
"""(tenant, target) -> SHA-256 of the leaf the server probe of that target sees now."""
IssuerBound = Callable[[str, str], bool]
"""(tenant, target) -> whether a connector names that server's certificate by its issuer."""


class SendSide:
    def __init__(
        self,
        config: SendSideConfig,
        *,
        history: HistoryStore | None,
        trust_for: TrustFor,
        server_leaf: ServerLeaf,
        restored: Iterable[tuple[ResultKey, ProbeResult]] = (),
        on_result: Callable[[ResultKey, ProbeResult], None] | None = None,
        canaries: Mapping[SenderKey, CanaryState] | None = None,
        on_canary: Callable[[SenderKey, CanaryState], None] | None = None,
        issuer_bound: IssuerBound | None = None,
    ) -> None:
        """`restored`: the last verdicts kept from before a restart (served until the sender's
        next session); `on_result` is told every new verdict, to keep it for the next start.
        `canaries` and `on_canary` do the same for canary outcomes (served until the first
        canary after the start has its outcome). `issuer_bound` says it of the sender's
        `server_target` (Exchange: a sibling intermediate is a risky change); without a
        server_target, or without it, the sender is taken not to be Exchange."""
        self.config = config
        self._issuer_bound = issuer_bound
        self._history = history
        self._trust_for = trust_for
        self._server_leaf = server_leaf
        self._on_result = on_result
        self._states: dict[tuple[str, str], SenderState] = {
            s.key: SenderState(s) for s in config.senders
        }
        self._presented: dict[SenderKey, Presented] = {}
        for key, result in restored:
            self._restore(key, result)
        for sender_key, outcome in (canaries or {}).items():
            state = self._states.get(sender_key)
            if state is not None and state.sender.canary is not None:
                self._states[sender_key] = replace(state, canary=outcome)
        self._on_canary = on_canary
        self._book = canary.CanaryBook()
        self._tokens: dict[str, tuple[str, str]] = {}
        """Canary token in flight -> sender key; each leaves when its outcome is recorded."""
        self._receiver: receiver.Receiver | None = None
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._expiry: asyncio.Task[None] | None = None
        self.unknown_peer_sessions = 0
        self.bound: tuple[str, int] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def _restore(self, key: ResultKey, result: ProbeResult) -> None:
        state = self._states.get((key[0], key[2]))
        if state is None:
            return  # no longer configured
        drift = None
        if self._history is not None and result.leaf is not None:
            drift = self._history.drift(self.history_key(state.sender))
        self._states[state.sender.key] = replace(state, result=result, drift=drift)

    async def start(self) -> None:
        settings = self.config.receiver
        context = receiver.tls_context(
            str(settings.tls_cert_file) if settings.tls_cert_file else None,
            str(settings.tls_key_file) if settings.tls_key_file else None,
            hostname=settings.hostname,
        )
        limits = receiver.ReceiverLimits(
            session_timeout=settings.session_timeout,
            max_sessions=settings.max_sessions,
            max_sessions_per_peer=settings.max_sessions_per_peer,
            per_peer_per_minute=settings.per_peer_per_minute,
            idle_eviction=settings.idle_eviction,
            smtp=smtpserver.Limits(max_message=settings.max_message_bytes),
        )
        self._receiver = receiver.Receiver(
            context=context,
            hostname=settings.hostname,
            accept_recipient=self._accepts,
            on_session=self.on_session,
            on_message=self.on_message,
            limits=limits,
            known_peer=lambda peer: self.config.sender_for(peer) is not None,
        )
        self.bound = await self._receiver.start(settings.listen_host, settings.listen_port)
        self._start_canaries()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_loop())

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *([self._expiry] if self._expiry else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._receiver is not None:
            await self._receiver.close()

    def apply(self, config: SendSideConfig) -> None:
        """A reload: new senders and canaries now; the listener itself only on restart."""
        self.config = config
        self._states = {
            s.key: replace(self._states[s.key], sender=s)
            if s.key in self._states
            else SenderState(s)
            for s in config.senders
        }
        self._presented = {k: v for k, v in self._presented.items() if k in self._states}
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        self._start_canaries()

    # --- sessions ------------------------------------------------------------------------

    def _accepts(self, peer: str, recipient: str) -> bool:
        sender = self.config.sender_for(peer)
        return sender is not None and self.config.accepts(sender, recipient)

    def on_session(self, session: Session) -> None:
        sender = self.config.sender_for(session.peer)
        if sender is None:
            self.unknown_peer_sessions += 1
            return
        server = (
            self._server_leaf(sender.tenant, sender.server_target) if sender.server_target else None
        )
        try:
            trust = self._trust_for(sender.ca_file)
        except TrustStoreError as exc:  # validated at load; the file may have gone since
            log.error("trust store unusable", extra={"fields": {"error": str(exc)}})
            return
        result = judge_session(
            session,
            sender.policy,
            trust,
            now=datetime.now(UTC),
            name=sender.name,
            server_sha256=server,
        )
        state = self._states.get(sender.key) or SenderState(sender)
        observed = self._observe(sender, result)
        drift = state.drift
        if observed is not None:
            drift, changed = observed
            if changed:
                self._log_change(sender, drift)
        addresses = tuple(self.presented(*sender.key).by_address(result.started_at).items())
        self._states[sender.key] = replace(
            state, result=result, drift=drift, sessions=state.sessions + 1, addresses=addresses
        )
        if self._on_result is not None:
            self._on_result(result_key(sender), result)
        log.info(
            "sender session",
            extra={"fields": {"sender": sender.name, "status": result.status.label}},
        )

    def _log_change(self, sender: SenderConfig, drift: Drift) -> None:
        change = drift.change
        fields = {
            "sender": sender.name,
            "fingerprint": drift.fingerprint,
            "change": change.change.value if change else "unknown",
            "reasons": ",".join(change.reasons) if change else "",
        }
        log.info("sender certificate changed", extra={"fields": fields})

    def _observe(self, sender: SenderConfig, result: ProbeResult) -> tuple[Drift, bool] | None:
        """Record the leaf in the sender's history: a change when no address of the sender
        presents it now, else a sighting that moves nothing (`replaces=False`). The drift,
        and whether this session changed it; None without a leaf or a history."""
        leaf = result.leaf
        if leaf is None:
            return None
        presented = self.presented(*sender.key)
        at = result.started_at
        known = presented.presents(leaf.sha256, at)
        presented.record(result.address or "", leaf.sha256, at)
        if self._history is None:
            return None
        key = self.history_key(sender)
        before = self._history.drift(key)
        server, bound = sender.server_target, self._issuer_bound
        binds = bool(server and bound and bound(sender.tenant, server))
        try:
            if known:
                checks = result.checks or None
                return self._history.observe(key, leaf, at, checks, replaces=False), False
            drift = self._history.observe(key, leaf, at, result.checks or None, issuer_bound=binds)
        except StateError as exc:
            log.error("history write failed", extra={"fields": {"error": str(exc)}})
            return None
        return drift, before is not None and drift.changes_total > before.changes_total

    def presented(self, tenant: str, name: str) -> Presented:
        """What the sender's addresses present now; seeded from the history at first use."""
        found = self._presented.get((tenant, name))
        if found is None:
            found = self._presented[tenant, name] = Presented(self._recall(tenant, name))
        return found

    def _recall(self, tenant: str, name: str) -> list[tuple[str, float]]:
        state = self._states.get((tenant, name))
        if self._history is None or state is None:
            return []
        key = self.history_key(state.sender)
        try:
            entries = self._history.timeline(name, tenant=tenant, target=key[1])
        except StateError:
            return []
        now = time.time()
        return [
            (e.fingerprint, e.last_seen)
            for e in sorted(entries, key=lambda e: e.last_seen)
            if e.key == key and now - e.last_seen < WINDOW
        ]

    def history_key(self, sender: SenderConfig) -> tuple[str, str, str, str, int]:
        """The sender's row in the drift history."""
        return history_key(sender, self.config.receiver.listen_port)

    def on_message(self, peer: str, message: smtpserver.Message) -> None:
        outcome = self._book.arrived(message.token, message.received_at)
        if outcome is not None:
            self._canary_outcome(outcome)

    # --- canaries ------------------------------------------------------------------------

    def _start_canaries(self) -> None:
        loop = asyncio.get_running_loop()
        for sender in self.config.senders:
            if sender.canary is not None:
                self._tasks[sender.key] = loop.create_task(self._canary_loop(sender))

    async def _canary_loop(self, sender: SenderConfig) -> None:
        assert sender.canary is not None
        settings = sender.canary
        while True:
            token = canary.new_token()
            failure = await canary.submit(settings.relay, token, timeout=settings.deadline)
            if failure is None:
                self._book.submitted(sender.name, token, deadline=settings.deadline)
                self._tokens[token] = sender.key
            else:
                self._record_canary(sender.key, replace(failure, sender=sender.name))
            await asyncio.sleep(settings.interval)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_TICK)
            for outcome in self._book.expired():
                self._canary_outcome(outcome)

    def _canary_outcome(self, outcome: canary.Outcome) -> None:
        key = self._tokens.pop(outcome.token, None)
        if key is not None:
            self._record_canary(key, outcome)

    def _record_canary(self, key: tuple[str, str], outcome: canary.Outcome) -> None:
        state = self._states.get(key)
        if state is None:
            return  # the sender was removed by a reload
        now = time.time()
        previous = state.canary
        last_success = previous.last_success_at if previous else 0.0
        if outcome.reason is None:
            current = CanaryState(True, now, outcome.round_trip, last_success_at=now)
        else:
            current = CanaryState(
                False, now, None, outcome.reason, outcome.message, last_success_at=last_success
            )
            failures = dict(state.canary_failures)
            failures[outcome.reason] = failures.get(outcome.reason, 0) + 1
            state = replace(state, canary_failures=tuple(sorted(failures.items())))
            log.warning(
                "canary failed",
                extra={"fields": {"sender": key[1], "reason": outcome.reason.value}},
            )
        canaries = (*state.canaries[-(CANARY_HISTORY - 1) :], current)
        self._states[key] = replace(state, canary=current, canaries=canaries)
        if self._on_canary is not None:
            self._on_canary(key, current)

    # --- views ---------------------------------------------------------------------------

    def snapshot(self) -> list[SenderState]:
        return list(self._states.values())

    @property
    def refused_sessions(self) -> int:
        return self._receiver.refused_sessions if self._receiver else 0

    @property
    def evicted_sessions(self) -> int:
        return self._receiver.evicted_sessions if self._receiver else 0

    @property
    def max_sessions(self) -> int:
        """The session cap in force (`receiver.max_sessions`, or lower to fit the open-file
        limit)."""
        return self._receiver.limits.max_sessions if self._receiver else 0

    @property
    def active_sessions(self) -> int:
        return self._receiver.active_sessions if self._receiver else 0


def history_key(sender: SenderConfig, port: int) -> tuple[str, str, str, str, int]:
    """Sender certificates share the drift history with servers; `tlsprobe history NAME`
    finds them by the sender's name (the host column), the target column says `sender:`.
    One row per sender, whatever address it sends from (no address: `?:PORT` in the CLI)."""
    return (sender.tenant, f"{SENDER_TARGET}{sender.name}", sender.name, "", port)

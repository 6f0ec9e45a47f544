"""The send side's samples: one function from a `SenderState` to its series (the families are
in `metrics.SEND_SIDE_METRICS`). Label values come from the configuration (tenant, sender) or
closed enums (check names, chain and canary reasons, TLS version); nothing free-form."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tlsprobe.exporter.exposition.metrics import Sample, clip
from tlsprobe.exporter.senders import SendSide
from tlsprobe.exporter.state import SenderState


def sender_samples(state: SenderState) -> Iterator[Sample]:
    base = (state.sender.tenant, state.sender.name)
    yield "tlsprobe_sender_sessions", base, float(state.sessions)
    if state.sender.session_expected_within is not None:
        expected = state.sender.session_expected_within
        yield "tlsprobe_sender_session_expected_within_seconds", base, expected
    result = state.result
    if result is not None:
        yield "tlsprobe_sender_status", base, float(result.status)
        yield "tlsprobe_sender_o365_ready", base, 1.0 if result.o365_ready else 0.0
        yield "tlsprobe_sender_last_session_timestamp_seconds", base, result.started_at
        if result.error is not None:
            yield "tlsprobe_sender_session_error_info", (*base, result.error.kind.value), 1.0
        for check in result.checks:
            yield "tlsprobe_sender_check_status", (*base, check.name), float(check.status)
            if check.name == "chain_trusted" and check.reason:
                yield "tlsprobe_sender_chain_untrusted_info", (*base, check.reason), 1.0
        if result.tls is not None:
            tls = (*base, result.tls.version, result.tls.cipher)
            yield "tlsprobe_sender_tls_info", tls, 1.0
        leaf = result.leaf
        if leaf is not None:
            not_after = leaf.not_after.timestamp()
            yield "tlsprobe_sender_cert_not_after_timestamp_seconds", base, not_after
            names = ",".join(leaf.dns_names)
            info = (*base, leaf.sha256, *map(clip, (leaf.subject, leaf.issuer, leaf.serial, names)))
            yield "tlsprobe_sender_cert_info", info, 1.0
    yield from _drift_samples(state, base)
    yield from _canary_samples(state, base)


def _drift_samples(state: SenderState, base: tuple[str, str]) -> Iterator[Sample]:
    drift = state.drift
    if drift is None:
        return
    yield "tlsprobe_sender_cert_changes", base, float(drift.changes_total)
    yield "tlsprobe_sender_cert_last_change_timestamp_seconds", base, drift.since
    previous = drift.previous
    if previous is not None:
        names = ",".join(previous.names)
        old = (*base, previous.fingerprint, *map(clip, (previous.subject, previous.issuer, names)))
        yield "tlsprobe_sender_cert_previous_info", old, 1.0
        not_after = previous.not_after
        yield "tlsprobe_sender_cert_previous_not_after_timestamp_seconds", base, not_after
    change = drift.change
    if change is not None and drift.changes_total:
        reasons = ",".join(change.reasons)
        target = state.sender.server_target or ""
        info = (*base, target, drift.fingerprint, change.change.value, reasons, clip(change.text))
        yield "tlsprobe_sender_cert_change_info", info, 1.0


def _canary_samples(state: SenderState, base: tuple[str, str]) -> Iterator[Sample]:
    if state.sender.canary is None:
        return
    for reason, count in state.canary_failures:
        yield "tlsprobe_canary_failures", (*base, reason.value), float(count)
    current = state.canary
    if current is None:
        return
    yield "tlsprobe_canary_success", base, 1.0 if current.success else 0.0
    if current.last_success_at:
        yield "tlsprobe_canary_last_success_timestamp_seconds", base, current.last_success_at
    if current.round_trip is not None:
        yield "tlsprobe_canary_round_trip_seconds", base, current.round_trip
    if current.reason is not None:
        yield "tlsprobe_canary_failure_info", (*base, current.reason.value), 1.0


def send_side_samples(
    side: SendSide | None, senders: Iterable[SenderState] | None = None
) -> Iterable[Sample]:
    """Every send-side sample; none when the receiver is off. `senders`: the states to show
    (the side's snapshot with cross-tenant findings marked); None: the side's own."""
    if side is None:
        return
    for state in side.snapshot() if senders is None else senders:
        yield from sender_samples(state)
    yield from receiver_samples(
        unknown_peers=side.unknown_peer_sessions,
        refused=side.refused_sessions,
        evicted=side.evicted_sessions,
        active=side.active_sessions,
        limit=side.max_sessions,
        senders=len(side.config.senders),
    )


def receiver_samples(
    *, unknown_peers: int, refused: int, evicted: int, active: int, limit: int, senders: int
) -> Iterator[Sample]:
    yield "tlsprobe_receiver_unknown_peer_sessions", (), float(unknown_peers)
    yield "tlsprobe_receiver_refused_sessions", (), float(refused)
    yield "tlsprobe_receiver_evicted_sessions", (), float(evicted)
    yield "tlsprobe_receiver_active_sessions", (), float(active)
    yield "tlsprobe_receiver_session_limit", (), float(limit)
    yield "tlsprobe_senders_configured", (), float(senders)

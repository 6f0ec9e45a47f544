"""One endpoint to one `ProbeResult`: transport, then evaluation, with phase timings.

`probe_endpoint` is the single probe function every caller uses (the CLI, the scheduler, the
exporter's `/probe`, the benchmarks). It never raises for anything the endpoint does: network
trouble and protocol errors come back as data with a `Reason`, and every chain a server sends
ends in a verdict: what cannot be read strictly is a `certificate_format` finding, and the facts
(fingerprint of the raw DER included) are reported regardless. Retries live in the scheduler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tlsprobe.model import (
    Capture,
    CertFacts,
    Check,
    CheckName,
    Endpoint,
    Mode,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
)
from tlsprobe.probe.transport import starttls as transport
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import (
    SYMPTOMS,
    TrustStore,
    evaluate_or_unjudged,
    judged_part,
    verdict_cached,
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def probe_endpoint(
    endpoint: Endpoint,
    policy: Policy,
    trust: TrustStore,
    *,
    timeout: float = 30.0,
    now: Clock | None = None,
) -> ProbeResult:
    """Probe one endpoint once and judge what it served, within the same deadline.

    Judging a chain seen for the first time parses and verifies certificates: that runs in a
    worker thread, so the event loop keeps answering scrapes meanwhile, and whatever the
    transport left of `timeout` (at least `JUDGE_MINIMUM`) bounds it. A chain judged before
    is answered from the caches, on the loop: no thread hop, nothing to wait for.
    """
    started_at = time.time()
    deadline = time.monotonic() + timeout
    captured = await transport.capture(endpoint, timeout=timeout)
    when = (now or utcnow)()
    if _cheap(endpoint, captured, policy, trust, when):
        return judge(endpoint, captured, policy, trust, started_at=started_at, now=when)
    work = asyncio.to_thread(
        judge, endpoint, captured, policy, trust, started_at=started_at, now=when
    )
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when the
        # work finishes in the same loop turn as the probe is cancelled, so a probe cancelled
        # by a reload that removed its target still published (a series of a removed target
        # left in /metrics for good).
        async with asyncio.timeout(max(deadline - time.monotonic(), JUDGE_MINIMUM)):
            return await work
    except TimeoutError:
        # The thread finishes on its own (the work is bounded) and fills the caches, so the
        # next probe of this chain is quick; this one reports the deadline it missed.
        error = ProbeError(Reason.TIMEOUT, f"judging the chain exceeded the {timeout:g} s deadline")
        return _failed(endpoint, captured, error, started_at)


JUDGE_MINIMUM = 1.0
"""Seconds judging a new chain may take when the transport used up the whole deadline: a
bounded chain takes milliseconds, but a loaded machine queues worker threads."""


def _cheap(
    endpoint: Endpoint, captured: Capture, policy: Policy, trust: TrustStore, now: datetime
) -> bool:
    if captured.error is not None or not captured.chain_der or captured.tls is None:
        return True
    return verdict_cached(
        captured.chain_der,
        host=endpoint.host,
        tls=captured.tls,
        policy=policy,
        trust=trust,
        now=now,
    )


def judge(
    endpoint: Endpoint,
    captured: Capture,
    policy: Policy,
    trust: TrustStore,
    *,
    started_at: float,
    now: datetime,
) -> ProbeResult:
    """Turn a capture into a result. Pure apart from certificate parsing (cached by DER)."""
    chain = tuple(certs.facts_from_der(der) for der in judged_part(captured.chain_der))
    error = captured.error
    if error is not None or not chain or captured.tls is None:
        error = error or ProbeError(Reason.TLS_HANDSHAKE, "no certificate captured")
        # A chain sent before the server failed the handshake is still reported.
        return _failed(endpoint, captured, error, started_at, chain)
    verdict = evaluate_or_unjudged(
        captured.chain_der,
        host=endpoint.host,
        tls=captured.tls,
        policy=policy,
        trust=trust,
        now=now,
        name=endpoint.name,
    )
    checks = verdict.checks
    if endpoint.mode is Mode.IMPLICIT:
        checks = (
            Check(CheckName.STARTTLS, Status.OK, "implicit TLS: no STARTTLS needed"),
            *checks[1:],
        )
    return ProbeResult.judged(
        endpoint,
        captured,
        started_at=started_at,
        chain=chain,
        checks=checks,
        connector=policy.connector,
    )


_STARTTLS_FAILURES = frozenset({Reason.NO_STARTTLS, Reason.STARTTLS_REJECTED})


def _failed(
    endpoint: Endpoint,
    captured: Capture,
    error: ProbeError,
    started_at: float,
    chain: tuple[CertFacts, ...] = (),
) -> ProbeResult:
    checks: tuple[Check, ...] = ()
    if error.kind in _STARTTLS_FAILURES:
        # The SMTP client's message already says what happened ("server does not offer
        # STARTTLS (EHLO: ...)", "STARTTLS refused: 454 ..."); prefixing it said it twice.
        symptom = SYMPTOMS[CheckName.STARTTLS]
        checks = (Check(CheckName.STARTTLS, Status.CRITICAL, error.message, symptom),)
    return ProbeResult.failed(
        endpoint,
        error,
        started_at=started_at,
        address=captured.address,
        tls=captured.tls,
        chain=chain,
        checks=checks,
        phases=captured.phases,
        transcript=captured.transcript,
    )

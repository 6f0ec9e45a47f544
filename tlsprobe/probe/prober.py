"""One endpoint to one `ProbeResult`: transport, then evaluation, with phase timings.

`probe_endpoint` is the single probe function every caller uses (the CLI, the scheduler, the
exporter's `/probe`, the benchmarks). It never raises for anything the endpoint does: network
trouble and protocol errors come back as data with a `Reason`, and a chain that cannot be parsed
is a `protocol` failure. Retries live in the scheduler, not here.
"""

from __future__ import annotations

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
    overall_status,
)
from tlsprobe.probe import certs, transport
from tlsprobe.probe.evaluate import SYMPTOMS, TrustStore, evaluate_der

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
    """Probe one endpoint once and judge what it served."""
    started_at = time.time()
    captured = await transport.capture(endpoint, timeout=timeout)
    return judge(endpoint, captured, policy, trust, started_at=started_at, now=(now or utcnow)())


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
    chain: tuple[CertFacts, ...] = ()
    error = captured.error
    try:
        chain = tuple(certs.facts_from_der(der) for der in captured.chain_der)
    except certs.CertificateParseError as exc:
        error = ProbeError(Reason.PROTOCOL, f"server sent an unparseable certificate: {exc}")
    if error is not None or not chain or captured.tls is None:
        error = error or ProbeError(Reason.TLS_HANDSHAKE, "no certificate captured")
        return _failed(endpoint, captured, error, started_at)
    verdict = evaluate_der(
        captured.chain_der,
        host=endpoint.host,
        tls=captured.tls,
        policy=policy,
        trust=trust,
        now=now,
    )
    checks = verdict.checks
    if endpoint.mode is Mode.IMPLICIT:
        checks = (
            Check(CheckName.STARTTLS, Status.OK, "implicit TLS: no STARTTLS needed"),
            *checks[1:],
        )
    return ProbeResult(
        endpoint=endpoint,
        address=captured.address,
        started_at=started_at,
        status=overall_status(checks),
        error=None,
        tls=captured.tls,
        chain=chain,
        checks=checks,
        phases=captured.phases,
        transcript=captured.transcript,
    )


_STARTTLS_FAILURES = {
    Reason.NO_STARTTLS: "server does not offer STARTTLS",
    Reason.STARTTLS_REJECTED: "server rejected STARTTLS",
}


def _failed(
    endpoint: Endpoint, captured: Capture, error: ProbeError, started_at: float
) -> ProbeResult:
    checks: tuple[Check, ...] = ()
    if error.kind in _STARTTLS_FAILURES:
        message = f"{_STARTTLS_FAILURES[error.kind]}: {error.message}"
        checks = (
            Check(CheckName.STARTTLS, Status.CRITICAL, message, SYMPTOMS[CheckName.STARTTLS]),
        )
    return ProbeResult(
        endpoint=endpoint,
        address=captured.address,
        started_at=started_at,
        status=error.kind.status,
        error=error,
        tls=captured.tls,
        chain=(),
        checks=checks,
        phases=captured.phases,
        transcript=captured.transcript,
    )

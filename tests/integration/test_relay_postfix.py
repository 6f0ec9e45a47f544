"""The send side against a REAL Postfix as the relay (a second instance, .ci/postfix-relay.sh).

tlsprobe submits a canary to the relay on 127.0.0.1:10026; the relay's transport map routes each
case's canary domain to the receiver on 127.0.0.1:10027 with smtp_tls_security_level = encrypt,
through an smtp transport presenting that case's client certificate (smtp_tls_chain_files). The
receiver captures Postfix's client chain and the verdict is checked per case. The relay's own
server certificate (smtpd) is probed too, for `same_as_server`. Without TLSPROBE_TEST_RELAY these
tests skip, unless TLSPROBE_REQUIRE_POSTFIX=1 says this run must have them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.exporter import command
from tests.support.smtpclients import relay_from_env
from tlsprobe.model import CanaryReason, Endpoint, Policy, ProbeResult, Status
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.send import canary, receiver
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509.evaluate import TrustStore

pytestmark = pytest.mark.postfix

RECEIVER_PORT = 10027
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
DELIVERY = 40.0
"""Seconds a canary may take through Postfix (its queue manager retries every 5 s here)."""


@dataclass(frozen=True)
class RelayUnderTest:
    host: str
    port: int
    trust: TrustStore
    server_sha256: str


@pytest.fixture(scope="module")
def relay() -> RelayUnderTest:
    host, port, directory = relay_from_env()
    trust = TrustStore.from_pem_file(directory / "certs" / "ca.pem")
    served = asyncio.run(
        probe_endpoint(
            Endpoint(host="relay.contoso.test", port=port, address=host),
            POLICY,
            trust,
            timeout=10,
        )
    )
    assert served.leaf is not None, served.error
    return RelayUnderTest(host, port, trust, served.leaf.sha256)


class Arrivals:
    """Sessions the receiver ended, and canary tokens seen, as they come."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.changed = asyncio.Event()

    def add(self, session: Session) -> None:
        self.sessions.append(session)
        self.changed.set()

    async def with_token(self, token: str, timeout: float) -> Session:
        async with asyncio.timeout(timeout):
            while True:
                for session in self.sessions:
                    if any(m.token == token for m in session.messages):
                        return session
                self.changed.clear()
                await self.changed.wait()


async def _listening() -> AsyncIterator[tuple[receiver.Receiver, Arrivals]]:
    arrivals = Arrivals()
    listener = receiver.Receiver(
        context=receiver.tls_context(),
        hostname="receiver.tlsprobe.test",
        accept_recipient=lambda _peer, rcpt: rcpt.endswith(".canary.tlsprobe.test"),
        on_session=arrivals.add,
    )
    await listener.start("127.0.0.1", RECEIVER_PORT)
    try:
        yield listener, arrivals
    finally:
        await listener.close()


def _relay(relay: RelayUnderTest, case: str) -> canary.Relay:
    return canary.Relay(
        relay.host,
        relay.port,
        starttls=True,
        mail_from="probe@contoso.test",
        recipient=f"canary@{case}.canary.tlsprobe.test",
        helo="probe.tlsprobe.test",
    )


async def _round_trip(relay: RelayUnderTest, case: str) -> ProbeResult:
    async for _, arrivals in _listening():
        token = canary.new_token()
        failure = await canary.submit(_relay(relay, case), token, timeout=10)
        assert failure is None, failure
        session = await arrivals.with_token(token, DELIVERY)
        return judge_session(
            session,
            POLICY,
            relay.trust,
            now=datetime.now(UTC),
            name=f"relay-{case}",
            server_sha256=relay.server_sha256,
        )
    raise AssertionError("unreachable")


def _status(result: ProbeResult, name: str) -> Status | None:
    check = result.check(name)
    return None if check is None else check.status


async def test_good_client_certificate(relay: RelayUnderTest) -> None:
    result = await _round_trip(relay, "good")
    assert result.status is Status.OK, [c for c in result.checks if c.status]
    assert result.o365_ready
    assert _status(result, "same_as_server") is Status.OK


async def test_client_certificate_differs_from_the_server_certificate(
    relay: RelayUnderTest,
) -> None:
    result = await _round_trip(relay, "other")
    assert _status(result, "same_as_server") is Status.WARNING
    check = result.check("same_as_server")
    assert check is not None and relay.server_sha256 in check.message
    assert result.leaf is not None and result.leaf.sha256 in check.message
    assert result.status is Status.WARNING and result.o365_ready


async def test_no_client_certificate_configured(relay: RelayUnderTest) -> None:
    result = await _round_trip(relay, "none")
    assert result.status is Status.CRITICAL and not result.o365_ready
    check = result.check("chain_trusted")
    assert check is not None and "no certificate presented" in check.message


async def test_expired_client_certificate(relay: RelayUnderTest) -> None:
    result = await _round_trip(relay, "expired")
    assert _status(result, "not_expired") is Status.CRITICAL
    assert result.status is Status.CRITICAL


async def test_client_name_outside_the_accepted_domains(relay: RelayUnderTest) -> None:
    result = await _round_trip(relay, "fabrikam")
    assert _status(result, "certificate_domain") is Status.CRITICAL
    assert not result.o365_ready


async def test_client_certificate_without_client_auth_eku(relay: RelayUnderTest) -> None:
    result = await _round_trip(relay, "noeku")
    assert _status(result, "client_auth_eku") is Status.WARNING
    assert result.status is Status.WARNING


@pytest.mark.slow
async def test_canary_never_arrives_when_routing_is_broken(relay: RelayUnderTest) -> None:
    deadline = 6.0
    book = canary.CanaryBook()
    async for _, arrivals in _listening():
        token = canary.new_token()
        assert await canary.submit(_relay(relay, "broken"), token, timeout=10) is None
        book.submitted("relay-broken", token, deadline=deadline)
        started = time.monotonic()
        outcomes: list[canary.Outcome] = []
        while not outcomes:
            for session in arrivals.sessions:
                for message in session.messages:
                    assert book.arrived(message.token, message.received_at) is None
            outcomes = book.expired()
            await asyncio.sleep(0.2)
        waited = time.monotonic() - started
    [outcome] = outcomes
    assert outcome.reason is CanaryReason.MISSING and outcome.sender == "relay-broken"
    assert deadline - 1 <= waited <= deadline + 5


def test_tlsprobe_listen_reports_postfix_client_certificate(relay: RelayUnderTest) -> None:
    """The one-shot form: `tlsprobe listen` on the receiver port, one canary through Postfix."""
    _, _, directory = relay_from_env()
    # The context closes the pipes whatever happens (an unclosed one warns in a later test).
    with subprocess.Popen(
        [
            *command("listen", f"127.0.0.1:{RECEIVER_PORT}", "--json", "--timeout", "60"),
            *("--ca-file", str(directory / "certs" / "ca.pem")),
            *("--certificate-domain", "*.contoso.test", "--accepted-domain", "contoso.test"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ) as proc:
        try:
            assert proc.stderr is not None
            assert "waiting on" in proc.stderr.readline()
            outcome = asyncio.run(
                canary.submit(_relay(relay, "noeku"), canary.new_token(), timeout=10)
            )
            assert outcome is None, outcome
            out, _ = proc.communicate(timeout=DELIVERY + 10)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out  # warning: the leaf lacks clientAuth
    report = json.loads(out)
    assert report["chain"][0]["dns_names"] == ["relay.contoso.test"]
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["client_auth_eku"] == "warning" and checks["chain_trusted"] == "ok"
    assert report["sender"]["helo"] == "relay.tlsprobe.test"

"""Judging is bounded: chain length, work, the probe's deadline, and never on the event loop.

A server may send hundreds of certificates (373 small ones fit under OpenSSL's 100 KiB cap);
the path walk that names the untrust reason was quadratic in them and ignored the deadline.
Only the first `MAX_CHAIN` certificates are judged (the message says how many were sent), the
verifier is never handed more, judging runs in a worker thread so the event loop keeps
serving scrapes, and judging that overruns what the transport left of the deadline ends the
probe as a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.support.pki import Hierarchy, Issued
from tests.support.servers import ServerTls, SmtpTestServer
from tlsprobe.model import Capture, Endpoint, Policy, ProbeResult, Reason, TlsInfo
from tlsprobe.probe import prober
from tlsprobe.probe.x509 import evaluate, trust
from tlsprobe.probe.x509.evaluate import MAX_CHAIN, TrustStore

HOST = "mail.contoso.test"
SENT = 373
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def long_chain() -> tuple[bytes, ...]:
    """A leaf and 372 intermediates, each signed by the next: the worst case for a path walk."""
    now = datetime.now(UTC)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(SENT + 1)]
    chain = []
    for index in range(SENT):
        subject = _name(HOST if index == 0 else f"Link {index}")
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name(f"Link {index + 1}"))
            .public_key(keys[index].public_key())
            .serial_number(index + 1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=index > 0, path_length=None), critical=True)
        )
        chain.append(builder.sign(keys[index + 1], hashes.SHA256()).public_bytes(Encoding.DER))
    return tuple(chain)


@pytest.fixture
def verifier_inputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many intermediates each verification was handed."""
    seen: list[int] = []
    original = trust._verifier

    class Recording:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def verify(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> Any:
            seen.append(len(intermediates))
            return self.inner.verify(leaf, intermediates)

    monkeypatch.setattr(trust, "_verifier", lambda *a: Recording(original(*a)))
    evaluate.clear_caches()
    yield seen
    evaluate.clear_caches()


def test_only_the_first_certificates_are_judged(
    long_chain: tuple[bytes, ...], trust: TrustStore, verifier_inputs: list[int]
) -> None:
    capture = Capture("192.0.2.25", long_chain, TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256"))
    now = datetime.now(UTC)
    result = prober.judge(Endpoint(HOST), capture, POLICY, trust, started_at=0, now=now)

    assert len(result.chain) == MAX_CHAIN
    trusted = result.check("chain_trusted")
    assert trusted is not None
    assert f"the server sent {SENT} certificates; the first {MAX_CHAIN} were judged" in (
        trusted.message
    )
    assert verifier_inputs and max(verifier_inputs) <= MAX_CHAIN - 1


async def test_judging_a_new_chain_runs_off_the_event_loop(
    pki: Hierarchy, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = pki.leaf((HOST,))
    threads: list[int] = []
    original = prober.judge

    def recording(*args: Any, **kwargs: Any) -> ProbeResult:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(prober, "judge", recording)
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        first = await prober.probe_endpoint(_endpoint(server), POLICY, trust, timeout=5)
        again = await prober.probe_endpoint(_endpoint(server), POLICY, trust, timeout=5)

    assert first.error is None and len(first.chain) == 2
    assert again.checks == first.checks
    loop_thread = threading.get_ident()
    # A new chain is judged in a worker thread; the same chain again comes from the caches,
    # cheap enough for the loop itself.
    assert threads[0] != loop_thread
    assert threads[1] == loop_thread


async def test_judging_beyond_the_deadline_ends_the_probe_as_a_timeout(
    pki: Hierarchy, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf: Issued = pki.leaf((HOST,))
    release = threading.Event()
    original = prober.judge

    def stuck(*args: Any, **kwargs: Any) -> ProbeResult:
        release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(prober, "judge", stuck)
    try:
        async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
            result = await prober.probe_endpoint(_endpoint(server), POLICY, trust, timeout=1)
    finally:
        release.set()
        await asyncio.sleep(0)

    assert result.error is not None
    assert result.error.kind is Reason.TIMEOUT
    assert "judging the chain exceeded the 1 s deadline" in result.error.message


def _endpoint(server: SmtpTestServer) -> Endpoint:
    return Endpoint(HOST, port=server.port, address="127.0.0.1", sni=HOST, ehlo_name="probe.test")


async def test_a_cancelled_probe_stays_cancelled_when_judging_ends_in_that_turn(
    pki: Hierarchy, trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload cancels the probes of a removed target. When the worker thread's verdict and
    the cancellation arrive in the same turn of the loop, the probe must end cancelled: a
    result returned there is published after the target's series were removed, and stays."""
    leaf = pki.leaf((HOST,))
    loop = asyncio.get_running_loop()
    probing: asyncio.Task[ProbeResult] | None = None

    async def verdict_and_cancel_at_once(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        done: asyncio.Future[Any] = loop.create_future()

        def finish() -> None:
            done.set_result(func(*args, **kwargs))  # what the worker thread hands back
            assert probing is not None
            probing.cancel()  # the reload, in the same turn

        loop.call_soon(finish)
        return await done

    monkeypatch.setattr(asyncio, "to_thread", verdict_and_cancel_at_once)
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        probing = asyncio.create_task(
            prober.probe_endpoint(_endpoint(server), POLICY, trust, timeout=5)
        )
        with pytest.raises(asyncio.CancelledError):
            await probing

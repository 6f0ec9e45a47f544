"""The probe's socket driver (`sockconn` under `transport.capture`) on both event loops.

`tlsprobe serve` runs on uvloop where it is installed and on asyncio's loop otherwise, and the
driver talks to each loop directly (`add_reader`, `add_writer`), so every case here runs on
both: asyncio always, uvloop where it can be imported (`.ci/run` runs this module in its uvloop
stage with TLSPROBE_REQUIRE_UVLOOP=1). Real servers on loopback: the scripted test servers and,
when configured, the test Postfix.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from tests.integration.test_hostile import DemandsClientCertificate, endpoint, serving
from tests.integration.test_postfix import (
    Postfix,
    postfix,  # noqa: F401 - the fixture
)
from tests.integration.test_postfix import endpoint as postfix_endpoint
from tests.support.broken import MAKERS
from tests.support.gates import Gate, importable
from tests.support.pki import Hierarchy, Issued
from tests.support.rawtls import RawCertificateServer
from tests.support.servers import Behaviour, SmtpTestServer, unused_port
from tests.support.wait import eventually
from tlsprobe.model import Capture, Mode, Phase, Reason
from tlsprobe.probe.transport import starttls as transport

HOST = "mail.contoso.test"
T = TypeVar("T")


def _factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "asyncio":
        return None
    uvloop = importable("uvloop", Gate.UVLOOP)
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    factory = _factory(request.param)

    def runner(main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(main)

    return runner


@pytest.fixture(scope="module")
def leaf(pki: Hierarchy) -> Issued:
    return pki.leaf((HOST,))


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def test_starttls_capture(run: Any, pki: Hierarchy, leaf: Issued) -> None:
    async def main() -> tuple[Capture, SmtpTestServer]:
        async with serving([leaf, pki.intermediate]) as server:
            captured = await transport.capture(endpoint(server.port), timeout=5)
            # The probe closes right after QUIT, without waiting for 221: the server still
            # reads it.
            await eventually(lambda: "QUIT" in server.commands, "the server read QUIT")
            return captured, server

    captured, server = run(main())
    assert captured.error is None, captured.error
    assert [sha256(der) for der in captured.chain_der] == [leaf.sha256, pki.intermediate.sha256]
    assert captured.tls is not None and captured.tls.version == "TLSv1.3"
    assert captured.tls.cipher.startswith("TLS_")
    assert captured.starttls_offered is True
    assert server.server_names == [HOST]
    # EHLO, STARTTLS, EHLO again over TLS, QUIT: the whole dialogue, in order.
    assert [c.split()[0].upper() for c in server.commands] == ["EHLO", "STARTTLS", "EHLO", "QUIT"]
    assert {Phase.CONNECT, Phase.HANDSHAKE, Phase.TOTAL} <= set(captured.phases)


def test_implicit_tls_capture(run: Any, pki: Hierarchy, leaf: Issued) -> None:
    async def main() -> Capture:
        async with serving([leaf, pki.intermediate], implicit=True) as server:
            return await transport.capture(endpoint(server.port, mode=Mode.IMPLICIT), timeout=5)

    captured = run(main())
    assert captured.error is None, captured.error
    assert [sha256(der) for der in captured.chain_der] == [leaf.sha256, pki.intermediate.sha256]


def test_an_ip_literal_sends_no_sni(run: Any, pki: Hierarchy, leaf: Issued) -> None:
    async def main() -> tuple[Capture, SmtpTestServer]:
        async with serving([leaf]) as server:
            target = endpoint(server.port, sni="127.0.0.1")
            return await transport.capture(target, timeout=5), server

    captured, server = run(main())
    assert captured.error is None, captured.error
    assert server.server_names == [None]


def test_chain_kept_when_the_handshake_fails_after_the_certificate(
    run: Any, pki: Hierarchy
) -> None:
    """Two such servers with different leaves, probed at once: each probe keeps its own."""
    leaves = [pki.leaf((HOST,)), pki.leaf((HOST,))]

    async def main() -> list[Capture]:
        servers = [
            SmtpTestServer(
                DemandsClientCertificate(
                    [one.cert, pki.intermediate.cert],
                    one.key,
                    maximum_version=ssl.TLSVersion.TLSv1_2,
                )
            )
            for one in leaves
        ]
        async with servers[0] as first, servers[1] as second:
            return list(
                await asyncio.gather(
                    *(transport.capture(endpoint(s.port), timeout=5) for s in (first, second))
                )
            )

    for captured, one in zip(run(main()), leaves, strict=True):
        assert captured.error is not None and captured.error.kind is Reason.TLS_HANDSHAKE
        assert captured.tls is None
        assert [sha256(der) for der in captured.chain_der] == [
            one.sha256,
            pki.intermediate.sha256,
        ]


def _unparsable(kind: str, pki: Hierarchy, leaf: Issued) -> bytes:
    if kind == "not-der":
        return b"this is not a certificate"
    return MAKERS[kind](leaf.der, pki.intermediate.key)


UNPARSABLE = ["truncated", "not-der", "utf8-invalid-subject"]


@pytest.mark.parametrize("kind", UNPARSABLE)
def test_a_certificate_openssl_cannot_parse_is_still_shown(
    run: Any, pki: Hierarchy, leaf: Issued, kind: str
) -> None:
    """OpenSSL aborts on it and keeps none of the chain: a second connection with a tapped
    context reads the chain out of the Certificate message, within the same deadline."""
    broken = _unparsable(kind, pki, leaf)
    sent = [broken, pki.intermediate.der]

    async def main() -> tuple[Capture, int]:
        async with RawCertificateServer(sent) as server:
            return await transport.capture(endpoint(server.port), timeout=5), server.hellos

    captured, hellos = run(main())
    assert captured.error is not None and captured.error.kind is Reason.TLS_HANDSHAKE
    assert "ASN1" in captured.error.message
    assert "cannot be parsed" in captured.error.message
    assert captured.chain_der == tuple(sent)
    assert hellos == 2


def test_a_handshake_failing_after_a_parsable_chain_connects_once(
    run: Any, pki: Hierarchy, leaf: Issued
) -> None:
    """The chain comes from OpenSSL's session; no second connection for an ordinary failure."""

    async def main() -> tuple[Capture, int]:
        async with RawCertificateServer([leaf.der, pki.intermediate.der]) as server:
            return await transport.capture(endpoint(server.port), timeout=5), server.hellos

    captured, hellos = run(main())
    assert captured.error is not None and captured.error.kind is Reason.TLS_HANDSHAKE
    assert "cannot be parsed" not in captured.error.message
    assert captured.chain_der == (leaf.der, pki.intermediate.der)
    assert hellos == 1


def test_the_tap_reads_a_tls13_certificate_message(run: Any, pki: Hierarchy, leaf: Issued) -> None:
    """TLS 1.3 encrypts the Certificate message; the tap sees it decrypted, in 1.3's layout."""

    async def main() -> tuple[bytes, ...]:
        async with serving([leaf, pki.intermediate]) as server:
            return await transport._chain_as_sent(endpoint(server.port), 5)

    assert run(main()) == (leaf.der, pki.intermediate.der)


FAILURES = [
    (Behaviour.INJECT_AFTER_220, Reason.PROTOCOL),
    (Behaviour.CLOSE_AFTER_220, Reason.TLS_HANDSHAKE),
    (Behaviour.CLOSE_IN_HANDSHAKE, Reason.TLS_HANDSHAKE),
    (Behaviour.GARBAGE_HANDSHAKE, Reason.TLS_HANDSHAKE),
    (Behaviour.LONG_LINE, Reason.PROTOCOL),
    (Behaviour.ACCEPT_CLOSE, Reason.PROTOCOL),
    (Behaviour.STARTTLS_454, Reason.STARTTLS_REJECTED),
]


@pytest.mark.parametrize(("behaviour", "reason"), FAILURES, ids=[b.value for b, _ in FAILURES])
def test_failures_keep_their_phase(
    run: Any, pki: Hierarchy, leaf: Issued, behaviour: Behaviour, reason: Reason
) -> None:
    async def main() -> Capture:
        async with serving([leaf, pki.intermediate], behaviour=behaviour) as server:
            return await transport.capture(endpoint(server.port), timeout=5)

    captured = run(main())
    assert captured.error is not None
    assert captured.error.kind is reason, captured.error
    assert captured.chain_der == ()


def test_one_deadline_for_a_silent_server(run: Any, leaf: Issued) -> None:
    async def main() -> tuple[Capture, float]:
        async with serving([leaf], behaviour=Behaviour.SILENT) as server:
            started = time.monotonic()
            captured = await transport.capture(endpoint(server.port), timeout=0.5)
            return captured, time.monotonic() - started

    captured, elapsed = run(main())
    assert captured.error is not None and captured.error.kind is Reason.TIMEOUT
    assert "waiting in phase banner" in captured.error.message
    assert 0.4 < elapsed < 1.5


def test_refused_and_no_descriptor_left_open(run: Any, pki: Hierarchy, leaf: Issued) -> None:
    async def main() -> list[Capture]:
        async with (
            serving([leaf, pki.intermediate]) as good,
            serving([leaf], behaviour=Behaviour.GARBAGE_HANDSHAKE) as bad,
        ):
            ports = [good.port, bad.port, unused_port()] * 5
            return [await transport.capture(endpoint(port), timeout=5) for port in ports]

    before = len(os.listdir("/proc/self/fd"))
    captures = run(main())
    assert len(os.listdir("/proc/self/fd")) == before
    kinds = [c.error.kind if c.error else None for c in captures[:3]]
    assert kinds == [None, Reason.TLS_HANDSHAKE, Reason.REFUSED]


def test_postfix_on_both_loops(run: Any, postfix: Postfix) -> None:  # noqa: F811
    captured = run(transport.capture(postfix_endpoint(postfix), timeout=10))
    assert captured.error is None, captured.error
    assert captured.chain_der
    assert captured.tls is not None and captured.tls.version.startswith("TLSv1.")
    assert any(line.startswith("C: EHLO") for line in captured.transcript[3:])

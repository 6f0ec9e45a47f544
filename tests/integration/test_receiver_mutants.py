"""Client certificates `cryptography` cannot load, presented to the real receiver.

A relay presents, as a TLS client, a leaf made by DER surgery on a good one: every kind of
`tests.support.broken` that OpenSSL (the client's) will send, then hypothesis's structural
mutations of the same leaf. Each session must end in a `Session` holding the chain as sent, and
its verdict must be the server side's for the same bytes: one path judges both (the lenient DER
reader), so a certificate the probe calls critical is critical from the receiver too. Before,
`get_peer_certificate(as_cryptography=True)` raised out of the session and nothing was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import smtplib
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.integration.test_receiver import POLICY, running
from tests.support import der as D
from tests.support.broken import MAKERS, SUBJECT, _edit, _name_value
from tests.support.pki import Hierarchy, Issued, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer
from tests.support.smtpclients import client_context, send_canary
from tests.unit.test_fuzz_evaluate import mutated
from tlsprobe.model import Capture, Endpoint, ProbeResult, Status, TlsInfo
from tlsprobe.probe.prober import judge, probe_endpoint
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.transport import certmsg
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore

KEY = "relay-key.pem"
"""The key file `write_server_files` writes beside the chain (stem "relay")."""
FUZZ_EXAMPLES = 100
"""Sessions the fuzz test runs (each a real handshake; about 9 s in all, with the mutants the
client cannot load: marked slow. The fixed kinds above run in the fast suite)."""


def sendable(directory: Path, leaf: Issued, der: bytes, intermediate: bytes) -> Path | None:
    """The chain as client files, or None when the client's OpenSSL refuses to load it."""
    certfile, _ = write_server_files(directory, leaf.key, [der, intermediate], stem="relay")
    try:
        client_context(certfile, directory / KEY)
    except ssl.SSLError:
        return None
    return certfile


async def delivered(port: int, certfile: Path, sessions: object) -> Session:
    await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=certfile.with_name(KEY))
    session: Session = await sessions.next()  # type: ignore[attr-defined]
    return session


def server_side(session: Session, trust: TrustStore, now: datetime) -> ProbeResult:
    """The probe's verdict on the chain the receiver captured, as if a server had sent it."""
    tls = session.tls or TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    capture = Capture(session.peer, session.chain_der, tls)
    return judge(Endpoint("relay.contoso.test"), capture, POLICY, trust, started_at=0, now=now)


def assert_same_verdict(client: ProbeResult, server: ProbeResult) -> None:
    """The certificate checks agree; the sender's own checks (EKU, no hostname) may add."""
    for name in ("certificate_format", "chain_trusted", "not_expired", "signature_algorithm"):
        mine, theirs = client.check(name), server.check(name)
        assert (mine and (mine.status, mine.message)) == (
            theirs and (theirs.status, theirs.message)
        )
    if any(p.critical for f in server.chain for p in f.problems):
        assert client.status is Status.CRITICAL and not client.o365_ready


@pytest.mark.parametrize("kind", sorted(MAKERS))
async def test_every_client_certificate_mutant_ends_in_the_server_sides_verdict(
    kind: str, pki: Hierarchy, trust: TrustStore, tmp_path: Path
) -> None:
    leaf = pki.leaf(("relay.contoso.test",))
    der = MAKERS[kind](leaf.der, pki.intermediate.key)
    certfile = sendable(tmp_path, leaf, der, pki.intermediate.der)
    if certfile is None:
        pytest.skip(f"{kind}: the client's OpenSSL cannot load it, so no relay sends it")
    async with running() as (_, port, sessions):
        session = await delivered(port, certfile, sessions)

    assert session.error is None and session.tls is not None
    assert len(session.chain_der) == 2 and session.chain_der[1] == pki.intermediate.der
    now = datetime.now(UTC)
    result = judge_session(session, POLICY, trust, now=now)
    assert result.chain[0].sha256 == hashlib.sha256(session.chain_der[0]).hexdigest()
    assert_same_verdict(result, server_side(session, trust, now))
    if kind != "non-minimal-length":  # OpenSSL re-encodes the outer SEQUENCE when it sends
        assert session.chain_der[0] == der


@pytest.mark.slow
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_mutated_client_certificates_always_get_a_verdict(
    data: st.DataObject, pki: Hierarchy, trust: TrustStore
) -> None:
    leaf = fuzzed_leaf(pki)  # one leaf for every example, so a failure replays
    der = mutated(data, leaf.der, pki.intermediate.key)
    with tempfile.TemporaryDirectory(prefix="tlsprobe-mutant-") as tmp:
        certfile = sendable(Path(tmp), leaf, der, pki.intermediate.der)
        assume(certfile is not None)
        assert certfile is not None

        async def one() -> Session:
            async with running() as (_, port, sessions):
                # The relay may fail (the receiver ends a handshake it cannot finish): the
                # session is still recorded, with its error.
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    await asyncio.to_thread(
                        send_canary, port, certfile=certfile, keyfile=certfile.with_name(KEY)
                    )
                return await sessions.next()

        session = asyncio.run(one())
    now = datetime.now(UTC)
    result = judge_session(session, POLICY, trust, now=now)
    assert isinstance(result.status, Status)
    if session.tls is not None:
        assert session.chain_der, "the chain as sent is kept"
        certs.facts_from_der(session.chain_der[0])
        assert_same_verdict(result, server_side(session, trust, now))
    else:
        assert session.error is not None and result.status is not Status.OK


_FUZZED: dict[int, Issued] = {}


def fuzzed_leaf(pki: Hierarchy) -> Issued:
    return _FUZZED.setdefault(id(pki), pki.leaf(("relay.contoso.test",)))


# --- the size bound, the same on both sides ------------------------------------------------


def big_leaf(pki: Hierarchy, leaf: Issued, size: int) -> bytes:
    """The leaf with a subject of `size` bytes (re-signed)."""
    return _edit(_name_value(SUBJECT, D.UTF8_STRING, b"x" * size))(leaf.der, pki.intermediate.key)


@pytest.mark.parametrize(
    ("size", "judged"), [(66_000, True), (98_000, True), (certmsg.MAX_MESSAGE, False)]
)
async def test_client_and_server_chains_share_one_size_bound(
    size: int, judged: bool, pki: Hierarchy, trust: TrustStore, tmp_path: Path
) -> None:
    """Client chains over about 65,100 bytes failed the receiver's handshake as "internal
    error" with no chain (OpenSSL could not fit them into a session ticket), while the probe
    read server chains up to 100 KiB. Now both read up to `certmsg.MAX_MESSAGE` and say so
    past it; either way the session or probe ends in a verdict."""
    leaf = pki.leaf(("relay.contoso.test",))
    der = big_leaf(pki, leaf, size)
    certfile = sendable(tmp_path, leaf, der, pki.intermediate.der)
    assert certfile is not None
    async with running() as (_, port, sessions):
        try:
            session = await delivered(port, certfile, sessions)
        except (OSError, smtplib.SMTPException):
            assert not judged  # the receiver ended the handshake
            session = await sessions.next()
    result = judge_session(session, POLICY, trust, now=datetime.now(UTC))
    server = ServerTls([der, pki.intermediate.der], leaf.key)
    async with SmtpTestServer(server) as smtp:
        endpoint = Endpoint("relay.contoso.test", smtp.port, address="127.0.0.1")
        probed = await probe_endpoint(endpoint, POLICY, trust, timeout=10)
    if judged:
        assert session.error is None and session.chain_der == (der, pki.intermediate.der)
        assert probed.error is None and probed.chain[0].sha256 == result.chain[0].sha256
        assert result.status is Status.WARNING  # a huge name: read, verified, warned
        return
    bound = f"a certificate chain over {certmsg.MAX_MESSAGE:,} bytes, the most read"
    assert result.status is Status.CRITICAL and probed.status is Status.CRITICAL
    assert session.error is not None and bound in session.error.message
    assert probed.error is not None and bound in probed.error.message

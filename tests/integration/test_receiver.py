"""The receiver on loopback: a sender presenting client certificates (good, none, self-signed,
expired), hostile clients, the session bounds, and `tlsprobe listen` as a process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.broken import MAKERS
from tests.support.pki import Hierarchy, Issued, make_leaf, write_server_files
from tests.support.smtpclients import (
    CANARY_RCPT,
    check_named,
    client_context,
    free_port,
    raw_session,
    send_canary,
)
from tests.support.wait import eventually
from tlsprobe.model import Policy, Reason, Status
from tlsprobe.probe.send import receiver
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.smtp import server as smtpserver
from tlsprobe.probe.x509.evaluate import TrustStore

POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
POLICY_ARGS = ("--certificate-domain", "*.contoso.test", "--accepted-domain", "contoso.test")


class Sessions:
    def __init__(self) -> None:
        self.ended: list[Session] = []
        self.event = asyncio.Event()

    def add(self, session: Session) -> None:
        self.ended.append(session)
        self.event.set()

    async def next(self, timeout: float = 15.0) -> Session:
        async with asyncio.timeout(timeout):
            while not self.ended:
                self.event.clear()
                await self.event.wait()
        return self.ended.pop(0)


@asynccontextmanager
async def running(
    limits: receiver.ReceiverLimits | None = None,
    known_peer: receiver.KnownPeer | None = None,
) -> AsyncIterator[tuple[receiver.Receiver, int, Sessions]]:
    sessions = Sessions()
    listener = receiver.Receiver(
        context=receiver.tls_context(),
        hostname="receiver.tlsprobe.test",
        accept_recipient=lambda _peer, rcpt: rcpt == CANARY_RCPT,
        on_session=sessions.add,
        limits=limits,
        known_peer=known_peer,
    )
    _, port = await listener.start("127.0.0.1", 0)
    try:
        yield listener, port, sessions
    finally:
        await listener.close()


def files(tmp_path: Path, leaf: Issued, chain: tuple[x509.Certificate, ...]) -> tuple[Path, Path]:
    return write_server_files(tmp_path, leaf.key, chain)


async def test_the_client_chain_is_captured_as_sent(
    pki: Hierarchy, trust: TrustStore, tmp_path: Path
) -> None:
    leaf = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = files(tmp_path, leaf, pki.chain(leaf))
    async with running() as (_, port, sessions):
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile, token="t-42")
        session = await sessions.next()
    assert session.chain_der == (leaf.der, pki.intermediate.cert.public_bytes(Encoding.DER))
    assert session.error is None and session.helo == "relay.contoso.test"
    assert [m.token for m in session.messages] == ["t-42"]
    result = judge_session(session, POLICY, trust, now=datetime.now(UTC))
    assert result.status is Status.OK and result.o365_ready


async def test_no_client_certificate_is_critical(trust: TrustStore) -> None:
    async with running() as (_, port, sessions):
        await asyncio.to_thread(send_canary, port)
        session = await sessions.next()
    assert session.tls is not None and session.chain_der == ()
    result = judge_session(session, POLICY, trust, now=datetime.now(UTC))
    assert result.status is Status.CRITICAL
    assert "no certificate presented" in check_named(result, "chain_trusted").message


@pytest.mark.parametrize("kind", ["self_signed", "expired"])
async def test_broken_client_certificates_are_captured_whatever_they_are(
    kind: str, pki: Hierarchy, trust: TrustStore, tmp_path: Path
) -> None:
    if kind == "self_signed":
        leaf = make_leaf(None, ("relay.contoso.test",))
        chain: tuple[x509.Certificate, ...] = (leaf.cert,)
    else:
        now = datetime.now(UTC)
        leaf = pki.leaf(
            ("relay.contoso.test",),
            not_before=now - timedelta(days=90),
            not_after=now - timedelta(days=2),
        )
        chain = pki.chain(leaf)
    certfile, keyfile = files(tmp_path, leaf, chain)
    async with running() as (_, port, sessions):
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile)
        session = await sessions.next()
    assert session.chain_der[0] == leaf.der
    result = judge_session(session, POLICY, trust, now=datetime.now(UTC))
    assert result.status is Status.CRITICAL
    failing = "chain_trusted" if kind == "self_signed" else "not_expired"
    assert check_named(result, failing).status is Status.CRITICAL


async def secure_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, EHLO, STARTTLS, TLS handshake without a client certificate, EHLO again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"EHLO x.test\r\n")
    await reply(reader)
    writer.write(b"STARTTLS\r\n")
    await reader.readline()
    await writer.start_tls(client_context(None, None))
    return reader, writer


async def reply(reader: asyncio.StreamReader) -> bytes:
    """One whole (possibly multi-line) reply; its last line."""
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    return line


# --- hostile clients -------------------------------------------------------------------------


async def test_mail_without_starttls_is_refused_and_nothing_received() -> None:
    async with running() as (_, port, sessions):
        said = await raw_session(
            port,
            [
                b"EHLO x.test\r\n",
                b"MAIL FROM:<a@b.test>\r\n",
                f"RCPT TO:<{CANARY_RCPT}>\r\n".encode(),
                b"QUIT\r\n",
            ],
        )
        session = await sessions.next()
    assert b"530 5.7.0" in said
    assert session.plaintext_mail and not session.messages and session.tls is None


async def test_plaintext_injected_after_starttls_is_discarded() -> None:
    async with running() as (_, port, sessions):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b"EHLO x.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        injected = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<" + CANARY_RCPT.encode() + b">\r\n"
        writer.write(b"STARTTLS\r\n" + injected)
        assert (await reader.readline()).startswith(b"220 ")
        await writer.start_tls(client_context(None, None))
        writer.write(b"QUIT\r\n")
        said = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        session = await sessions.next()
    assert said.startswith(b"221 ")  # MAIL and RCPT were never answered
    assert session.discarded_plaintext == len(injected)
    assert session.tls is not None and not session.messages


async def test_oversize_line_and_message_end_the_session() -> None:
    limits = receiver.ReceiverLimits(smtp=smtpserver.Limits(max_message=2000))
    async with running(limits) as (_, port, sessions):
        said = await raw_session(port, [b"EHLO " + b"a" * 100_000 + b"\r\n"])
        first = await sessions.next()
        assert b"500 5.5.2" in said and first.error is not None

        reader, writer = await secure_session(port)
        for line in [
            b"EHLO x.test\r\n",
            b"MAIL FROM:<a@b.test>\r\n",
            f"RCPT TO:<{CANARY_RCPT}>\r\n".encode(),
            b"DATA\r\n",
        ]:
            writer.write(line)
            await reply(reader)
        writer.write((b"x" * 900 + b"\r\n") * 5)
        said = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        second = await sessions.next()
    assert b"552 5.3.4" in said or second.error is not None
    assert not second.messages


async def test_slow_drip_ends_at_the_session_deadline() -> None:
    limits = receiver.ReceiverLimits(session_timeout=1.5)
    async with running(limits) as (_, port, sessions):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        for byte in b"EHLO dripping.test\r\n" * 5:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
            if sessions.ended:
                break
        session = await sessions.next(timeout=5)
        elapsed = time.monotonic() - started
        writer.close()
    assert session.error is not None and session.error.kind is Reason.TIMEOUT
    assert elapsed < 4.0


async def test_relay_attempts_and_auth_are_refused() -> None:
    async with running() as (_, port, sessions):
        reader, writer = await secure_session(port)
        replies = []
        for line in [
            b"EHLO x.test\r\n",
            b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
            b"MAIL FROM:<a@b.test>\r\n",
            b"RCPT TO:<victim@outside.example>\r\n",
            b"QUIT\r\n",
        ]:
            writer.write(line)
            replies.append((await reply(reader))[:3])
        writer.close()
        session = await sessions.next()
    assert replies == [b"250", b"502", b"250", b"550", b"221"]
    assert session.auth_attempts == 1 and session.refused_recipients == 1
    assert not session.messages


async def test_sessions_beyond_the_bound_get_421_at_once() -> None:
    limits = receiver.ReceiverLimits(max_sessions=2, session_timeout=5)
    async with running(limits) as (listener, port, _):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, _ in held:
            await reader.readline()
        said = await raw_session(port, [], read_timeout=2)
        for _, writer in held:
            writer.close()
    assert said.startswith(b"421 ")
    assert listener.refused_sessions == 1


async def test_per_peer_rate_is_bounded() -> None:
    limits = receiver.ReceiverLimits(per_peer_per_minute=2)
    async with running(limits) as (listener, port, _):
        said = [await raw_session(port, [b"QUIT\r\n"], read_timeout=2) for _ in range(3)]
    assert [s[:3] for s in said] == [b"220", b"220", b"421"]
    assert listener.refused_sessions == 1


# --- slots: per peer, configured senders first, idle ones evicted ----------------------------


async def silent(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from `source` (any 127/8 address) that reads the greeting, then says
    nothing: what a flood of silent or byte-a-second connections looks like to the slots."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    greeting = await asyncio.wait_for(reader.readline(), 10)
    assert greeting.startswith(b"220 "), greeting
    return reader, writer


async def greeting_from(port: int, source: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_one_address_holds_at_most_its_share_of_the_slots() -> None:
    limits = receiver.ReceiverLimits(max_sessions=10)  # and 5 per peer, by default
    async with running(limits) as (listener, port, _):
        held = [await silent(port, "127.0.0.2") for _ in range(5)]
        third = await greeting_from(port, "127.0.0.2")
        other = await greeting_from(port, "127.0.0.3")
        for _, writer in held:
            writer.close()
    assert third.startswith(b"421 ") and other.startswith(b"220 ")
    assert listener.refused_sessions == 1


async def test_a_configured_sender_gets_a_slot_from_a_full_receiver(
    pki: Hierarchy, tmp_path: Path
) -> None:
    """Unknown addresses held every slot and the configured relay got 421 on 34 of 34 tries:
    now its session takes the slot of the idlest unknown peer, while another unknown newcomer
    still gets 421 (none of the holders has been idle long enough to give way to it)."""
    limits = receiver.ReceiverLimits(max_sessions=2, idle_eviction=3600)
    leaf = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = files(tmp_path, leaf, pki.chain(leaf))
    known = "127.0.0.1".__eq__
    async with running(limits, known) as (listener, port, sessions):
        first = await silent(port, "127.0.0.2")
        second = await silent(port, "127.0.0.3")
        unknown = await greeting_from(port, "127.0.0.4")
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile)
        ended = [await sessions.next(), await sessions.next()]
        for _, writer in (first, second):
            writer.close()
    assert unknown.startswith(b"421 ")
    evicted, relay = sorted(ended, key=lambda s: s.peer != "127.0.0.2")
    assert evicted.peer == "127.0.0.2" and evicted.error is not None
    assert "to give its slot to a configured sender" in evicted.error.message
    assert relay.peer == "127.0.0.1" and relay.error is None and relay.chain_der[0] == leaf.der
    assert listener.evicted_sessions == 1


async def test_an_idle_session_gives_its_slot_to_a_newcomer() -> None:
    limits = receiver.ReceiverLimits(max_sessions=1, idle_eviction=0.2)
    async with running(limits) as (listener, port, sessions):
        reader, writer = await silent(port, "127.0.0.2")
        await asyncio.sleep(0.5)  # idle past idle_eviction: never a bound on the receiver
        newcomer = await raw_session(port, [b"QUIT\r\n"])
        closed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        ended = [await sessions.next(), await sessions.next()]
    assert newcomer.startswith(b"220 ") and b"221 " in newcomer
    assert closed == b""  # the idle one was closed
    idle = next(s for s in ended if s.peer == "127.0.0.2")
    assert (
        idle.error is not None and "without a command: the receiver was full" in idle.error.message
    )
    assert listener.evicted_sessions == 1


# --- tlsprobe listen ---------------------------------------------------------------------------


def _listen(port: int, *extra: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "tlsprobe", "listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "waiting on" in line, line


def _listened(port: int, deliver: Callable[[], None], *extra: str) -> tuple[int, str, str]:
    """`tlsprobe listen` on `port` while `deliver()` runs: exit code, stdout, stderr (the
    last `--timeout` wins: 30 s unless `extra` says otherwise)."""
    proc = _listen(port, "--timeout", "30", *extra)
    try:
        _wait_listening(proc)
        deliver()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_listen_reports_the_client_certificate(
    pki: Hierarchy, ca_file: Path, tmp_path: Path
) -> None:
    leaf = pki.leaf(("relay.contoso.test",), client_auth=False)
    certfile, keyfile = files(tmp_path, leaf, pki.chain(leaf))
    port = free_port()
    proc = _listen(
        port,
        "--json",
        "--ca-file",
        str(ca_file),
        "--certificate-domain",
        "*.contoso.test",
        "--accepted-domain",
        "contoso.test",
        "--timeout",
        "30",
    )
    try:
        _wait_listening(proc)
        send_canary(port, certfile=certfile, keyfile=keyfile)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, out  # warning: no clientAuth EKU
    data = json.loads(out)
    assert data["chain"][0]["sha256"] == leaf.sha256
    assert {c["name"]: c["status"] for c in data["checks"]}["client_auth_eku"] == "warning"
    assert data["sender"]["messages"][0]["canary_token"] == "tok-1"


def test_listen_human_report_without_certificate_is_critical(ca_file: Path) -> None:
    port = free_port()
    code, out, _ = _listened(port, lambda: send_canary(port), "--ca-file", str(ca_file))
    assert code == 2
    assert out.startswith("TLSPROBE CRITICAL") and "no certificate presented" in out
    assert "Sender        127.0.0.1 (EHLO relay.contoso.test)" in out


def _knock(port: int, said: bytes = b"") -> None:
    """A port scan (connect, close) or a TCP health check (read the greeting, QUIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if said:
            sock.recv(4096)
            sock.sendall(said)
            sock.recv(4096)


def test_listen_ignores_port_scans_and_health_checks(
    pki: Hierarchy, ca_file: Path, tmp_path: Path
) -> None:
    """The first connection used to be judged: a scan ended `listen` CRITICAL in a second."""
    leaf = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = files(tmp_path, leaf, pki.chain(leaf))
    port = free_port()

    def deliver() -> None:
        _knock(port)
        _knock(port, b"QUIT\r\n")
        send_canary(port, certfile=certfile, keyfile=keyfile)

    code, out, err = _listened(port, deliver, "-v", "--ca-file", str(ca_file), *POLICY_ARGS)
    assert code == 0, out
    assert out.startswith("TLSPROBE OK")
    ignored = [line for line in err.splitlines() if "ignored a session" in line]
    assert len(ignored) == 2 and all("before EHLO or TLS" in line for line in ignored), err


def test_listen_judges_a_client_certificate_cryptography_cannot_load(
    pki: Hierarchy, ca_file: Path, tmp_path: Path
) -> None:
    """It said "no SMTP session arrived" after a traceback, and the relay's message was cut."""
    leaf = pki.leaf(("relay.contoso.test",))
    broken = MAKERS["version-4"](leaf.der, pki.intermediate.key)
    certfile, keyfile = write_server_files(tmp_path, leaf.key, [broken, pki.intermediate.der])
    port = free_port()

    def deliver() -> None:
        send_canary(port, certfile=certfile, keyfile=keyfile)

    code, out, err = _listened(port, deliver, "--json", "--ca-file", str(ca_file), *POLICY_ARGS)
    assert code == 2 and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["status"] == "critical"
    assert {c["name"]: c["status"] for c in doc["checks"]}["certificate_format"] == "critical"
    assert doc["sender"]["messages"][0]["canary_token"] == "tok-1"  # the message went through


def test_listen_judges_only_the_peer_it_is_told(ca_file: Path) -> None:
    port = free_port()
    extra = ("-v", "--peer", "127.0.0.2", "--ca-file", str(ca_file), "--timeout", "3")
    code, out, err = _listened(port, lambda: send_canary(port), *extra)
    assert code == 3 and out.startswith("TLSPROBE UNKNOWN")
    assert "ignored a session from 127.0.0.1, not from --peer 127.0.0.2/32" in err


def test_listen_refuses_a_peer_that_is_no_address(ca_file: Path) -> None:
    proc = _listen(free_port(), "--peer", "relay.example", "--timeout", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "--peer: not an IP address or network" in err


def test_listen_without_a_session_is_unknown(ca_file: Path) -> None:
    proc = _listen(free_port(), "--ca-file", str(ca_file), "--timeout", "0.5")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and out.startswith("TLSPROBE UNKNOWN")


async def test_an_unexpected_error_still_ends_in_a_recorded_session(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Last resort: an exception out of the session (a reader bug, a library raising what it
    did not document) is a session with an error, judged and recorded, never a lost one."""

    def broken(_tls: object) -> tuple[bytes, ...]:
        raise ValueError("a certificate the library cannot convert")

    monkeypatch.setattr(receiver, "peer_chain_der", broken)
    async with running() as (_, port, sessions):
        _, writer = await secure_session(port)
        writer.close()
        session = await sessions.next()
    assert session.error is not None and session.error.kind is Reason.TLS_HANDSHAKE
    assert "ValueError" in session.error.message
    assert "receiver session failed" in caplog.text


# --- command floods ----------------------------------------------------------------------------


async def pipelined(port: int, commands: bytes) -> bytes:
    """Send every command at once, then read what the receiver says until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(commands)
    try:
        async with asyncio.timeout(15):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_a_pipelined_noop_flood_leaves_the_loop_to_others() -> None:
    """Each reply yields to the event loop, which the probes share: a session with a buffer
    full of NOOPs answered them all in one turn, so 20 such sessions starved every probe. And
    a session ends at the command bound."""
    limits = receiver.ReceiverLimits(commands_per_second=1e6)
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async with running(limits) as (_, port, sessions):
        counting = asyncio.create_task(ticker())
        said = await pipelined(port, b"EHLO flood.test\r\n" + b"NOOP\r\n" * 150)
        session = await sessions.next()
        counted = turns
        counting.cancel()
    assert said.count(b"250 2.0.0 Ok") == 99 and b"421 4.7.0 Too many commands" in said
    assert session.error is not None and "Too many commands" in session.error.message
    assert counted >= 100  # at least a turn of the loop per reply


async def test_a_session_past_its_command_rate_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = receiver.ReceiverLimits(commands_per_second=2.0)
    held: list[float] = []
    sleep = asyncio.sleep

    async def recording(delay: float) -> None:
        held.append(delay)
        await sleep(0)  # the test need not wait what the receiver asked

    monkeypatch.setattr(asyncio, "sleep", recording)
    noops = receiver.COMMAND_BURST + 4
    async with running(limits) as (_, port, sessions):
        said = await pipelined(port, b"EHLO x.test\r\n" + b"NOOP\r\n" * noops + b"QUIT\r\n")
        session = await sessions.next()
    assert session.error is None and said.endswith(b"221 2.0.0 Bye\r\n")  # paced, not refused
    # The greeting, EHLO, the NOOPs and QUIT are replies; past the burst each waits 1/rate.
    assert sum(held) >= (noops + 3 - receiver.COMMAND_BURST) / 2.0 - 0.5


async def test_closing_with_sessions_open_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`serve` stopping (or `listen` ending) while relays are connected printed one asyncio
    "Exception in callback" traceback per open session."""
    async with running() as (listener, port, _):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for reader, _ in held:
            await reader.readline()
        await eventually(lambda: listener.active_sessions == 3, "three sessions open")
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0)  # the stream callbacks run in the turn after the tasks end
    assert "Exception in callback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

"""The canary book: submissions paired with arrivals, deadlines, bounds. Values only."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from tests.support.smtpclients import free_port
from tlsprobe.model import CanaryReason
from tlsprobe.probe.send import canary
from tlsprobe.probe.smtp.reply import MESSAGE_CHARS


def test_an_arrival_gives_the_round_trip_once() -> None:
    book = canary.CanaryBook()
    book.submitted("relay-1", "tok", deadline=60, now=1000.0)
    outcome = book.arrived("tok", 1002.5)
    assert outcome is not None
    assert (outcome.sender, outcome.round_trip, outcome.reason) == ("relay-1", 2.5, None)
    assert book.arrived("tok", 1003.0) is None
    assert book.expired(now=2000.0) == []


def test_unknown_and_missing_tokens_are_ignored() -> None:
    book = canary.CanaryBook()
    book.submitted("relay-1", "tok", deadline=60, now=1000.0)
    assert book.arrived("forged", 1001.0) is None
    assert book.arrived(None, 1001.0) is None
    assert book.pending("relay-1") == 1


def test_a_canary_past_its_deadline_is_missing_exactly_once() -> None:
    book = canary.CanaryBook()
    book.submitted("relay-1", "tok", deadline=30, now=1000.0)
    assert book.expired(now=1029.9) == []
    [outcome] = book.expired(now=1030.0)
    assert outcome.reason is CanaryReason.MISSING and "30 s" in outcome.message
    assert book.expired(now=1100.0) == []
    assert book.arrived("tok", 1031.0) is None  # too late: already reported missing


def test_the_book_is_bounded() -> None:
    book = canary.CanaryBook(limit=2)
    for index in range(3):
        book.submitted("relay-1", f"t{index}", deadline=60, now=1000.0)
    [dropped] = book.expired(now=1001.0)
    assert dropped.token == "t0" and dropped.reason is CanaryReason.MISSING
    assert book.pending("relay-1") == 2


def test_the_message_carries_the_token_header() -> None:
    relay = canary.Relay("127.0.0.1", recipient="c@canary.test", mail_from="p@contoso.test")
    text = canary.message_bytes(relay, "abc")
    assert "\r\nX-Tlsprobe-Canary: abc\r\n" in text


def test_submitting_to_nothing_is_unreachable() -> None:
    relay = canary.Relay("127.0.0.1", free_port(), recipient="c@canary.test")
    outcome = asyncio.run(canary.submit(relay, "tok", timeout=2))
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_UNREACHABLE


class _Relay:
    """A loopback relay that greets one byte at a time, or never; notes when the client's
    connection closes."""

    def __init__(self, drip: float | None) -> None:
        self.drip = drip
        self.closed = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.drip is None:
                await reader.read()  # until the client's side is shut
            else:
                while True:  # "220 " forever, never a line end: every read gets a byte
                    for byte in b"220 ":
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(self.drip)
        except ConnectionError:
            pass
        finally:
            self.closed.set()
            writer.close()


async def _serve(relay: _Relay) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_cancelled_submission_closes_its_connection_at_once() -> None:
    """A stop or reload cancels the canary task: the worker thread's connection is shut then,
    not left to run to its 60 s deadline (which held the exporter's shutdown that long)."""
    relay = _Relay(drip=None)
    server, port = await _serve(relay)
    try:
        task = asyncio.create_task(
            canary.submit(canary.Relay("127.0.0.1", port), canary.new_token(), timeout=60)
        )
        await asyncio.sleep(0.5)
        task.cancel()
        # A generous bound, not a timing assert: without the fix it is the 60 s deadline.
        await asyncio.wait_for(relay.closed.wait(), timeout=15)
        assert task.cancelled()
    finally:
        server.close()


async def test_a_drip_feeding_relay_cannot_stretch_the_deadline() -> None:
    """Each read gets a byte well within the per-read timeout; the whole submission still ends
    at its one deadline (it ran until the relay stopped)."""
    relay = _Relay(drip=0.1)
    server, port = await _serve(relay)
    try:
        relay_at = canary.Relay("127.0.0.1", port)
        outcome = await asyncio.wait_for(
            canary.submit(relay_at, canary.new_token(), timeout=1), timeout=20
        )
        await asyncio.wait_for(relay.closed.wait(), timeout=15)
    finally:
        server.close()
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_TIMEOUT
    assert "within 1 s" in outcome.message


async def test_a_connect_the_relay_never_answers_holds_no_thread() -> None:
    """A firewall that drops the relay's SYNs: the connect hangs. It runs on the event loop,
    so cancelling the canary (a stop) leaves no worker thread behind for the interpreter's
    shutdown to wait on (it waited the whole 60 s deadline)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: once its queue is full, further SYNs are dropped
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        relay = canary.Relay("127.0.0.1", port)
        task = asyncio.create_task(canary.submit(relay, canary.new_token(), timeout=60))
        await asyncio.sleep(0.5)
        assert not task.done(), "the connect was expected to hang"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # A generous bound, not a timing assert: a worker blocked in connect takes 60 s.
        await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), 15)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


Script = Callable[[bytes], bytes]
"""What a scripted relay answers to one command line (the greeting answers b"")."""


class _ScriptedRelay:
    """A loopback relay that answers each command line with what `script` says, and notes how
    many bytes it got written before the client went away."""

    def __init__(self, script: Script, *, hold: bool = True) -> None:
        self.script = script
        self.hold = hold
        self.closed = asyncio.Event()
        self.written = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = b""
            while True:
                quit_ = line.upper().startswith(b"QUIT")
                answer = b"221 bye\r\n" if quit_ else self.script(line)
                writer.write(answer)
                await writer.drain()
                self.written += len(answer)
                line = await reader.readline()
                if not line:
                    break
                if line.upper().startswith(b"DATA"):
                    writer.write(b"354 go ahead\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
        except ConnectionError:
            pass
        finally:
            self.closed.set()
            writer.close()


async def _submit_to(script: Script, **relay: Any) -> tuple[canary.Outcome | None, int]:
    scripted = _ScriptedRelay(script)
    server = await asyncio.start_server(scripted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        at = canary.Relay("127.0.0.1", port, starttls=False, recipient="c@canary.test", **relay)
        outcome = await asyncio.wait_for(canary.submit(at, "tok", timeout=30), timeout=60)
        await asyncio.wait_for(scripted.closed.wait(), timeout=15)
    finally:
        server.close()
    return outcome, scripted.written


def _greeting_of(lines: int, width: int = 10) -> Script:
    body = b"".join(b"220-" + b"x" * width + b"\r\n" for _ in range(lines))
    return lambda line: body if not line else b"250 ok\r\n"


async def test_an_endless_multi_line_greeting_is_a_protocol_failure_not_a_timeout() -> None:
    """smtplib's reader appended continuation lines without a bound: 1.9 GiB in 4 s. The relay
    here stops after 4 MiB of `220-` lines and waits; the old reader kept all of them and ran to
    the deadline, the bounded one gives up after MAX_REPLY_LINES."""
    outcome, _ = await _submit_to(_greeting_of(200_000))
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_PROTOCOL
    assert f"more than {canary.MAX_REPLY_LINES} lines" in outcome.message


async def test_a_reply_larger_than_its_bound_is_a_protocol_failure() -> None:
    outcome, _ = await _submit_to(_greeting_of(40, width=canary.MAX_REPLY_LINE - 10))
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_PROTOCOL
    assert f"larger than {canary.MAX_REPLY_BYTES} bytes" in outcome.message


async def test_the_whole_exchange_is_bounded_in_bytes() -> None:
    """Every reply within its own bounds, but each nearly as large as allowed: the submission
    stops reading at MAX_EXCHANGE_BYTES in all."""
    lines = canary.MAX_REPLY_BYTES // 200 - 1

    def big(line: bytes) -> bytes:
        code = b"220" if not line else b"250"
        return (
            b"".join(code + b"-" + b"y" * 190 + b"\r\n" for _ in range(lines)) + code + b" ok\r\n"
        )

    outcome, _ = await _submit_to(big)
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_PROTOCOL
    assert f"more than {canary.MAX_EXCHANGE_BYTES} bytes" in outcome.message


async def test_a_huge_refusal_becomes_a_short_message() -> None:
    """A 550 of many long lines (a 160 MB one became the stored and shown message)."""
    refusal = b"".join(b"550-" + b"z" * 900 + b"\r\n" for _ in range(15)) + b"550 no\r\n"

    def refuse_mail(line: bytes) -> bytes:
        if not line:
            return b"220 relay\r\n"
        return refusal if line.upper().startswith(b"MAIL") else b"250 ok\r\n"

    outcome, _ = await _submit_to(refuse_mail)
    assert outcome is not None and outcome.reason is CanaryReason.SUBMIT_REFUSED
    assert len(outcome.message) <= MESSAGE_CHARS and outcome.message.isprintable()
    assert outcome.message.startswith("relay refused")


async def test_a_well_behaved_relay_takes_the_canary() -> None:
    """The bounded reader still speaks smtplib's dialogue: greeting, EHLO, MAIL, RCPT, DATA."""
    ehlo = b"250-relay\r\n250-PIPELINING\r\n250 8BITMIME\r\n"

    def good(line: bytes) -> bytes:
        if not line:
            return b"220 relay ready\r\n"
        return ehlo if line.upper().startswith(b"EHLO") else b"250 ok\r\n"

    outcome, _ = await _submit_to(good)
    assert outcome is None


def test_an_outcome_message_is_one_short_line_whoever_builds_it() -> None:
    outcome = canary.Outcome("relay-1", "tok", None, CanaryReason.MISSING, "a\nb" * 100_000)
    assert len(outcome.message) <= MESSAGE_CHARS and outcome.message.isprintable()

"""The canary book: submissions paired with arrivals, deadlines, bounds. Values only."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tests.support.smtpclients import free_port
from tlsprobe.model import CanaryReason
from tlsprobe.probe.send import canary


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

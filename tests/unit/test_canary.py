"""The canary book: submissions paired with arrivals, deadlines, bounds. Values only."""

from __future__ import annotations

import asyncio

from tests.support.smtpclients import free_port
from tlsprobe.model import CanaryReason
from tlsprobe.probe import canary


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

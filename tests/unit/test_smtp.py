"""Bytes-level tests of the sans-IO SMTP client: scripted server output, no sockets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsprobe.model import Reason
from tlsprobe.probe.smtp.client import (
    Done,
    Event,
    Failed,
    NeedData,
    Reply,
    ReplyParser,
    Send,
    SmtpClient,
    SmtpError,
    StartTls,
)

GREETING = b"220 mx.example.test ESMTP\r\n"
EHLO_STARTTLS = b"250-mx.example.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
GO_AHEAD = b"220 2.0.0 Ready to start TLS\r\n"
EHLO_TLS = b"250-mx.example.test\r\n250-SIZE 1000\r\n250 AUTH PLAIN\r\n"


def run(client: SmtpClient, chunks: Iterable[bytes]) -> tuple[Event, list[bytes]]:
    """Drive the client like a transport would: each NeedData consumes the next server chunk.

    Returns the final event (Done or Failed) and every command the client sent.
    """
    pending: Iterator[bytes] = iter(chunks)
    sent: list[bytes] = []
    for _ in range(1000):
        event = client.next_event()
        if isinstance(event, Send):
            sent.append(event.data)
        elif isinstance(event, StartTls):
            client.tls_started()
        elif isinstance(event, NeedData):
            client.receive_data(next(pending))
        else:
            return event, sent
    raise AssertionError("client never finished")


def failed(event: Event, reason: Reason) -> Failed:
    assert isinstance(event, Failed), event
    assert event.reason is reason, event
    return event


def until_starttls_reply(client: SmtpClient) -> None:
    """Bring a STARTTLS-mode client to the point where it waits for the reply to STARTTLS."""
    for chunk in (GREETING, EHLO_STARTTLS):
        assert client.next_event() == NeedData()
        client.receive_data(chunk)
        assert isinstance(client.next_event(), Send)
    assert client.phase == "starttls"


# ReplyParser ---------------------------------------------------------------------------------


def test_parser_single_and_multi_line_replies() -> None:
    parser = ReplyParser()
    replies = parser.feed(b"220 hello there\r\n250-first\r\n250-second\r\n250\r\n")
    assert replies == [Reply(220, ("hello there",)), Reply(250, ("first", "second", ""))]
    assert replies[1].text == "first / second / "
    assert parser.buffered == b""


def test_parser_one_byte_at_a_time_matches_one_feed() -> None:
    data = b"220-mx.example.test\r\n220-second line\r\n220 ready\r\n"
    parser = ReplyParser()
    replies: list[Reply] = []
    for index in range(len(data)):
        replies += parser.feed(data[index : index + 1])
        if index < len(data) - 1:
            assert replies == []
            assert parser.buffered == data[: index + 1]
    assert replies == [Reply(220, ("mx.example.test", "second line", "ready"))]
    assert parser.buffered == b""


def test_parser_accepts_bare_lf_and_keeps_stray_cr_as_text() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-a\n250-b\r\n250 c\r\r\n") == [Reply(250, ("a", "b", "c\r"))]


def test_parser_replaces_undecodable_text_bytes() -> None:
    assert ReplyParser().feed(b"220 caf\xc3\xa9 \xff\r\n") == [Reply(220, ("caf\u00e9 \ufffd",))]


def test_parser_buffered_holds_the_unfinished_reply() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-one\r\n250-tw") == []
    assert parser.buffered == b"250-one\r\n250-tw"


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n"])
def test_parser_line_of_exactly_max_line_is_accepted(terminator: bytes) -> None:
    line = b"250 " + b"x" * (4096 - 4)
    assert ReplyParser().feed(line + terminator) == [Reply(250, ("x" * 4092,))]


def test_parser_partial_line_ending_in_cr_at_max_line_is_not_yet_overlong() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250 " + b"x" * (4096 - 4) + b"\r") == []
    assert parser.feed(b"\n") == [Reply(250, ("x" * 4092,))]


@pytest.mark.parametrize("terminator", [b"\r\n", b""])
def test_parser_line_over_max_line_is_protocol_error(terminator: bytes) -> None:
    with pytest.raises(SmtpError) as caught:
        ReplyParser().feed(b"250 " + b"x" * (4096 - 3) + terminator)
    assert caught.value.reason is Reason.PROTOCOL
    assert "4096" in caught.value.message


def test_parser_overlong_partial_line_detected_across_feeds() -> None:
    parser = ReplyParser(max_line=10)
    assert parser.feed(b"250 xxxxxx") == []
    with pytest.raises(SmtpError):
        parser.feed(b"y")


def test_parser_reply_over_max_reply_from_short_lines() -> None:
    line = b"250-" + b"x" * 60 + b"\r\n"
    fits = 65536 // len(line)
    parser = ReplyParser()
    assert parser.feed(line * fits) == []
    assert len(parser.buffered) == fits * len(line) <= 65536
    with pytest.raises(SmtpError) as caught:
        parser.feed(line)
    assert caught.value.reason is Reason.PROTOCOL
    assert "65536" in caught.value.message


def test_parser_reply_of_exactly_max_reply_is_accepted() -> None:
    parser = ReplyParser(max_line=16, max_reply=32)
    assert parser.feed(b"250-abcdefghijk\r\n250 abcdefghi\r\n") == [
        Reply(250, ("abcdefghijk", "abcdefghi"))
    ]


def test_parser_mismatched_codes_in_multi_line_reply() -> None:
    with pytest.raises(SmtpError) as caught:
        ReplyParser().feed(b"250-mx.example.test\r\n220 STARTTLS\r\n")
    assert caught.value.reason is Reason.PROTOCOL
    assert "250" in caught.value.message
    assert "220" in caught.value.message


@pytest.mark.parametrize(
    "line",
    [
        b"abc hello",
        b"2x0 hello",
        b"25 short",
        b"25",
        b"",
        b"150 preliminary",
        b"650 out of range",
        b"250x glued",
        b"250\thello",
        b" 250 leading space",
        b"\xff\xfe\xfd",
        b"\xd9\xa2\xd9\xa5\xd9\xa0 arabic-indic digits",
    ],
)
def test_parser_malformed_code_is_protocol_error(line: bytes) -> None:
    with pytest.raises(SmtpError) as caught:
        ReplyParser().feed(line + b"\r\n")
    assert caught.value.reason is Reason.PROTOCOL
    assert "\n" not in caught.value.message


def test_parser_stays_broken_after_an_error() -> None:
    parser = ReplyParser()
    with pytest.raises(SmtpError):
        parser.feed(b"garbage\r\n")
    with pytest.raises(SmtpError):
        parser.feed(b"220 fine now\r\n")
    assert parser.buffered == b""


# SmtpClient: the STARTTLS dialogue ----------------------------------------------------------


def test_full_starttls_dialogue() -> None:
    client = SmtpClient("probe.example.net")
    assert client.starttls_offered is None
    final, sent = run(client, [GREETING, EHLO_STARTTLS, GO_AHEAD, EHLO_TLS])
    assert final == Done()
    assert sent == [
        b"EHLO probe.example.net\r\n",
        b"STARTTLS\r\n",
        b"EHLO probe.example.net\r\n",
        b"QUIT\r\n",
    ]
    assert client.phase == "done"
    assert client.starttls_offered is True
    # The post-TLS EHLO is the authoritative one.
    assert client.capabilities == frozenset({"SIZE", "AUTH"})
    assert client.transcript == (
        "S: 220 mx.example.test ESMTP",
        "C: EHLO probe.example.net",
        "S: 250-mx.example.test",
        "S: 250-PIPELINING",
        "S: 250 STARTTLS",
        "C: STARTTLS",
        "S: 220 2.0.0 Ready to start TLS",
        "C: EHLO probe.example.net",
        "S: 250-mx.example.test",
        "S: 250-SIZE 1000",
        "S: 250 AUTH PLAIN",
        "C: QUIT",
    )


def test_phases_in_order() -> None:
    client = SmtpClient("probe.example.net")
    seen = [client.phase]
    for chunk in (GREETING, EHLO_STARTTLS, GO_AHEAD):
        client.receive_data(chunk)
        client.next_event()
        seen.append(client.phase)
    assert client.next_event() == StartTls()  # repeated until the transport reacts
    client.tls_started()
    seen.append(client.phase)
    client.next_event()
    client.receive_data(EHLO_TLS)
    assert client.next_event() == Send(b"QUIT\r\n")
    seen.append(client.phase)
    client.next_event()
    seen.append(client.phase)
    assert seen == ["banner", "ehlo", "starttls", "handshake", "ehlo_tls", "quit", "done"]


def test_multi_line_greeting_one_byte_at_a_time_waits_for_final_line() -> None:
    greeting = b"220-mx.example.test ESMTP\r\n220-no UCE\r\n220 welcome\r\n"
    client = SmtpClient("probe.example.net")
    for index in range(len(greeting) - 1):
        client.receive_data(greeting[index : index + 1])
        assert client.next_event() == NeedData()
    client.receive_data(greeting[-1:])
    assert client.next_event() == Send(b"EHLO probe.example.net\r\n")


def test_ehlo_reply_split_across_reads() -> None:
    client = SmtpClient("probe.example.net")
    ehlo = [b"250-mx.exa", b"mple.test\r\n250-SIZE 10", b"00\r\n250 STAR", b"TTLS\r\n"]
    final, sent = run(client, [GREETING, *ehlo, GO_AHEAD, EHLO_TLS])
    assert final == Done()
    assert sent[1] == b"STARTTLS\r\n"


def test_lower_case_keyword_and_bare_lf() -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(
        client,
        [b"220 hi\n", b"250-mx\n250-starttls\n250 8bitmime\n", b"220 go\n", b"250 mx\n"],
    )
    assert final == Done()
    assert client.starttls_offered is True
    assert sent[1] == b"STARTTLS\r\n"


def test_no_starttls_offered() -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(client, [GREETING, b"250-mx.example.test\r\n250-SIZE 1\r\n250 STARTTLSX\r\n"])
    event = failed(final, Reason.NO_STARTTLS)
    assert "SIZE" in event.message
    assert sent == [b"EHLO probe.example.net\r\n"]
    assert client.starttls_offered is False
    assert client.capabilities == frozenset({"SIZE", "STARTTLSX"})


def test_starttls_in_first_ehlo_line_is_the_domain_not_a_keyword() -> None:
    client = SmtpClient("probe.example.net")
    final, _ = run(client, [GREETING, b"250 STARTTLS\r\n"])
    failed(final, Reason.NO_STARTTLS)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"421 4.3.2 Service not available, try later\r\n"],
        [b"421-busy\r\n421 try later\r\n"],
        [GREETING, b"421 4.7.0 too many connections\r\n"],
        [GREETING, EHLO_STARTTLS, b"421 4.7.0 closing\r\n"],
        [GREETING, EHLO_STARTTLS, GO_AHEAD, b"421 4.7.0 closing\r\n"],
    ],
    ids=["greeting", "greeting-multiline", "ehlo", "starttls", "ehlo-after-tls"],
)
def test_421_anywhere_is_throttling(chunks: list[bytes]) -> None:
    event = failed(run(SmtpClient("probe.example.net"), chunks)[0], Reason.THROTTLED)
    assert "421" in event.message


def test_421_followed_by_garbage_in_the_same_read_is_still_throttling() -> None:
    final, _ = run(SmtpClient("probe.example.net"), [b"421 busy\r\n\x16\x03\x01garbage\r\n"])
    failed(final, Reason.THROTTLED)


def test_greeting_554_is_protocol_with_server_text() -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(client, [b"554-5.7.1 No service for you\r\n554 go away\r\n"])
    event = failed(final, Reason.PROTOCOL)
    assert "554 5.7.1 No service for you / go away" in event.message
    assert sent == []


def test_long_server_text_is_clipped_in_the_message() -> None:
    final, _ = run(SmtpClient("probe.example.net"), [b"554 " + b"x" * 3000 + b"\r\n"])
    event = failed(final, Reason.PROTOCOL)
    assert 100 < len(event.message) <= 250


def test_ehlo_rejected_is_protocol() -> None:
    final, _ = run(SmtpClient("probe.example.net"), [GREETING, b"502 5.5.1 unrecognised\r\n"])
    assert "502" in failed(final, Reason.PROTOCOL).message


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"454 4.7.0 TLS not available due to local problem\r\n", Reason.STARTTLS_REJECTED),
        (b"452 4.3.1 insufficient resources\r\n", Reason.STARTTLS_REJECTED),
        (b"501 5.5.4 syntax error\r\n", Reason.STARTTLS_REJECTED),
        (b"554 5.7.0 no TLS for you\r\n", Reason.STARTTLS_REJECTED),
        (b"421 4.7.0 closing\r\n", Reason.THROTTLED),
        (b"250 2.0.0 ok\r\n", Reason.PROTOCOL),
        (b"354 go ahead\r\n", Reason.PROTOCOL),
    ],
)
def test_reply_to_starttls(reply: bytes, reason: Reason) -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(client, [GREETING, EHLO_STARTTLS, reply])
    event = failed(final, reason)
    assert reply[:3].decode() in event.message
    assert sent == [b"EHLO probe.example.net\r\n", b"STARTTLS\r\n"]


# Response injection after 220 to STARTTLS ------------------------------------------------------


def test_starttls_returned_only_when_nothing_follows_the_220() -> None:
    client = SmtpClient("probe.example.net")
    until_starttls_reply(client)
    client.receive_data(GO_AHEAD)
    assert client.next_event() == StartTls()
    assert client.phase == "handshake"


@pytest.mark.parametrize(
    "chunks",
    [
        [GO_AHEAD + b"250 injected\r\n"],
        [GO_AHEAD + b"2"],
        [GO_AHEAD + b"\x16\x03\x01\x00"],
        [GO_AHEAD, b"250-injected\r\n"],
        [b"220 go", b"\r\n250 inj", b"ected\r\n"],
    ],
    ids=["same-chunk", "same-chunk-one-byte", "same-chunk-garbage", "second-chunk", "split"],
)
def test_bytes_after_220_to_starttls_are_injection(chunks: list[bytes]) -> None:
    client = SmtpClient("probe.example.net")
    until_starttls_reply(client)
    # The transport feeds everything it read before asking what to do next.
    for chunk in chunks:
        client.receive_data(chunk)
    event = failed(client.next_event(), Reason.PROTOCOL)
    assert "injection" in event.message
    assert client.phase == "failed"
    client.tls_started()  # a confused transport cannot revive the dialogue
    assert client.next_event() == event


def test_bytes_arriving_after_starttls_event_are_injection() -> None:
    client = SmtpClient("probe.example.net")
    until_starttls_reply(client)
    client.receive_data(GO_AHEAD)
    assert client.next_event() == StartTls()
    client.receive_data(b"250 late injected reply\r\n")
    assert "injection" in failed(client.next_event(), Reason.PROTOCOL).message
    client.tls_started()  # ignored: the failure stands
    assert client.phase == "failed"


def test_nothing_from_plaintext_carries_over_into_tls() -> None:
    client = SmtpClient("probe.example.net")
    until_starttls_reply(client)
    client.receive_data(GO_AHEAD)
    assert client.next_event() == StartTls()
    client.tls_started()
    assert client.next_event() == Send(b"EHLO probe.example.net\r\n")
    assert client.next_event() == NeedData()
    client.receive_data(b"250-mx\r\n")
    assert client.next_event() == NeedData()
    client.receive_data(b"250 SIZE\r\n")
    assert client.next_event() == Send(b"QUIT\r\n")
    assert client.next_event() == Done()


# After TLS -----------------------------------------------------------------------------------


def test_post_tls_ehlo_failure_is_protocol_and_sends_no_quit() -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(client, [GREETING, EHLO_STARTTLS, GO_AHEAD, b"550 5.7.1 go away\r\n"])
    assert "550" in failed(final, Reason.PROTOCOL).message
    assert sent[-1] == b"EHLO probe.example.net\r\n"


def test_done_right_after_quit_and_later_data_ignored() -> None:
    client = SmtpClient("probe.example.net")
    final, sent = run(client, [GREETING, EHLO_STARTTLS, GO_AHEAD, EHLO_TLS])
    assert final == Done()
    assert sent[-1] == b"QUIT\r\n"
    before = client.transcript
    client.receive_data(b"221 2.0.0 Bye\r\n")
    client.receive_data(b"")
    assert client.next_event() == Done()
    assert client.transcript == before


# Implicit TLS --------------------------------------------------------------------------------


def test_implicit_tls_flow() -> None:
    client = SmtpClient("probe.example.net", starttls=False)
    final, sent = run(client, [GREETING, b"250-mx.example.test\r\n250 SIZE 1000\r\n"])
    assert final == Done()
    assert sent == [b"EHLO probe.example.net\r\n", b"QUIT\r\n"]
    assert client.starttls_offered is None
    assert client.capabilities == frozenset({"SIZE"})


def test_implicit_tls_never_asks_for_a_handshake() -> None:
    client = SmtpClient("probe.example.net", starttls=False)
    with pytest.raises(RuntimeError):
        client.tls_started()
    # Not offering STARTTLS over TLS is normal, not a failure.
    final, _ = run(client, [GREETING, b"250 mx.example.test\r\n"])
    assert final == Done()


def test_implicit_tls_421_is_throttling() -> None:
    final, _ = run(SmtpClient("x.test", starttls=False), [GREETING, b"421 later\r\n"])
    failed(final, Reason.THROTTLED)


# Protocol garbage, EOF, unsolicited data ----------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [
        [b"HTTP/1.1 400 Bad Request\r\n"],
        [b"SSH-2.0-OpenSSH_9.6\r\n"],
        [GREETING, b"250-mx\r\n220 STARTTLS\r\n"],
        [GREETING, b"250 " + b"x" * 4093 + b"\r\n"],
        [GREETING, b"250 " + b"x" * 5000],
        [GREETING, b"250-" + b"x" * 60 + b"\r\n"] + [b"250-" + b"x" * 60 + b"\r\n"] * 1100,
    ],
    ids=["http", "ssh", "mismatched-codes", "overlong-line", "overlong-partial", "huge-reply"],
)
def test_garbage_is_protocol_error(chunks: list[bytes]) -> None:
    final, _ = run(SmtpClient("probe.example.net"), chunks)
    failed(final, Reason.PROTOCOL)


@pytest.mark.parametrize(
    ("chunks", "phase"),
    [
        ([b""], "banner"),
        ([b"220-mx.example.test\r\n220-still", b""], "banner"),
        ([GREETING, b"250-mx\r\n", b""], "ehlo"),
        ([GREETING, EHLO_STARTTLS, b""], "starttls"),
        ([GREETING, EHLO_STARTTLS, GO_AHEAD, b""], "ehlo_tls"),
    ],
)
def test_eof_while_waiting_for_a_reply(chunks: list[bytes], phase: str) -> None:
    client = SmtpClient("probe.example.net")
    event = failed(run(client, chunks)[0], Reason.PROTOCOL)
    assert event.message == f"connection closed by server during {phase}"
    assert client.phase == "failed"


def test_reply_then_eof_in_one_go_still_judges_the_reply() -> None:
    client = SmtpClient("probe.example.net")
    client.receive_data(b"554 no\r\n")
    client.receive_data(b"")
    assert "554" in failed(client.next_event(), Reason.PROTOCOL).message


def test_unsolicited_reply_after_greeting() -> None:
    client = SmtpClient("probe.example.net")
    client.receive_data(GREETING + b"250 early\r\n")
    assert "unsolicited" in failed(client.next_event(), Reason.PROTOCOL).message


def test_failure_is_sticky_and_later_data_ignored() -> None:
    client = SmtpClient("probe.example.net")
    client.receive_data(b"554 no\r\n")
    event = client.next_event()
    assert isinstance(event, Failed)
    client.receive_data(GREETING)
    client.receive_data(b"")
    assert client.next_event() == event
    assert client.next_event() == event
    assert client.phase == "failed"


# Transcript bounds ---------------------------------------------------------------------------


def test_transcript_bounded_for_a_huge_ehlo_reply() -> None:
    lines = b"".join(b"250-KEYWORD%d\r\n" % n for n in range(3000))
    long_line = b"250-" + b"y" * 4000 + b"\r\n"
    client = SmtpClient("probe.example.net")
    final, _ = run(client, [GREETING, lines + long_line + b"250 STARTTLS\r\n", b"454 no\r\n"])
    failed(final, Reason.STARTTLS_REJECTED)
    transcript = client.transcript
    assert len(transcript) <= 201
    assert all(len(line) <= 300 for line in transcript)
    # The commands after the huge reply are still visible.
    assert "C: STARTTLS" in transcript
    assert "S: 454 no" in transcript
    assert len(client.capabilities) == 3001  # the first line is the domain


def test_transcript_bounded_for_a_flood_of_replies() -> None:
    client = SmtpClient("probe.example.net")
    for _ in range(50):
        client.receive_data(b"220 hi\r\n" * 100)
    failed(client.next_event(), Reason.PROTOCOL)
    assert len(client.transcript) <= 201


def test_transcript_long_line_clipped_and_control_characters_made_printable() -> None:
    client = SmtpClient("probe.example.net")
    client.receive_data(b"220 " + b"z" * 1000 + b"\x1b[31m\r\n")
    client.next_event()
    first = client.transcript[0]
    assert first.startswith("S: 220 zzz")
    assert len(first) <= 300
    assert first.isprintable()


# ehlo_name validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["localhost", "probe.example.net", "mx1", "a-b.example", "[192.0.2.1]", "[IPv6:2001:db8::1]"],
)
def test_valid_ehlo_names(name: str) -> None:
    client = SmtpClient(name)
    client.receive_data(GREETING)
    assert client.next_event() == Send(f"EHLO {name}\r\n".encode())


@pytest.mark.parametrize(
    "name",
    [
        "",
        "probe example",
        "probe.example\r\nMAIL FROM:<a@b>",
        "probe.example\n",
        "probe\rexample",
        "-bad.example",
        "bad-.example",
        "a..b",
        "trailing.dot.",
        "x" * 64 + ".example",
        ".".join(["abcdefghi"] * 30),
        "b\u00fccher.example",
        "[999.1.1.1]",
        "[2001:db8::1]",
        "[IPv6:192.0.2.1]",
        "[192.0.2.1",
        "2001:db8::1",
    ],
)
def test_ehlo_name_injection_and_junk_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="ehlo_name"):
        SmtpClient(name)


# Property tests: arbitrary bytes never raise anything but SmtpError --------------------------

SMTP_PIECES = st.sampled_from(
    [
        b"220 hi\r\n",
        b"220-multi\r\n",
        b"250-mx\r\n",
        b"250-starttls\r\n",
        b"250 STARTTLS\r\n",
        b"250 ok\n",
        b"421 busy\r\n",
        b"454 no\r\n",
        b"\r\n",
        b"\r",
        b"\n",
        b"",
    ]
)
STREAMS = st.lists(st.one_of(SMTP_PIECES, st.binary(max_size=40)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(chunks=STREAMS)
def test_parser_only_ever_returns_replies_or_raises_smtp_error(chunks: list[bytes]) -> None:
    parser = ReplyParser(max_line=64, max_reply=256)
    try:
        for chunk in chunks:
            for reply in parser.feed(chunk):
                assert 200 <= reply.code <= 599
                assert reply.lines
            assert len(parser.buffered) <= 256 + 65
    except SmtpError as exc:
        assert isinstance(exc.reason, Reason)


def feed_all(chunks: list[bytes]) -> list[Reply] | Reason:
    parser = ReplyParser(max_line=64, max_reply=256)
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            replies += parser.feed(chunk)
    except SmtpError as exc:
        return exc.reason
    return replies


@settings(max_examples=300, deadline=None)
@given(chunks=STREAMS)
def test_parser_result_does_not_depend_on_chunking(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    by_byte = [whole[i : i + 1] for i in range(len(whole))]
    assert feed_all(chunks) == feed_all([whole]) == feed_all(by_byte)


@settings(max_examples=300, deadline=None)
@given(chunks=STREAMS, starttls=st.booleans())
def test_client_turns_any_input_into_events(chunks: list[bytes], starttls: bool) -> None:
    client = SmtpClient("probe.example.net", starttls=starttls, max_line=64, max_reply=256)
    pending = iter([*chunks, b""])  # always end with EOF so the dialogue must finish
    for _ in range(200):
        event = client.next_event()
        if isinstance(event, StartTls):
            client.tls_started()
        elif isinstance(event, NeedData):
            client.receive_data(next(pending))
        elif isinstance(event, Failed | Done):
            assert client.next_event() == event
            assert client.phase == ("done" if isinstance(event, Done) else "failed")
            break
    else:
        raise AssertionError("client never finished")
    assert len(client.transcript) <= 201


@pytest.mark.parametrize(
    "reads", [[b"250-a\r\n250-b\r\n250 c\r\n"], [b"250-a\r\n", b"250-b\r\n250 c\r\n"]]
)
def test_a_reply_over_its_line_count_is_refused(reads: list[bytes]) -> None:
    """One read (the fast path) or several: the line count bounds the reply either way."""
    parser = ReplyParser(max_lines=2)
    with pytest.raises(SmtpError, match="more than 2 lines"):
        for data in reads:
            parser.feed(data)
    assert ReplyParser(max_lines=3).feed(b"".join(reads)) == [Reply(250, ("a", "b", "c"))]

"""Bytes-level tests of the sans-IO SMTP server (the receiver): scripted input, no sockets."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tlsprobe.model import Reason
from tlsprobe.probe.smtp.client import Done, Failed, NeedData, Send, StartTls
from tlsprobe.probe.smtp.server import Limits, MessageReceived, SmtpServer, State

CANARY = "canary@receiver.test"


def server(limits: Limits | None = None) -> SmtpServer:
    return SmtpServer("receiver.test", accept_recipient=lambda a: a == CANARY, limits=limits)


class Run:
    """Drive the server like a transport: feed chunks on NeedData, do 'TLS' on StartTls."""

    def __init__(self, srv: SmtpServer) -> None:
        self.srv = srv
        self.replies = b""
        self.messages: list[MessageReceived] = []
        self.final: Done | Failed | None = None

    def feed(self, chunks: Iterable[bytes], *, tls_at_starttls: bool = True) -> Run:
        pending = list(chunks)
        for _ in range(1000):
            event = self.srv.next_event()
            if isinstance(event, Send):
                self.replies += event.data
            elif isinstance(event, MessageReceived):
                self.messages.append(event)
            elif isinstance(event, StartTls):
                if not tls_at_starttls:
                    return self
                self.srv.tls_started()
            elif isinstance(event, NeedData):
                if not pending:
                    return self
                self.srv.receive_data(pending.pop(0))
            else:
                self.final = event
                return self
        raise AssertionError("server never settled")

    def codes(self) -> list[int]:
        return [int(line[:3]) for line in self.replies.split(b"\r\n") if line[3:4] == b" "]


def good_dialogue(
    body: bytes = b"X-Tlsprobe-Canary: tok-1\r\nSubject: hi\r\n\r\nbody\r\n",
) -> list[bytes]:
    return [
        b"EHLO relay.contoso.test\r\n",
        b"STARTTLS\r\n",
        b"EHLO relay.contoso.test\r\n",
        b"MAIL FROM:<probe@contoso.test> SIZE=100\r\n",
        f"RCPT TO:<{CANARY}>\r\n".encode(),
        b"DATA\r\n",
        body + b".\r\n",
        b"QUIT\r\n",
    ]


def test_a_canary_is_received_its_token_kept_and_its_body_discarded() -> None:
    run = Run(server()).feed(good_dialogue())
    assert isinstance(run.final, Done)
    assert run.codes() == [220, 250, 220, 250, 250, 250, 354, 250, 221]
    [received] = run.messages
    assert received.message.token == "tok-1"
    assert received.message.recipients == (CANARY,)
    assert received.message.size == len(b"X-Tlsprobe-Canary: tok-1\r\nSubject: hi\r\n\r\nbody\r\n")
    assert b"body" not in repr(run.srv.__dict__).encode()
    assert run.srv.helo == "relay.contoso.test" and run.srv.tls


def test_starttls_is_offered_only_before_tls_and_auth_never() -> None:
    run = Run(server()).feed(good_dialogue()[:3])
    first, _, second = run.replies.partition(b"220 2.0.0")
    assert b"STARTTLS" in first and b"STARTTLS" not in second
    assert b"AUTH" not in run.replies


def test_mail_before_starttls_is_refused_with_530() -> None:
    run = Run(server()).feed([b"EHLO x.test\r\n", b"MAIL FROM:<a@b.test>\r\n", b"QUIT\r\n"])
    assert run.codes() == [220, 250, 530, 221]
    assert run.srv.plaintext_mail and not run.srv.messages


def test_plaintext_pipelined_behind_starttls_is_discarded_unread() -> None:
    injected = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<" + CANARY.encode() + b">\r\n"
    run = Run(server()).feed([b"EHLO x.test\r\n", b"STARTTLS\r\n" + injected, b"QUIT\r\n"])
    assert run.srv.discarded_plaintext == len(injected)
    # After TLS only QUIT was said: no MAIL or RCPT was ever answered.
    assert run.codes() == [220, 250, 220, 221]


def test_ehlo_is_required_again_after_tls() -> None:
    run = Run(server()).feed(
        [b"EHLO x.test\r\n", b"STARTTLS\r\n", b"MAIL FROM:<a@b.test>\r\n", b"QUIT\r\n"]
    )
    assert run.codes() == [220, 250, 220, 503, 221]


def test_relay_attempts_and_auth_are_refused_and_counted() -> None:
    chunks = [*good_dialogue()[:4], b"AUTH PLAIN AGFAYg==\r\n", b"RCPT TO:<x@outside.test>\r\n"]
    run = Run(server()).feed([*chunks, b"QUIT\r\n"])
    assert run.codes()[-3:] == [502, 550, 221]
    assert run.srv.auth_attempts == 1 and run.srv.refused_recipients == 1


def test_data_without_a_recipient_is_a_bad_sequence() -> None:
    run = Run(server()).feed([*good_dialogue()[:4], b"DATA\r\n", b"QUIT\r\n"])
    assert run.codes()[-2:] == [503, 221]


def test_an_oversize_line_ends_the_session() -> None:
    run = Run(server()).feed([b"EHLO " + b"a" * 5000])
    assert isinstance(run.final, Failed) and run.final.reason is Reason.PROTOCOL
    assert run.codes()[-2:] == [500, 421]


def test_an_oversize_message_ends_the_session_and_is_not_received() -> None:
    limits = Limits(max_message=1000)
    body = b"Subject: big\r\n\r\n" + b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n"
    run = Run(server(limits)).feed([*good_dialogue()[:6], body, b".\r\n"])
    assert isinstance(run.final, Failed)
    assert run.codes()[-2:] == [552, 421]
    assert not run.messages


def test_declared_size_over_the_limit_is_refused_at_mail() -> None:
    run = Run(server(Limits(max_message=1000))).feed(
        [*good_dialogue()[:3], b"MAIL FROM:<a@b.test> SIZE=5000\r\n"]
    )
    assert run.codes()[-1] == 552


def test_too_many_errors_close_the_session() -> None:
    run = Run(server(Limits(max_errors=3))).feed([b"BOGUS\r\n"] * 10)
    assert isinstance(run.final, Failed)
    assert run.codes() == [220, 500, 500, 500, 421]


def test_a_noop_or_rset_flood_is_closed_at_the_command_bound() -> None:
    """NOOP and RSET are no errors: without a bound a session could send them for ever."""
    flood = b"NOOP\r\nRSET\r\n" * 10
    run = Run(server(Limits(max_commands=12))).feed([b"EHLO x.test\r\n", flood])
    assert isinstance(run.final, Failed) and run.final.reason is Reason.PROTOCOL
    assert run.codes() == [220, 250, *[250] * 11, 421]
    assert run.srv.transcript.lines()[-1] == "S: 421 4.7.0 Too many commands in this session"


def test_end_of_stream_mid_dialogue_is_a_failure() -> None:
    run = Run(server()).feed([b"EHLO x.test\r\n", b""])
    assert isinstance(run.final, Failed) and run.final.reason is Reason.PROTOCOL


def test_too_many_messages_in_one_session() -> None:
    dialogue = good_dialogue()
    transaction = dialogue[3:7]
    run = Run(server(Limits(max_messages=1))).feed([*dialogue[:3], *transaction, *transaction])
    assert len(run.messages) == 1
    assert isinstance(run.final, Failed) and run.codes()[-1] == 421


@pytest.mark.parametrize(
    "header",
    [b"X-Tlsprobe-Canary: has space\r\n", b"X-Tlsprobe-Canary: " + b"a" * 65 + b"\r\n", b""],
)
def test_malformed_or_missing_tokens_are_none(header: bytes) -> None:
    run = Run(server()).feed(good_dialogue(header + b"Subject: x\r\n\r\nbody\r\n"))
    assert run.messages[0].message.token is None


def test_a_token_in_the_body_does_not_count() -> None:
    run = Run(server()).feed(good_dialogue(b"Subject: x\r\n\r\nX-Tlsprobe-Canary: tok\r\n"))
    assert run.messages[0].message.token is None


def test_data_arriving_during_the_handshake_is_not_read_as_smtp() -> None:
    srv = server()
    run = Run(srv).feed([b"EHLO x.test\r\n", b"STARTTLS\r\n"], tls_at_starttls=False)
    assert srv.state is State.HANDSHAKE
    srv.receive_data(b"MAIL FROM:<a@b.test>\r\n")
    srv.tls_started()
    run.feed([b"QUIT\r\n"])
    assert run.codes()[-1] == 221 and 250 not in run.codes()[2:]

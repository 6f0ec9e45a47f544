"""`ReplyParser`'s one-reply fast path gives what the line-by-line path gives, for any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tlsprobe.probe.smtp.reply import Reply, ReplyParser, SmtpError


class _LineByLine(ReplyParser):
    """The parser with its fast path off: the reference."""

    def _one_reply(self, replies: list[Reply]) -> bool:
        return False


def _outcome(parser: ReplyParser, chunks: list[bytes]) -> list[object]:
    seen: list[object] = []
    for chunk in chunks:
        replies, error = parser.take(chunk)
        seen.append((replies, None if error is None else (error.reason, error.message)))
        seen.append((parser.has_buffered, parser.buffered))
    return seen


def _same(chunks: list[bytes], **limits: int) -> None:
    fast, slow = ReplyParser(**limits), _LineByLine(**limits)
    assert _outcome(fast, chunks) == _outcome(slow, chunks)


# Lines close to the grammar, so that both well-formed replies and near misses are common.
_codes = st.sampled_from([b"250", b"220", b"221", b"421", b"554", b"199", b"25", b"2x0", b""])
_seps = st.sampled_from([b" ", b"-", b"", b"\r", b"\t"])
_texts = st.binary(max_size=12) | st.sampled_from([b"STARTTLS", b"\xe2\x82", b"caf\xc3\xa9", b""])
_ends = st.sampled_from([b"\r\n", b"\n", b"\r\r\n", b""])
_lines = st.builds(lambda c, s, t, e: c + s + t + e, _codes, _seps, _texts, _ends)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_lines, min_size=1, max_size=6).map(b"".join), min_size=1, max_size=3))
def test_fast_path_equals_line_by_line(chunks: list[bytes]) -> None:
    _same(chunks)


@settings(max_examples=100, deadline=None)
@given(st.lists(_lines, min_size=1, max_size=8).map(b"".join))
def test_fast_path_respects_small_limits(data: bytes) -> None:
    _same([data], max_line=8, max_reply=16)


def test_postfix_ehlo_in_one_read() -> None:
    data = b"250-mail.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 CHUNKING\r\n"
    replies = ReplyParser().feed(data)
    assert replies == [Reply(250, ("mail.example", "PIPELINING", "STARTTLS", "CHUNKING"))]
    _same([data])


def test_errors_still_come_from_the_line_by_line_path() -> None:
    parser = ReplyParser()
    replies, error = parser.take(b"250-a\r\n220 b\r\n")
    assert replies == []
    assert isinstance(error, SmtpError)
    assert "changed code from 250 to 220" in error.message

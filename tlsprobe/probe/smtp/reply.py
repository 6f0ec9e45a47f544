"""SMTP replies as bounded values, and the bounded transcript of a dialogue.

`ReplyParser` turns received bytes into complete `Reply` values (RFC 5321 section 4.2), each
line and each reply bounded in size; anything else is an `SmtpError` with a `Reason`.
`Transcript` keeps the `S: ` / `C: ` lines for `/probe?debug=true` and `--verbose`, bounded in
count and width. Both sides use them: the client (`client`) and the receiver (`server`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlsprobe.model import Reason

MESSAGE_CHARS = 200
_TRANSCRIPT_LINES = 200
_TRANSCRIPT_CHARS = 300
_TRANSCRIPT_LINES_PER_REPLY = 30
"""A 64 KiB EHLO reply must not crowd the later commands out of the transcript."""
MAX_QUEUED_REPLIES = 16
"""Lock-step dialogue: more than one queued reply is already an error; this only bounds memory."""


def clip(text: str, limit: int) -> str:
    """One printable line of at most `limit` characters, for messages and the transcript."""
    if len(text) <= limit and text.isprintable():
        return text  # the common case, without a per-character pass
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SmtpError(Exception):
    """Raised by `ReplyParser`; `SmtpClient` turns it into a `Failed` event."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete server reply; every line of it carries `code`."""

    code: int
    lines: tuple[str, ...]
    """Text after the code and separator, one entry per line (empty for a bare `250`)."""

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    def describe(self) -> str:
        """`code text`, clipped to one line for messages."""
        return clip(f"{self.code} {self.text}".rstrip(), MESSAGE_CHARS)


class ReplyParser:
    """Feeds bytes, yields complete replies. Bounded.

    Holds at most one partial line (`max_line` bytes) plus the lines of the reply being
    assembled (`max_reply` bytes, and `max_lines` lines when given); anything larger is a
    protocol error, as is any line that is not `ddd`, `ddd text` or `ddd-text`. After an error
    the parser stays broken: every later `feed` raises again rather than resynchronising on
    attacker-chosen bytes.
    """

    def __init__(
        self, *, max_line: int = 4096, max_reply: int = 65536, max_lines: int | None = None
    ) -> None:
        if max_line < 3 or max_reply < max_line or (max_lines is not None and max_lines < 1):
            raise ValueError("need max_line >= 3, max_reply >= max_line and max_lines >= 1")
        self._max_line = max_line
        self._max_reply = max_reply
        self._max_lines = max_reply if max_lines is None else max_lines
        self._buffer = bytearray()
        self._code = 0
        self._lines: list[str] = []
        self._raw = bytearray()
        """Bytes of the lines already taken into the unfinished reply, for `buffered`."""
        self._error: SmtpError | None = None

    @property
    def buffered(self) -> bytes:
        """Bytes received but not yet part of a complete reply."""
        return bytes(self._raw + self._buffer)

    @property
    def has_buffered(self) -> bool:
        """Whether any byte was received that is not yet part of a complete reply."""
        return bool(self._raw or self._buffer)

    def feed(self, data: bytes) -> list[Reply]:
        replies, error = self.take(data)
        if error is None:
            return replies
        try:
            raise error
        finally:
            del error  # no cycle exception -> traceback -> this frame -> exception

    def take(self, data: bytes) -> tuple[list[Reply], SmtpError | None]:
        """Like `feed`, but an error comes back with the replies completed before it (a 421
        followed by garbage in the same read still counts), instead of being raised."""
        if self._error is not None:
            return [], SmtpError(self._error.reason, self._error.message)
        self._buffer += data
        replies: list[Reply] = []
        try:
            self._drain(replies)
        except SmtpError as exc:
            # Kept without its traceback: the frames would hold on to the bytes just read.
            self._error = SmtpError(exc.reason, exc.message)
            self._buffer.clear()
            self._raw.clear()
            self._lines.clear()
            return replies, exc.with_traceback(None)
        return replies, None

    def _drain(self, replies: list[Reply]) -> None:
        if self._one_reply(replies):
            return
        # Every complete line in one pass: a reply arrives in one read as a rule, so this is
        # one copy and one split per read rather than per line.
        buffer = self._buffer
        end = buffer.rfind(b"\n")
        if end >= 0:
            lines = bytes(buffer[: end + 1]).split(b"\n")
            del buffer[: end + 1]
            lines.pop()  # the empty piece after the last terminator
            for raw in lines:
                reply = self._take_line(raw)
                if reply is not None:
                    replies.append(reply)
        self._check_partial()

    def _one_reply(self, replies: list[Reply]) -> bool:
        """The common case in one step: the buffer is exactly one well-formed reply (what a
        lock-step server sends per read) and nothing is pending. Anything else, and every error,
        goes line by line; both ways give equal replies (tests/unit/test_smtp_reply_fast.py)."""
        buffer = self._buffer
        if (
            self._lines
            or len(buffer) > self._max_line
            or buffer.count(b"\n") > self._max_lines
            or _ONE_REPLY.fullmatch(buffer) is None
        ):
            return False
        # Shorter than one line, so within every line and reply bound. ASCII codes and CR/LF
        # cannot be part of a UTF-8 sequence, so decoding it whole equals decoding each text.
        text = buffer.decode("utf-8", "replace")
        if buffer.count(b"\r\n") == buffer.count(b"\n"):  # every line ends in CRLF: split on it
            lines = text.split("\r\n")
            lines.pop()  # the empty piece after the last CRLF
            texts = tuple([line[4:] for line in lines])
        else:
            lines = text.split("\n")
            lines.pop()
            texts = tuple([_text(line) for line in lines])
        code = int(buffer[:3])
        buffer.clear()
        replies.append(Reply(code, texts))
        return True

    def _check_partial(self) -> None:
        # A trailing CR may be the first half of CRLF, so it does not count yet.
        length = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
        if length > self._max_line:
            raise SmtpError(
                Reason.PROTOCOL,
                f"reply line longer than {self._max_line} bytes (no end of line yet)",
            )

    def _take_line(self, raw: bytes) -> Reply | None:
        """One line without its LF (a CR before it is still there)."""
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if len(line) > self._max_line:
            raise SmtpError(
                Reason.PROTOCOL, f"reply line of {len(line)} bytes exceeds {self._max_line}"
            )
        if len(self._raw) + len(raw) + 1 > self._max_reply:
            raise SmtpError(Reason.PROTOCOL, f"reply larger than {self._max_reply} bytes")
        # `ddd`, `ddd text` or `ddd-text`, first digit 2 to 5, a stray CR is text; checked by
        # hand rather than with a regular expression: this runs for every line of every reply.
        size = len(line)
        if (
            size < 3
            or line[0] not in _CODE_FIRST
            or not line[1:3].isdigit()
            or (size > 3 and line[3] not in _SEPARATORS)
        ):
            shown = clip(line[:60].decode("ascii", "replace"), 60)
            raise SmtpError(Reason.PROTOCOL, f"malformed reply line {shown!r}")
        code = int(line[:3])
        final = size == 3 or line[3] == 32
        text = line[4:].decode("utf-8", "replace") if size > 4 else ""
        if self._lines and code != self._code:
            raise SmtpError(
                Reason.PROTOCOL,
                f"multi-line reply changed code from {self._code} to {code}",
            )
        if len(self._lines) >= self._max_lines:
            raise SmtpError(Reason.PROTOCOL, f"reply of more than {self._max_lines} lines")
        self._code = code
        self._lines.append(text)
        if not final:
            self._raw += raw
            self._raw += b"\n"
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines.clear()
        self._raw.clear()
        return reply


_CODE_FIRST = b"2345"
_SEPARATORS = b" -"
_ONE_REPLY = re.compile(rb"([2-5][0-9][0-9])(?:-[^\n]*\n\1)*(?: [^\n]*|\r)?\n")
"""One reply: `ddd-text` lines of one code, then `ddd text`, `ddd` (LF or CRLF after each)."""


def _text(line: str) -> str:
    """A decoded line's text: after the code and separator, without one CR before the LF."""
    return line[4:-1] if line.endswith("\r") else line[4:]


class Transcript:
    """`S: ` / `C: ` lines, bounded in count and width; keeps the start of the dialogue."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._dropped = 0

    def add(self, line: str) -> None:
        if len(self._lines) < _TRANSCRIPT_LINES:
            self._lines.append(clip(line, _TRANSCRIPT_CHARS))
        else:
            self._dropped += 1

    def add_reply(self, reply: Reply) -> None:
        texts = reply.lines[:_TRANSCRIPT_LINES_PER_REPLY]
        code, last = reply.code, len(reply.lines) - 1
        lines = [f"S: {code}-{text}".rstrip() for text in texts]
        if last < len(lines):
            lines[last] = f"S: {code} {texts[last]}".rstrip()
        else:
            lines.append(
                f"S: ... {last + 1 - _TRANSCRIPT_LINES_PER_REPLY} more lines of this reply"
            )
        self._extend(lines)

    def _extend(self, lines: list[str]) -> None:
        kept = lines[: max(_TRANSCRIPT_LINES - len(self._lines), 0)]
        self._dropped += len(lines) - len(kept)
        if kept and max(map(len, kept)) <= _TRANSCRIPT_CHARS and "".join(kept).isprintable():
            self._lines.extend(kept)  # the common case: one check for the whole reply
        else:
            self._lines.extend(clip(line, _TRANSCRIPT_CHARS) for line in kept)

    def lines(self) -> tuple[str, ...]:
        if not self._dropped:
            return tuple(self._lines)
        return (*self._lines, f"... {self._dropped} more lines not kept")

"""Sans-IO SMTP client: bytes in, events out, up to STARTTLS (or implicit TLS) and QUIT.

In the manner of h11, nothing here touches a socket, a clock or an event loop. `ReplyParser`
turns received bytes into complete, bounded `Reply` values (RFC 5321 section 4.2); `SmtpClient`
walks the short dialogue tlsprobe needs (greeting, EHLO, STARTTLS, EHLO again, QUIT) and tells
the transport what to do next through `next_event()`. The dialogue is strictly lock-step (one
command, one reply), so any byte the server sends beyond the reply it owes is a protocol error;
after the 220 to STARTTLS that is response injection (CVE-2011-0411) and is never dropped.
Failures leave as data (`Failed` with a `Reason`), never as exceptions, so the transport maps
them once.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

from tlsprobe.model import Reason

__all__ = [
    "Done",
    "Event",
    "Failed",
    "NeedData",
    "Reply",
    "ReplyParser",
    "Send",
    "SmtpClient",
    "SmtpError",
    "StartTls",
    "Transcript",
    "clip",
]

_MESSAGE_CHARS = 200
_TRANSCRIPT_LINES = 200
_TRANSCRIPT_CHARS = 300
_TRANSCRIPT_LINES_PER_REPLY = 30
"""A 64 KiB EHLO reply must not crowd the later commands out of the transcript."""
_MAX_QUEUED_REPLIES = 16
"""Lock-step dialogue: more than one queued reply is already an error; this only bounds memory."""

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


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
        return clip(f"{self.code} {self.text}".rstrip(), _MESSAGE_CHARS)


class ReplyParser:
    """Feeds bytes, yields complete replies. Bounded.

    Holds at most one partial line (`max_line` bytes) plus the lines of the reply being
    assembled (`max_reply` bytes); anything larger is a protocol error, as is any line that is
    not `ddd`, `ddd text` or `ddd-text`. After an error the parser stays broken: every later
    `feed` raises again rather than resynchronising on attacker-chosen bytes.
    """

    def __init__(self, *, max_line: int = 4096, max_reply: int = 65536) -> None:
        if max_line < 3 or max_reply < max_line:
            raise ValueError("need max_line >= 3 and max_reply >= max_line")
        self._max_line = max_line
        self._max_reply = max_reply
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


@dataclass(frozen=True, slots=True)
class NeedData:
    """Read from the connection and pass the bytes (b"" on EOF) to `receive_data`."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the connection."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Do the TLS handshake now, then call `tls_started()`."""


@dataclass(frozen=True, slots=True)
class Done:
    """QUIT has been handed out; the transport may close the connection."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: Reason
    message: str


Event: TypeAlias = NeedData | Send | StartTls | Done | Failed

# The one table of the dialogue: the reply each phase waits for and what it is called in messages.
_EXPECTED: dict[str, tuple[int, str]] = {
    "banner": (220, "greeting"),
    "ehlo": (250, "EHLO"),
    "starttls": (220, "STARTTLS"),
    "ehlo_tls": (250, "EHLO after TLS"),
}
_FINISHED = ("quit", "done", "failed")


def _check_ehlo_name(name: str) -> None:
    """Reject anything but a host name or an address literal: a config value must not inject."""
    if name.startswith("[") and name.endswith("]"):
        _check_address_literal(name)
        return
    labels = name.split(".")
    if not name.isascii() or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"ehlo_name {name!r}: not a host name or address literal")


def _check_address_literal(name: str) -> None:
    """`[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 section 4.1.3)."""
    inner = name[1:-1]
    tagged = inner[:5].lower() == "ipv6:"
    try:
        address = ipaddress.ip_address(inner[5:] if tagged else inner)
    except ValueError:
        raise ValueError(f"ehlo_name {name!r}: not a valid address literal") from None
    if tagged != (address.version == 6):
        raise ValueError(f"ehlo_name {name!r}: write [192.0.2.1] or [IPv6:2001:db8::1]")


class SmtpClient:
    """The SMTP dialogue as a state machine; the transport drives it with `next_event()`.

    starttls=True: banner, EHLO, STARTTLS, (handshake), EHLO, QUIT. starttls=False (implicit TLS,
    port 465): the handshake is already done; banner, EHLO, QUIT.
    """

    def __init__(
        self,
        ehlo_name: str,
        *,
        starttls: bool = True,
        max_line: int = 4096,
        max_reply: int = 65536,
    ) -> None:
        _check_ehlo_name(ehlo_name)
        self._ehlo_name = ehlo_name
        self._starttls = starttls
        self._limits = (max_line, max_reply)
        self._parser = ReplyParser(max_line=max_line, max_reply=max_reply)
        self._phase = "banner"
        self._replies: deque[Reply] = deque()
        self._outgoing: deque[bytes] = deque()
        self._parse_error: SmtpError | None = None
        self._eof = False
        self._final: Done | Failed | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._starttls_offered: bool | None = None
        self._transcript = Transcript()

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def capabilities(self) -> frozenset[str]:
        """Upper-cased EHLO keywords of the latest EHLO reply (post-TLS once TLS is up)."""
        return self._capabilities

    @property
    def starttls_offered(self) -> bool | None:
        """Whether the plaintext EHLO listed STARTTLS; always None in implicit mode."""
        return self._starttls_offered

    @property
    def transcript(self) -> tuple[str, ...]:
        return self._transcript.lines()

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the connection; b"" means the server closed it."""
        if self._final is not None or self._phase in _FINISHED:
            return
        if self._phase == "handshake":
            self._on_data_before_handshake(data)
        elif not data:
            self._eof = True
        elif self._parse_error is None:
            self._feed(data)

    def tls_started(self) -> None:
        """The transport finished the TLS handshake: start over on a clean parser."""
        if self._final is not None:
            return
        if self._phase != "handshake":
            raise RuntimeError(f"tls_started() called in phase {self._phase!r}")
        # Nothing read in plaintext may be taken as said over TLS.
        self._parser = ReplyParser(max_line=self._limits[0], max_reply=self._limits[1])
        self._replies.clear()
        self._parse_error = None
        self._eof = False
        self._phase = "ehlo_tls"
        self._command(f"EHLO {self._ehlo_name}")

    def next_event(self) -> Event:
        if self._final is not None:
            return self._final
        if self._outgoing:
            return Send(self._outgoing.popleft())
        if self._phase == "quit":
            return self._finish(Done())
        if self._phase == "handshake":
            return StartTls()
        if self._replies:
            self._handle(self._replies.popleft())
            return self.next_event()
        if self._parse_error is not None:
            return self._fail(self._parse_error.reason, self._parse_error.message)
        if self._eof:
            return self._fail(Reason.PROTOCOL, f"connection closed by server during {self._phase}")
        return NeedData()

    def _feed(self, data: bytes) -> None:
        # Replies completed before garbage in the same read (a 421, say) still count.
        replies, error = self._parser.take(data)
        room = _MAX_QUEUED_REPLIES + 1 - len(self._replies)
        if len(replies) > room:
            replies = replies[:room]
            error = SmtpError(Reason.PROTOCOL, "server sent unsolicited replies")
        for reply in replies:
            self._transcript.add_reply(reply)
        self._replies.extend(replies)
        if error is not None:
            self._parse_error = error

    def _on_data_before_handshake(self, data: bytes) -> None:
        if not data:
            self._fail(Reason.PROTOCOL, "connection closed by server during handshake")
            return
        self._fail(
            Reason.PROTOCOL,
            f"{len(data)} bytes arrived after the 220 reply to STARTTLS and before the TLS "
            "handshake (possible response injection, CVE-2011-0411)",
        )

    def _handle(self, reply: Reply) -> None:
        """Judge the reply the current phase waits for, then move on or fail."""
        expected, label = _EXPECTED[self._phase]
        if reply.code == 421:
            self._fail(Reason.THROTTLED, f"server is throttling ({label}): {reply.describe()}")
        elif reply.code != expected:
            self._fail(self._refusal_reason(reply.code), f"{label} refused: {reply.describe()}")
        elif self._has_more_input():
            self._fail(Reason.PROTOCOL, self._unsolicited_message(label))
        else:
            self._advance(reply)

    def _refusal_reason(self, code: int) -> Reason:
        if self._phase == "starttls" and code >= 400:
            return Reason.STARTTLS_REJECTED
        return Reason.PROTOCOL

    def _has_more_input(self) -> bool:
        return bool(self._replies or self._parser.has_buffered or self._parse_error)

    def _unsolicited_message(self, label: str) -> str:
        extra = f"{len(self._replies)} more replies, {len(self._parser.buffered)} more bytes"
        if self._parse_error is not None:
            extra = f"{extra}, then {self._parse_error.message}"
        if self._phase == "starttls":
            return (
                f"data after the 220 reply to STARTTLS ({extra}): possible response "
                "injection (CVE-2011-0411)"
            )
        return f"unsolicited data after the {label} reply ({extra})"

    def _advance(self, reply: Reply) -> None:
        if self._phase == "banner":
            self._phase = "ehlo"
            self._command(f"EHLO {self._ehlo_name}")
        elif self._phase == "ehlo":
            self._capabilities = _keywords(reply)
            if not self._starttls:
                self._quit()
            elif "STARTTLS" not in self._capabilities:
                self._starttls_offered = False
                shown = clip(", ".join(sorted(self._capabilities)) or "none", _MESSAGE_CHARS)
                self._fail(Reason.NO_STARTTLS, f"server does not offer STARTTLS (EHLO: {shown})")
            else:
                self._starttls_offered = True
                self._phase = "starttls"
                self._command("STARTTLS")
        elif self._phase == "starttls":
            self._phase = "handshake"
        else:
            self._capabilities = _keywords(reply)
            self._quit()

    def _quit(self) -> None:
        # Done right after QUIT: waiting for 221 would only add a round trip and a way to fail.
        self._phase = "quit"
        self._command("QUIT")

    def _command(self, line: str) -> None:
        self._transcript.add(f"C: {line}")
        self._outgoing.append(f"{line}\r\n".encode("ascii"))

    def _finish(self, event: Done) -> Done:
        self._phase = "done"
        self._final = event
        return event

    def _fail(self, reason: Reason, message: str) -> Failed:
        self._phase = "failed"
        self._outgoing.clear()
        self._final = Failed(reason, message)
        return self._final


def _keywords(reply: Reply) -> frozenset[str]:
    """EHLO keywords: the first word of every line after the greeting line."""
    return frozenset(words[0].upper() for line in reply.lines[1:] if (words := line.split()))


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

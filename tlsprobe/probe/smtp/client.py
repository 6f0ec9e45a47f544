"""Sans-IO SMTP client: bytes in, events out, up to STARTTLS (or implicit TLS) and QUIT.

In the manner of h11, nothing here touches a socket, a clock or an event loop. `ReplyParser`
(in `reply`) turns received bytes into complete, bounded `Reply` values; `SmtpClient`
walks the short dialogue tlsprobe needs (greeting, EHLO, STARTTLS, EHLO again, QUIT), every
transition in one table (`_STEPS`), and tells the transport what to do through `next_event()`.
The dialogue is strictly lock-step (one command, one reply), so any byte the server sends
beyond the reply it owes is a protocol error; after the 220 to STARTTLS that is response
injection (CVE-2011-0411) and is never dropped. Failures leave as data (`Failed` with a
`Reason`), never as exceptions, so the transport maps them once.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from tlsprobe.model import Reason
from tlsprobe.probe import names
from tlsprobe.probe.smtp.reply import (
    MAX_QUEUED_REPLIES,
    MESSAGE_CHARS,
    Reply,
    ReplyParser,
    SmtpError,
    Transcript,
    clip,
)

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


class State(enum.StrEnum):
    """Where the dialogue is; the names double as phase names in timings and messages."""

    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    EHLO_TLS = "ehlo_tls"
    QUIT = "quit"
    DONE = "done"
    FAILED = "failed"


class _Step(NamedTuple):
    expect: int
    """The reply code that moves the dialogue on; any other is a failure."""
    label: str
    """What the awaited reply is called in messages."""
    then: State


# The one table of the dialogue: in each state that awaits a reply, the code that moves it on
# and the state that follows. EHLO leads to STARTTLS only when STARTTLS is wanted and offered
# (`_after_ehlo`); HANDSHAKE leads to EHLO_TLS when the transport calls `tls_started()`.
_STEPS: dict[State, _Step] = {
    State.BANNER: _Step(220, "greeting", State.EHLO),
    State.EHLO: _Step(250, "EHLO", State.STARTTLS),
    State.STARTTLS: _Step(220, "STARTTLS", State.HANDSHAKE),
    State.EHLO_TLS: _Step(250, "EHLO after TLS", State.QUIT),
}
# The command sent on entering a state.
_COMMANDS: dict[State, str] = {
    State.EHLO: "EHLO {ehlo}",
    State.STARTTLS: "STARTTLS",
    State.EHLO_TLS: "EHLO {ehlo}",
    State.QUIT: "QUIT",  # Done right after: waiting for 221 adds a round trip and a way to fail
}
_FINISHED = (State.QUIT, State.DONE, State.FAILED)


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
        names.check_ehlo_name(ehlo_name)  # no value may inject a line into the dialogue
        self._ehlo_name = ehlo_name
        self._starttls = starttls
        self._limits = (max_line, max_reply)
        self._parser = ReplyParser(max_line=max_line, max_reply=max_reply)
        self._phase = State.BANNER
        self._replies: deque[Reply] = deque()
        self._outgoing: deque[bytes] = deque()
        self._parse_error: SmtpError | None = None
        self._eof = False
        self._final: Done | Failed | None = None
        self._capabilities: frozenset[str] | None = frozenset()
        self._ehlo_reply: Reply | None = None
        self._starttls_offered: bool | None = None
        self._transcript = Transcript()

    @property
    def phase(self) -> State:
        return self._phase

    @property
    def capabilities(self) -> frozenset[str]:
        """Upper-cased EHLO keywords of the latest EHLO reply (post-TLS once TLS is up)."""
        if self._capabilities is None:  # worked out when asked: nothing needs the post-TLS set
            assert self._ehlo_reply is not None
            self._capabilities = _keywords(self._ehlo_reply)
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
        if self._phase is State.HANDSHAKE:
            self._on_data_before_handshake(data)
        elif not data:
            self._eof = True
        elif self._parse_error is None:
            self._feed(data)

    def tls_started(self) -> None:
        """The transport finished the TLS handshake: start over on a clean parser."""
        if self._final is not None:
            return
        if self._phase is not State.HANDSHAKE:
            raise RuntimeError(f"tls_started() called in phase {self._phase.value!r}")
        # Nothing read in plaintext may be taken as said over TLS.
        self._parser = ReplyParser(max_line=self._limits[0], max_reply=self._limits[1])
        self._replies.clear()
        self._parse_error = None
        self._eof = False
        self._enter(State.EHLO_TLS)

    def next_event(self) -> Event:
        if self._final is not None:
            return self._final
        if self._outgoing:
            return Send(self._outgoing.popleft())
        if self._phase is State.QUIT:
            return self._finish(Done())
        if self._phase is State.HANDSHAKE:
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
        room = MAX_QUEUED_REPLIES + 1 - len(self._replies)
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
        expected, label, _ = _STEPS[self._phase]
        if reply.code == 421:
            self._fail(Reason.THROTTLED, f"server is throttling ({label}): {reply.describe()}")
        elif reply.code != expected:
            self._fail(self._refusal_reason(reply.code), f"{label} refused: {reply.describe()}")
        elif self._has_more_input():
            self._fail(Reason.PROTOCOL, self._unsolicited_message(label))
        else:
            self._advance(reply)

    def _refusal_reason(self, code: int) -> Reason:
        if self._phase is State.STARTTLS and code >= 400:
            return Reason.STARTTLS_REJECTED
        return Reason.PROTOCOL

    def _has_more_input(self) -> bool:
        return bool(self._replies or self._parser.has_buffered or self._parse_error)

    def _unsolicited_message(self, label: str) -> str:
        extra = f"{len(self._replies)} more replies, {len(self._parser.buffered)} more bytes"
        if self._parse_error is not None:
            extra = f"{extra}, then {self._parse_error.message}"
        if self._phase is State.STARTTLS:
            return (
                f"data after the 220 reply to STARTTLS ({extra}): possible response "
                "injection (CVE-2011-0411)"
            )
        return f"unsolicited data after the {label} reply ({extra})"

    def _advance(self, reply: Reply) -> None:
        if self._phase in (State.EHLO, State.EHLO_TLS):
            self._capabilities, self._ehlo_reply = None, reply
        following = self._after_ehlo() if self._phase is State.EHLO else _STEPS[self._phase].then
        if following is not None:
            self._enter(following)

    def _after_ehlo(self) -> State | None:
        """STARTTLS when wanted and offered; QUIT in implicit TLS; None after a failure."""
        if not self._starttls:
            return State.QUIT
        self._starttls_offered = "STARTTLS" in self.capabilities
        if not self._starttls_offered:
            shown = clip(", ".join(sorted(self.capabilities)) or "none", MESSAGE_CHARS)
            self._fail(Reason.NO_STARTTLS, f"server does not offer STARTTLS (EHLO: {shown})")
            return None
        return State.STARTTLS

    def _enter(self, state: State) -> None:
        self._phase = state
        command = _COMMANDS.get(state)
        if command is not None:
            self._command(command.format(ehlo=self._ehlo_name))

    def _command(self, line: str) -> None:
        self._transcript.add(f"C: {line}")
        self._outgoing.append(f"{line}\r\n".encode("ascii"))

    def _finish(self, event: Done) -> Done:
        self._phase = State.DONE
        self._final = event
        return event

    def _fail(self, reason: Reason, message: str) -> Failed:
        self._phase = State.FAILED
        self._outgoing.clear()
        self._final = Failed(reason, message)
        return self._final


def _keywords(reply: Reply) -> frozenset[str]:
    """EHLO keywords: the first word of every line after the greeting line."""
    return frozenset(words[0].upper() for line in reply.lines[1:] if (words := line.split()))

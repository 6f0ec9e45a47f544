"""Sans-IO SMTP server: the receiver's mirror of `client.py`, bytes in, replies and events out.

The send side needs an SMTP listener that a relay delivers to, so that the certificate the relay
presents as a TLS *client* can be captured. This module is its protocol core: no socket, clock
or event loop. `SmtpServer` reads command lines, answers them and tells the transport what to do
through `next_event()` (`Send`, `NeedData`, `StartTls`, `Done`, `Failed`, `MessageReceived`).

What it allows is deliberately small: EHLO/HELO, STARTTLS, and only after TLS a mail
transaction for recipients the caller accepts (the canary recipients; nothing is ever relayed).
AUTH is refused (never offered), message bodies are counted and discarded (only a canary token
from the headers is kept), lines, messages, recipients, errors and transactions are bounded, and
plaintext pipelined behind STARTTLS is discarded, never read as if said over TLS (the server side
of CVE-2011-0411, as Postfix does). The state table `_COMMANDS` is the whole grammar.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from tlsprobe.model import Reason
from tlsprobe.probe.smtp.client import (
    Done,
    Failed,
    NeedData,
    Reply,
    Send,
    StartTls,
    Transcript,
    clip,
)

__all__ = [
    "CANARY_HEADER",
    "Limits",
    "Message",
    "MessageReceived",
    "ServerEvent",
    "SmtpServer",
    "State",
]

CANARY_HEADER = "X-Tlsprobe-Canary"
"""Header carrying the canary token; the only part of a message the receiver keeps."""

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS = re.compile(r"<([^<>\s]{0,254})>")
_VERB = re.compile(r"[A-Za-z]{1,12}")
_NAME_CHARS = 255
_HEADER_BYTES = 16384
"""Headers read for the canary token; the rest of a message is only counted."""


class State(enum.StrEnum):
    """Where the dialogue is. PLAIN and SECURE wait for EHLO; READY for MAIL."""

    PLAIN = "plain"
    """Before TLS: only EHLO/HELO, STARTTLS, NOOP, RSET, QUIT."""
    HANDSHAKE = "handshake"
    """220 sent to STARTTLS; the transport does the TLS handshake."""
    SECURE = "secure"
    """TLS up, waiting for the new EHLO (RFC 3207 section 4.2: all state is forgotten)."""
    READY = "ready"
    MAIL = "mail"
    """MAIL FROM accepted, no recipient yet."""
    RCPT = "rcpt"
    """At least one recipient accepted."""
    DATA = "data"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one session. Defaults fit a canary and refuse anything much larger."""

    max_line: int = 1000
    """Bytes of one line with its CRLF (RFC 5321 section 4.5.3.1.6)."""
    max_message: int = 65536
    max_recipients: int = 10
    max_messages: int = 5
    max_errors: int = 5
    """Refused or malformed commands before the session is closed with 421."""
    max_commands: int = 100
    """Commands of any kind in one session (a canary takes about 8; Postfix allows 100 junk
    commands): a NOOP or RSET flood is closed with 421 once past it."""


@dataclass(frozen=True, slots=True)
class Message:
    """What is kept of one received message: the envelope, its size and the canary token."""

    mail_from: str
    recipients: tuple[str, ...]
    size: int
    token: str | None
    """Value of the `X-Tlsprobe-Canary` header, when present and well-formed."""
    received_at: float = 0.0
    """Unix time the final `.` arrived; stamped by the transport (this module has no clock)."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message ended and was accepted (then discarded); the transport may time-stamp it."""

    message: Message


ServerEvent: TypeAlias = NeedData | Send | StartTls | Done | Failed | MessageReceived

_Handler = Callable[["SmtpServer", str], None]


_GREETABLE = frozenset({State.PLAIN, State.SECURE, State.READY, State.MAIL, State.RCPT})
_TRANSACTION = frozenset({State.READY, State.MAIL, State.RCPT})


class SmtpServer:
    """One inbound SMTP session as a state machine, driven by the transport's `next_event()`.

    `accept_recipient(address)` decides each RCPT (the canary recipients of a known sender);
    everything it refuses gets `550 5.7.1`, so the receiver is never an open relay.
    """

    def __init__(
        self,
        hostname: str,
        *,
        accept_recipient: Callable[[str], bool],
        limits: Limits | None = None,
    ) -> None:
        self._hostname = hostname
        self._accept = accept_recipient
        self.limits = limits or Limits()
        self.state = State.PLAIN
        self._buffer = bytearray()
        self._outgoing: deque[bytes] = deque()
        self._pending: deque[MessageReceived] = deque()
        self._final: Done | Failed | None = None
        self._eof = False
        self._closing: Done | Failed | None = None
        self._envelope: tuple[str, list[str]] = ("", [])
        self._data = _DataReader(self.limits)
        self.transcript = Transcript()
        self.helo: str | None = None
        """The client's EHLO/HELO name (the latest one, clipped)."""
        self.tls = False
        self.errors = 0
        self.commands = 0
        self.auth_attempts = 0
        self.refused_recipients = 0
        self.discarded_plaintext = 0
        """Bytes pipelined behind STARTTLS and dropped unread."""
        self.messages: list[Message] = []
        self.plaintext_mail = False
        """The client tried a mail transaction without TLS."""
        self._reply(220, f"{hostname} ESMTP tlsprobe receiver")

    # --- driving -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the connection (b"" at end of stream). Ignored during the handshake:
        the transport feeds those bytes to TLS."""
        if self._final is not None or self.state in (State.HANDSHAKE, State.CLOSED):
            return
        if not data:
            self._eof = True
            return
        self._buffer += data

    def tls_started(self) -> None:
        if self.state is not State.HANDSHAKE:
            raise RuntimeError(f"tls_started() called in state {self.state}")
        self.tls = True
        self.helo = None
        self.state = State.SECURE

    def next_event(self) -> ServerEvent:
        while True:
            if self._outgoing:
                return Send(self._outgoing.popleft())
            if self._pending:
                return self._pending.popleft()
            if self._final is not None:
                return self._final
            if self._closing is not None:
                self._final, self.state = self._closing, State.CLOSED
                continue
            if self.state is State.HANDSHAKE:
                return StartTls()
            if not self._step():
                return NeedData()

    def _step(self) -> bool:
        """Handle one complete line; False when more input is needed."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.limits.max_line:
                self._close_with(500, "5.5.2 Line too long", Reason.PROTOCOL)
                return True
            if self._eof:
                self._closing = Failed(
                    Reason.PROTOCOL, f"client closed the connection in state {self.state}"
                )
                return True
            return False
        raw = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        if len(raw) > self.limits.max_line:
            self._close_with(500, "5.5.2 Line too long", Reason.PROTOCOL)
        elif self.state is State.DATA:
            self._data_line(raw)
        else:
            self._command(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
        return True

    # --- commands ------------------------------------------------------------------------

    def _command(self, line: str) -> None:
        self.transcript.add(f"C: {line}")
        self.commands += 1
        if self.commands > self.limits.max_commands:
            self._close_with(421, "4.7.0 Too many commands in this session", Reason.PROTOCOL)
            return
        verb, _, argument = line.partition(" ")
        entry = _COMMANDS.get(verb.upper()) if _VERB.fullmatch(verb) else None
        if entry is None:
            self._error(500, "5.5.2 Command not recognized")
            return
        handler, states = entry
        if self.state in states:
            handler(self, argument.strip())
        elif not self.tls and verb.upper() in ("MAIL", "RCPT", "DATA"):
            self.plaintext_mail = True
            self._error(530, "5.7.0 Must issue a STARTTLS command first")
        else:
            self._error(503, "5.5.1 Bad sequence of commands")

    def _ehlo(self, argument: str) -> None:
        self._greet(argument, "EHLO")

    def _helo(self, argument: str) -> None:
        self._greet(argument, "HELO")

    def _greet(self, argument: str, verb: str) -> None:
        if not argument:
            self._error(501, f"5.5.4 Syntax: {verb} hostname")
            return
        self.helo = clip(argument, _NAME_CHARS)
        self._envelope = ("", [])
        self.state = State.READY if self.tls else State.PLAIN
        if verb == "HELO":
            self._reply(250, self._hostname)
            return
        keywords = [f"SIZE {self.limits.max_message}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if not self.tls:
            keywords.append("STARTTLS")
        self._reply(250, self._hostname, *keywords)

    def _starttls(self, argument: str) -> None:
        if self.tls:
            self._error(503, "5.5.1 TLS already active")
            return
        if argument:
            self._error(501, "5.5.4 Syntax: STARTTLS")
            return
        # Anything pipelined behind STARTTLS was sent in plaintext: drop it unread.
        self.discarded_plaintext += len(self._buffer)
        self._buffer.clear()
        self._reply(220, "2.0.0 Ready to start TLS")
        self.state = State.HANDSHAKE

    def _mail(self, argument: str) -> None:
        address = _path(argument, "FROM:")
        if address is None:
            self._error(501, "5.5.4 Syntax: MAIL FROM:<address>")
            return
        size = _size_parameter(argument)
        if size is not None and size > self.limits.max_message:
            self._error(552, "5.3.4 Message size exceeds fixed limit")
            return
        if len(self.messages) >= self.limits.max_messages:
            self._close_with(421, "4.7.0 Too many messages in this session", Reason.PROTOCOL)
            return
        self._envelope = (address, [])
        self.state = State.MAIL
        self._reply(250, "2.1.0 Ok")

    def _rcpt(self, argument: str) -> None:
        address = _path(argument, "TO:")
        recipients = self._envelope[1]
        if address is None or not address:
            self._error(501, "5.5.4 Syntax: RCPT TO:<address>")
        elif len(recipients) >= self.limits.max_recipients:
            self._error(452, "4.5.3 Too many recipients")
        elif not self._accept(address):
            self.refused_recipients += 1
            self._error(550, "5.7.1 Recipient not accepted: this receiver relays nothing")
        else:
            recipients.append(address)
            self.state = State.RCPT
            self._reply(250, "2.1.5 Ok")

    def _start_data(self, argument: str) -> None:
        if argument:
            self._error(501, "5.5.4 Syntax: DATA")
            return
        self._data = _DataReader(self.limits)
        self.state = State.DATA
        self._reply(354, "End data with <CR><LF>.<CR><LF>")

    def _rset(self, argument: str) -> None:
        self._envelope = ("", [])
        if self.state in _TRANSACTION:
            self.state = State.READY
        self._reply(250, "2.0.0 Ok")

    def _noop(self, argument: str) -> None:
        self._reply(250, "2.0.0 Ok")

    def _quit(self, argument: str) -> None:
        self._reply(221, "2.0.0 Bye")
        self._closing = Done()

    def _auth(self, argument: str) -> None:
        self.auth_attempts += 1
        self._error(502, "5.7.0 Authentication not offered: this receiver relays nothing")

    def _not_offered(self, argument: str) -> None:
        self._error(502, "5.5.1 Command not implemented")

    # --- DATA ----------------------------------------------------------------------------

    def _data_line(self, raw: bytes) -> None:
        if raw.rstrip(b"\r\n") != b".":
            if not self._data.add(raw):
                self._close_with(552, "5.3.4 Message too big", Reason.PROTOCOL)
            return
        mail_from, recipients = self._envelope
        message = Message(mail_from, tuple(recipients), self._data.size, self._data.token())
        self.messages.append(message)
        self._pending.append(MessageReceived(message))
        self._envelope = ("", [])
        self.state = State.READY
        self.transcript.add(f"C: ({message.size} bytes of message data, discarded)")
        self._reply(250, "2.0.0 Ok: received and discarded")

    # --- replies -------------------------------------------------------------------------

    def _reply(self, code: int, *lines: str) -> None:
        reply = Reply(code, lines)
        self.transcript.add_reply(reply)
        last = len(lines) - 1
        text = "".join(
            f"{code}{' ' if index == last else '-'}{line}\r\n" for index, line in enumerate(lines)
        )
        self._outgoing.append(text.encode("utf-8"))

    def _error(self, code: int, text: str) -> None:
        self.errors += 1
        if self.errors > self.limits.max_errors:
            self._close_with(421, "4.7.0 Too many errors", Reason.PROTOCOL)
            return
        self._reply(code, text)

    def _close_with(self, code: int, text: str, reason: Reason) -> None:
        self._reply(code, text)
        if code != 421:
            self._reply(421, "4.7.0 Closing connection")
        self._buffer.clear()
        self._closing = Failed(reason, f"{code} {text}")


_COMMANDS: dict[str, tuple[_Handler, frozenset[State]]] = {
    "EHLO": (SmtpServer._ehlo, _GREETABLE),
    "HELO": (SmtpServer._helo, _GREETABLE),
    "STARTTLS": (SmtpServer._starttls, frozenset({State.PLAIN})),
    "MAIL": (SmtpServer._mail, frozenset({State.READY})),
    "RCPT": (SmtpServer._rcpt, frozenset({State.MAIL, State.RCPT})),
    "DATA": (SmtpServer._start_data, frozenset({State.RCPT})),
    "RSET": (SmtpServer._rset, _GREETABLE),
    "NOOP": (SmtpServer._noop, _GREETABLE),
    "QUIT": (SmtpServer._quit, _GREETABLE),
    "AUTH": (SmtpServer._auth, _GREETABLE),
    "VRFY": (SmtpServer._not_offered, _GREETABLE),
    "EXPN": (SmtpServer._not_offered, _GREETABLE),
    "HELP": (SmtpServer._not_offered, _GREETABLE),
    "BDAT": (SmtpServer._not_offered, _GREETABLE),
}
"""verb -> (handler, states it is allowed in). Elsewhere: 530 before TLS for a mail
transaction, else 503. Unknown verbs: 500."""


class _DataReader:
    """Counts a message's bytes and keeps only the canary header's value. Bounded."""

    def __init__(self, limits: Limits) -> None:
        self._limit = limits.max_message
        self.size = 0
        self._headers = bytearray()
        self._in_headers = True

    def add(self, raw: bytes) -> bool:
        """Take one line; False once the message is over the size limit."""
        self.size += len(raw)
        if self._in_headers:
            if raw in (b"\r\n", b"\n") or len(self._headers) + len(raw) > _HEADER_BYTES:
                self._in_headers = False
            else:
                self._headers += raw
        return self.size <= self._limit

    def token(self) -> str | None:
        prefix = CANARY_HEADER.lower() + ":"
        for line in bytes(self._headers).decode("utf-8", "replace").splitlines():
            if line.lower().startswith(prefix):
                value = line[len(prefix) :].strip()
                return value if _TOKEN.fullmatch(value) else None
        return None


def _path(argument: str, keyword: str) -> str | None:
    """The address of `FROM:<a>` / `TO:<a>` (any case, optional space), or None."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    match = _ADDRESS.match(argument[len(keyword) :].lstrip())
    return match.group(1).lower() if match else None


def _size_parameter(argument: str) -> int | None:
    for word in argument.split()[1:]:
        key, _, value = word.partition("=")
        if key.upper() == "SIZE" and value.isascii() and value.isdigit() and len(value) < 19:
            return int(value)
    return None

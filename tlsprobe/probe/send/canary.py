"""The canary: submit a small message to a relay and time its way back to the receiver.

Per sender, tlsprobe submits a message carrying a fresh token (header `X-Tlsprobe-Canary`) to
the relay; the relay routes the canary recipient's domain to tlsprobe's receiver, which hands
the token back. `CanaryBook` pairs submissions with arrivals: an arrival gives the round trip, a
token still pending at its deadline is a failure with reason `missing`. Submission failures
carry a bounded `CanaryReason` too; free text stays in messages.

Submission uses the standard library's `smtplib` in a worker thread: it speaks STARTTLS,
AUTH and DATA (dot-stuffing included), which the probe's sans-IO client (`smtp`, greeting to
STARTTLS only) does not. Its reply reader is the one part replaced: smtplib's appends
continuation lines without a bound (an endless multi-line greeting took a process to 1.9 GiB
in 4 s), so every reply here goes through the probe's `ReplyParser`, bounded in line length,
reply size and line count, and the whole submission reads at most `MAX_EXCHANGE_BYTES`; a relay
beyond them fails with `submit_protocol`. Every message is clipped to one printable line of
`MESSAGE_CHARS`: it is stored and shown. The whole submission has one deadline (a relay that
answers slowly, line by line, cannot stretch it), and at that deadline, or when the caller is
cancelled (a stop, a reload), the connection is shut at once so the worker thread ends with it
instead of holding the process's shutdown for up to the deadline. STARTTLS to the relay does not
verify the relay's certificate (that certificate is what the server-side probe judges); the
password, when configured, is sent only after STARTTLS. Values only: no metric or store here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import smtplib
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tlsprobe.model import CanaryReason
from tlsprobe.probe.smtp.reply import MESSAGE_CHARS, ReplyParser, clip
from tlsprobe.probe.smtp.server import CANARY_HEADER

_PENDING_LIMIT = 1024
"""Canaries in flight across all senders; the oldest is dropped (as missing) beyond it."""
MAX_REPLY_LINE = 1024
"""Bytes in one reply line (RFC 5321 section 4.5.3.1.5 allows 512)."""
MAX_REPLY_BYTES = 16384
MAX_REPLY_LINES = 100
"""A relay's EHLO lists a dozen extensions; a reply of more lines is no relay's."""
MAX_EXCHANGE_BYTES = 65536
"""Everything one submission reads from the relay, all replies together."""


@dataclass(frozen=True, slots=True)
class Relay:
    """Where and how to submit one sender's canary."""

    host: str
    port: int = 25
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    mail_from: str = "tlsprobe@localhost"
    recipient: str = ""
    """A canary address in a domain the relay routes to the receiver."""
    helo: str = "tlsprobe.localdomain"


@dataclass(frozen=True, slots=True)
class Submitted:
    sender: str
    token: str
    sent_at: float
    deadline: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """One canary's end: arrived (round trip in seconds) or failed with a reason."""

    sender: str
    token: str
    round_trip: float | None
    reason: CanaryReason | None
    message: str = ""
    """One printable line of at most `MESSAGE_CHARS` (clipped here, whoever builds it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", clip(self.message, MESSAGE_CHARS))


def new_token() -> str:
    return secrets.token_hex(12)


def message_bytes(relay: Relay, token: str) -> str:
    return (
        f"From: <{relay.mail_from}>\r\nTo: <{relay.recipient}>\r\n"
        f"Subject: tlsprobe canary {token}\r\n{CANARY_HEADER}: {token}\r\n\r\n"
        "tlsprobe send-side canary; the receiver discards it.\r\n"
    )


async def submit(relay: Relay, token: str, *, timeout: float) -> Outcome | None:
    """Submit one canary within `timeout`; None when the relay accepted it, else the failure."""
    clients: list[smtplib.SMTP] = []
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout):
            # Connected here, on the loop, so that a relay that never answers the connect (a
            # firewall dropping it) holds no thread; the dialogue then runs in one.
            sock = await _connect(relay.host, relay.port)
            await asyncio.to_thread(_submit_blocking, relay, token, timeout, clients, sock)
    except _SubmitError as exc:
        return Outcome("", token, None, exc.reason, exc.message)
    except TimeoutError:
        _shut(clients, sock)
        message = f"relay did not take the canary within {timeout:g} s"
        return Outcome("", token, None, CanaryReason.SUBMIT_TIMEOUT, message)
    except asyncio.CancelledError:
        _shut(clients, sock)
        raise
    except OSError as exc:
        return Outcome("", token, None, CanaryReason.SUBMIT_UNREACHABLE, f"relay: {exc}")
    return None


async def _connect(host: str, port: int) -> socket.socket:
    """A TCP connection to the relay, each of its addresses in turn."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"{host} has no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last


class _Client(smtplib.SMTP):
    """smtplib's client on a socket connected beforehand, remembered by the caller so that
    another thread can shut that socket (and so end a blocked read) at the deadline."""

    def __init__(
        self, clients: list[smtplib.SMTP], connected: socket.socket, **options: Any
    ) -> None:
        self._connected = connected
        clients.append(self)
        super().__init__(**options)  # no host: smtplib connects nothing itself

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._host = host  # smtplib sets it only when __init__ connects; STARTTLS sends it (SNI)
        self._connected.settimeout(timeout)
        return self._connected

    _budget = MAX_EXCHANGE_BYTES
    """Bytes the relay may still send in this submission."""

    def getreply(self) -> tuple[int, bytes]:
        """One reply, read through the bounded `ReplyParser` (smtplib's own reader keeps every
        continuation line). Returns what smtplib's does: the code and the lines' text joined
        by LF; a relay past a bound is a `_SubmitError`."""
        if self.file is None:
            if self.sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            self.file = self.sock.makefile("rb")
        parser = ReplyParser(
            max_line=MAX_REPLY_LINE, max_reply=MAX_REPLY_BYTES, max_lines=MAX_REPLY_LINES
        )
        while True:
            # At most one line past the bound: the parser then says which bound it broke.
            line = self.file.readline(min(MAX_REPLY_LINE + 3, self._budget + 1))
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("connection closed by the relay")
            self._budget -= len(line)
            if self._budget < 0:
                self.close()
                raise _SubmitError(
                    CanaryReason.SUBMIT_PROTOCOL,
                    f"relay sent more than {MAX_EXCHANGE_BYTES} bytes in one submission",
                )
            replies, error = parser.take(line)
            if error is not None:
                self.close()
                raise _SubmitError(CanaryReason.SUBMIT_PROTOCOL, f"relay: {error.message}")
            if replies:
                reply = replies[0]
                return reply.code, "\n".join(reply.lines).encode("utf-8", "replace")


def _shut(clients: list[smtplib.SMTP], connected: socket.socket | None) -> None:
    """Shut the submission's connection from the event loop's thread: the worker's blocked
    read returns at once. The plain socket's shutdown, also under TLS (SSLSocket.shutdown
    would drop its SSL object under the worker's feet). A socket no worker took yet is
    closed here."""
    if not clients:
        if connected is not None:
            connected.close()
        return
    for client in clients:
        sock = client.sock or connected
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _SubmitError(Exception):
    def __init__(self, reason: CanaryReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = clip(message, MESSAGE_CHARS)


def _submit_blocking(
    relay: Relay, token: str, timeout: float, clients: list[smtplib.SMTP], sock: socket.socket
) -> None:
    try:
        with _Client(clients, sock, local_hostname=relay.helo, timeout=timeout) as c:
            c.connect(relay.host, relay.port)  # the socket given; reads the greeting
            if relay.starttls:
                c.starttls(context=_context())
            if relay.username:
                c.login(relay.username, relay.password or "")
            c.sendmail(relay.mail_from, [relay.recipient], message_bytes(relay, token))
    except smtplib.SMTPAuthenticationError as exc:
        raise _SubmitError(CanaryReason.SUBMIT_AUTH, f"AUTH refused: {exc.smtp_code}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise _SubmitError(CanaryReason.SUBMIT_TLS, f"relay: {exc}") from exc
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise _SubmitError(CanaryReason.SUBMIT_REFUSED, f"relay refused: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        )
        raise _SubmitError(
            CanaryReason.SUBMIT_REFUSED, f"relay refused: {exc.smtp_code} {text}"
        ) from exc
    except ssl.SSLError as exc:
        raise _SubmitError(CanaryReason.SUBMIT_TLS, f"STARTTLS to the relay failed: {exc}") from exc
    except TimeoutError as exc:
        raise _SubmitError(CanaryReason.SUBMIT_TIMEOUT, f"relay silent for {timeout:g} s") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise _SubmitError(CanaryReason.SUBMIT_UNREACHABLE, f"relay: {exc}") from exc


def _context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class CanaryBook:
    """Canaries in flight: submitted tokens, matched against arrivals, expired at deadlines."""

    def __init__(self, limit: int = _PENDING_LIMIT) -> None:
        self._limit = limit
        self._pending: OrderedDict[str, Submitted] = OrderedDict()
        self._dropped: list[Outcome] = []

    def submitted(
        self, sender: str, token: str, *, deadline: float, now: float | None = None
    ) -> None:
        sent_at = time.time() if now is None else now
        self._pending[token] = Submitted(sender, token, sent_at, sent_at + deadline)
        while len(self._pending) > self._limit:
            _, oldest = self._pending.popitem(last=False)
            self._dropped.append(_missing(oldest, "dropped: too many canaries in flight"))

    def arrived(self, token: str | None, at: float) -> Outcome | None:
        """The receiver saw `token`; None when it is not one of ours (or already ended)."""
        entry = self._pending.pop(token, None) if token else None
        if entry is None:
            return None
        return Outcome(entry.sender, token or "", max(0.0, at - entry.sent_at), None)

    def expired(self, now: float | None = None) -> list[Outcome]:
        """Canaries past their deadline (each reported once)."""
        moment = time.time() if now is None else now
        late = [s for s in self._pending.values() if s.deadline <= moment]
        for entry in late:
            del self._pending[entry.token]
        outcomes, self._dropped = [*self._dropped, *(_missing(s) for s in late)], []
        return outcomes

    def pending(self, sender: str) -> int:
        return sum(1 for s in self._pending.values() if s.sender == sender)


def _missing(entry: Submitted, why: str = "") -> Outcome:
    waited = entry.deadline - entry.sent_at
    message = why or f"canary {entry.token} did not arrive within {waited:g} s"
    return Outcome(entry.sender, entry.token, None, CanaryReason.MISSING, message)

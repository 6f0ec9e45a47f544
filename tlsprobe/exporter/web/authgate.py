"""Basic auth in front of the request cap, with failed-password work limited per client.

A correct password is remembered (a keyed digest, `WebConfig.check_cached`), so a scraper pays
bcrypt once. Everything else costs a bcrypt check, and that cost is what a flood of wrong
passwords aims at. The gate limits it, apart from the request cap that answered scrapes use:
- at most `BCRYPT_SLOTS` checks run at once, the others wait in arrival order; clients that
  failed recently share one slot among themselves, so a client with a clean record (a
  scraper's first request) waits for one check at most, not for a queue of guesses;
- a client has one check under way and at most `MAX_WAITING_PER_CLIENT` requests checking or
  waiting (more are told 429); a waiting request whose password the check ahead proved passes
  without a check of its own;
- a client has a budget of failed checks (`FAILURE_BURST`, refilled one per `FAILURE_REFILL`
  seconds) beyond which it is told 429 without any check.
A request without credentials costs no check and is simply 401. A client is an IPv4 address or
an IPv6 /64, the smallest network a single host can be expected to hold. The table of clients is
bounded (`MAX_CLIENTS`, least recently failing out).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tlsprobe.exporter.config.web import BCRYPT_SLOTS, WebConfig
from tlsprobe.exporter.exposition.table import Sample

FAILURE_BURST = 60
FAILURE_REFILL = 2.0
MAX_WAITING_PER_CLIENT = 4
MAX_CLIENTS = 4096


class Verdict(enum.StrEnum):
    """The outcome of one authentication attempt; the label of a self-metric."""

    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"


@dataclass(slots=True)
class _Client:
    key: str
    tokens: float
    stamp: float
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One check at a time per client; its other requests wait in order."""
    waiting: int = 0
    """Requests of this client checking or waiting to (at most MAX_WAITING_PER_CLIENT)."""


class AuthGate:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots = asyncio.Semaphore(BCRYPT_SLOTS)
        # Clients that failed recently share one bcrypt slot among themselves, so a client with
        # a clean record (a scraper's first request) waits for one check at most, not for a
        # queue of guesses.
        self._suspect = asyncio.Semaphore(max(1, BCRYPT_SLOTS - 1))
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.outcomes: dict[str, int] = dict.fromkeys(map(str, Verdict), 0)

    def samples(self) -> Iterator[Sample]:
        """Checks by outcome, read at scrape time (the exporter registry collects them)."""
        for outcome, count in list(self.outcomes.items()):
            yield "tlsprobe_http_auth_attempts", (outcome,), float(count)

    async def check(self, web_config: WebConfig, header: str, peer: str | None) -> Verdict:
        verdict = await self._check(web_config, header, peer)
        self.outcomes[verdict] += 1
        return verdict

    async def _check(self, web_config: WebConfig, header: str, peer: str | None) -> Verdict:
        credentials = parse_basic(header)
        if credentials is not None and web_config.check_cached(*credentials):
            return Verdict.OK
        if credentials is None:
            return Verdict.FAILED  # no password, no bcrypt: nothing to limit (a browser's 1st)
        client = self._client(client_key(peer))
        if client.waiting >= MAX_WAITING_PER_CLIENT or not self._has_budget(client):
            return Verdict.THROTTLED
        client.waiting += 1
        try:
            async with client.turn:
                # The check ahead may have been this very password (a scraper's parallel
                # first requests): then it is remembered now and costs nothing.
                if web_config.check_cached(*credentials):
                    return Verdict.OK
                if not self._has_budget(client):
                    return Verdict.THROTTLED
                ok = await self._bcrypt(
                    web_config, credentials, suspect=client.tokens < FAILURE_BURST
                )
        finally:
            client.waiting -= 1
        if ok:
            return Verdict.OK
        self._spend(client)
        return Verdict.FAILED

    async def _bcrypt(
        self, web_config: WebConfig, credentials: tuple[str, str], *, suspect: bool
    ) -> bool:
        lane = self._suspect if suspect else contextlib.nullcontext()
        async with lane, self._slots:
            return await asyncio.to_thread(web_config.check_password, *credentials)

    def _client(self, key: str) -> _Client:
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client(key, float(FAILURE_BURST), self._clock())
            if len(self._clients) > MAX_CLIENTS:
                self._evict_one()
        return client

    def _evict_one(self) -> None:
        # A client with a check under way stays: its state is needed when the check ends.
        for key, client in self._clients.items():
            if not client.waiting:
                del self._clients[key]
                return

    def _has_budget(self, client: _Client) -> bool:
        now = self._clock()
        client.tokens = min(FAILURE_BURST, client.tokens + (now - client.stamp) / FAILURE_REFILL)
        client.stamp = now
        return client.tokens >= 1

    def _spend(self, client: _Client) -> None:
        client.tokens -= 1
        if client.key in self._clients:
            self._clients.move_to_end(client.key)


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def client_key(peer: str | None) -> str:
    """The client a failure is charged to: the IPv4 address, or the IPv6 /64."""
    if not peer:
        return "?"
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)

"""A small authoritative DNS server on loopback, so discovery tests exercise the real resolver.

`DnsTestServer` answers UDP and TCP on the same ephemeral port of 127.0.0.1 from a plain dict,
`zone[(name, rdtype)] = [rdata text, ...]`, read afresh for every query: a test changes the dict
and the next query sees the change (endpoints appearing and disappearing with the zone).
`behaviours[name]` makes a name misbehave: "servfail", "nxdomain", or "timeout" (never answer);
`behaviours[(name, rdtype)]` does so for one type only (AAAA failing while A answers); "slow"
answers after `slow_seconds` (one query at a time over UDP, so slow queries queue up).
Answers are built with dnspython's message API; a UDP answer larger than the client's payload
size is sent truncated so that the client retries over TCP. The server never forwards and never
recurses: whatever is not in the dict does not exist. It is a context manager; leaving it stops
both listeners and closes every socket (warnings are errors in this test suite).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset

SERVFAIL = "servfail"
NXDOMAIN = "nxdomain"
TIMEOUT = "timeout"
SLOW = "slow"
BEHAVIOURS = frozenset({SERVFAIL, NXDOMAIN, TIMEOUT, SLOW})

LOOPBACK = "127.0.0.1"
UDP_PAYLOAD_WITHOUT_EDNS = 512
MAX_CNAME_HOPS = 8
_POLL_SECONDS = 0.02
_IN_ORDER: dict[str, Any] = {"want_shuffle": False}
"""Records on the wire in the zone's order. Passed as keywords because dnspython before 2.9
types `to_wire`'s extra keywords as `Dict[str, Any]` each, so `want_shuffle=False` fails type
checks there although it works on every version."""
"""How often the listeners look for `stop`: the wait every test's teardown pays."""

Zone = dict[tuple[str, str], list[str]]
Behaviours = dict[str | tuple[str, str], str]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


class _Snapshot:
    """One query's view of the zone: normalized keys, so tests may write names any way."""

    def __init__(self, zone: Zone, ttl: int) -> None:
        # dict(zone) is one C-level copy, so a test thread mutating the zone cannot tear it.
        self.records = {
            (_norm(name), dns.rdatatype.to_text(dns.rdatatype.from_text(rdtype))): list(rdatas)
            for (name, rdtype), rdatas in dict(zone).items()
            if rdatas
        }
        self.names = {name for name, _ in self.records}
        self.ttl = ttl

    def exists(self, name: str) -> bool:
        """True for owner names and for empty non-terminals above them (DNS semantics)."""
        return any(owner == name or owner.endswith("." + name) for owner in self.names)

    def rrset(self, owner: dns.name.Name, rdtype: str) -> dns.rrset.RRset | None:
        texts = self.records.get((_norm(owner.to_text()), rdtype))
        if not texts:
            return None
        rdatas = [
            dns.rdata.from_text("IN", rdtype, text, origin=dns.name.root, relativize=False)
            for text in texts
        ]
        return dns.rrset.from_rdata_list(owner, self.ttl, rdatas)


def _answer(query: dns.message.Message, snapshot: _Snapshot) -> dns.message.Message:
    """Authoritative answer for the query's single question, chasing in-zone CNAMEs."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    question = query.question[0]
    rdtype = dns.rdatatype.to_text(question.rdtype)
    owner = question.name
    for _ in range(MAX_CNAME_HOPS):
        found = snapshot.rrset(owner, rdtype)
        if found is not None:
            response.answer.append(found)
            return response
        alias = snapshot.rrset(owner, "CNAME") if rdtype != "CNAME" else None
        if alias is None:
            break
        response.answer.append(alias)
        owner = alias[0].target
    if not snapshot.exists(_norm(owner.to_text())):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


class DnsTestServer:
    """Authoritative test DNS server on 127.0.0.1, UDP and TCP on one ephemeral `port`."""

    def __init__(
        self,
        zone: Zone | None = None,
        behaviours: Behaviours | None = None,
        *,
        ttl: int = 0,
    ) -> None:
        self.zone: Zone = zone if zone is not None else {}
        self.behaviours: Behaviours = behaviours if behaviours is not None else {}
        self.ttl = ttl
        self.slow_seconds = 0.5
        """How long a "slow" name waits before its answer."""
        self.queries: list[tuple[str, str, str]] = []
        """(name, rdtype, "udp" | "tcp") of every query received, for assertions."""
        self.stopping = threading.Event()
        self._udp: _UdpServer | None = None
        self._tcp: _TcpServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("DnsTestServer is not running")
        return int(self._udp.server_address[1])

    def respond(self, wire: bytes, transport: str) -> dns.message.Message | None:
        """The reply to one query; None means stay silent (timeout behaviour, junk input)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) != 1:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = _norm(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype, transport))
        behaviour = self._behaviour(name, rdtype)
        if behaviour not in (None, *BEHAVIOURS):
            raise ValueError(f"unknown behaviour {behaviour!r} for {name}")
        if behaviour == TIMEOUT:
            return None
        if behaviour == SLOW:
            self.stopping.wait(self.slow_seconds)
        if behaviour in (SERVFAIL, NXDOMAIN):
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL if behaviour == SERVFAIL else dns.rcode.NXDOMAIN)
            return response
        return _answer(query, _Snapshot(self.zone, self.ttl))

    def _behaviour(self, name: str, rdtype: str) -> str | None:
        for key, behaviour in dict(self.behaviours).items():
            key_name, key_type = key if isinstance(key, tuple) else (key, rdtype)
            if _norm(key_name) == name and key_type.upper() == rdtype:
                return behaviour
        return None

    def start(self) -> None:
        self._udp, self._tcp = _bind_pair(self)
        for server in (self._udp, self._tcp):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": _POLL_SECONDS}, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        servers = [s for s in (self._udp, self._tcp) if s is not None]
        # Both at once: each shutdown waits up to one poll interval for its listener.
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in servers:
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._udp = self._tcp = None
        self._threads.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        wire, sock = self.request
        response = self.server.dns.respond(wire, "udp")
        if response is not None:
            sock.sendto(_udp_wire(response, wire), self.client_address)


def _udp_wire(response: dns.message.Message, query_wire: bytes) -> bytes:
    """The response, or its truncated form (TC set, no records) if it exceeds the payload size."""
    query = dns.message.from_wire(query_wire)
    limit = query.payload if query.edns >= 0 else UDP_PAYLOAD_WITHOUT_EDNS
    try:
        return response.to_wire(max_size=limit, **_IN_ORDER)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire()


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        # Poll, so that a client holding the connection open cannot block stop().
        sock.settimeout(_POLL_SECONDS)
        for wire in _tcp_messages(sock, self.server.dns.stopping):
            response = self.server.dns.respond(wire, "tcp")
            if response is None:
                self.server.dns.stopping.wait()  # "timeout": hold the connection, say nothing
                return
            payload = response.to_wire(max_size=65535, **_IN_ORDER)
            sock.sendall(struct.pack("!H", len(payload)) + payload)


def _tcp_messages(sock: socket.socket, stopping: threading.Event) -> Iterator[bytes]:
    """Length-prefixed DNS messages from a TCP stream until EOF or server stop."""
    buffer = b""
    while not stopping.is_set():
        while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
            size = struct.unpack("!H", buffer[:2])[0]
            yield buffer[2 : 2 + size]
            buffer = buffer[2 + size :]
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk


class _UdpServer(socketserver.UDPServer):
    allow_reuse_address = False

    def __init__(self, dns_server: DnsTestServer, port: int) -> None:
        self.dns = dns_server
        super().__init__((LOOPBACK, port), _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = False
    daemon_threads = False
    block_on_close = True

    def __init__(self, dns_server: DnsTestServer, port: int) -> None:
        self.dns = dns_server
        super().__init__((LOOPBACK, port), _TcpHandler)


def _bind_pair(dns_server: DnsTestServer, attempts: int = 20) -> tuple[_UdpServer, _TcpServer]:
    """UDP on an ephemeral port, then TCP on the same number (retrying if TCP's is taken)."""
    for _ in range(attempts):
        udp = _UdpServer(dns_server, 0)
        try:
            return udp, _TcpServer(dns_server, int(udp.server_address[1]))
        except OSError:
            udp.server_close()
    raise OSError("no loopback port free for both UDP and TCP")

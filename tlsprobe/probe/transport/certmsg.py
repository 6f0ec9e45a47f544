"""The certificates inside a TLS Certificate handshake message, read without a TLS library.

OpenSSL keeps the chain a server sent in the session, also when the handshake fails later, but
not when it cannot parse one of the certificates: then it aborts with an ASN.1 error and keeps
none of them, and the report would lose exactly the certificate that is wrong. For that case
the transport probes once more with a context tapped by `tap`, which keeps the server's
Certificate message as OpenSSL receives it (TLS 1.3's decrypted), and `certificates` reads the
DER strings out of it: RFC 5246 section 7.4.2 (a list of 3-byte-length certificates) and
RFC 8446 section 4.4.2 (a request context first, extensions after each certificate). Pure and
bounded: a malformed message yields nothing rather than a guess. The tap is never on the
context of ordinary probes: a callback per TLS message would cost every probe.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL

CERTIFICATE = 11
"""HandshakeType certificate."""
MAX_MESSAGE = 102400
"""Bytes of a peer's Certificate message OpenSSL reads (SSL_MAX_CERT_LIST_DEFAULT, 100 KiB),
the one bound on both sides: the probe reading a server's chain, the receiver a client's."""
_TOO_LARGE = "excessive message size"
TLS13 = 0x0304
MAX_CERTIFICATES = 32
_HANDSHAKE = 22
_KEPT = 2
"""Certificate messages kept per tapped context: a retry makes one connection."""

Kept = list[tuple[int, bytes]]
"""(protocol version, Certificate message with its header), in the order received."""


def tap(ctx: SSL.Context) -> Kept:
    """Keep the Certificate messages that servers send to connections made with `ctx` (a
    context made for this and used once); the list fills as handshakes run. Without the
    binding's message-callback call (an old cryptography), the list stays empty."""
    kept: Kept = []
    binding: Any = getattr(SSL, "_lib", None)
    ffi: Any = getattr(SSL, "_ffi", None)
    setter = getattr(binding, "SSL_CTX_set_msg_callback", None)
    if setter is None or ffi is None:
        return kept

    def on_message(
        write_p: int, version: int, content_type: int, buf: Any, size: int, _s: Any, _a: Any
    ) -> None:
        if write_p or content_type != _HANDSHAKE or size < 4 or len(kept) >= _KEPT:
            return
        if ffi.cast("unsigned char *", buf)[0] == CERTIFICATE:
            kept.append((version, bytes(ffi.buffer(buf, size))))

    callback = ffi.callback(
        "void(int, int, int, void *, size_t, SSL *, void *)", on_message, onerror=_ignore
    )
    setter(ctx._context, callback)
    ctx.__dict__["_tlsprobe_tap"] = callback  # the C function lives as long as the context
    return kept


def explain(reason: str) -> str:
    """OpenSSL's reason for a failed handshake, with the bound named when it is this one."""
    if reason == _TOO_LARGE:
        return f"{reason}: a certificate chain over {MAX_MESSAGE:,} bytes, the most read"
    return reason


def _ignore(*_: object) -> None:
    """cffi's error handler: a failure inside the callback must not print to stderr."""


def _length(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "big")


def certificates(version: int, message: bytes) -> tuple[bytes, ...]:
    """DER certificates of a Certificate message (with its 4-byte handshake header).

    `version` is the negotiated protocol version (0x0303 for TLS 1.2, 0x0304 for TLS 1.3);
    returns () for anything that is not a well-formed Certificate message.
    """
    if len(message) < 4 or message[0] != CERTIFICATE:
        return ()
    body = message[4 : 4 + _length(message, 1, 3)]
    tls13 = version >= TLS13
    at = 1 + body[0] if tls13 and body else 0
    if at + 3 > len(body):
        return ()
    end = at + 3 + _length(body, at, 3)
    if end > len(body):
        return ()
    at += 3
    found: list[bytes] = []
    while at < end and len(found) < MAX_CERTIFICATES:
        size = _length(body, at, 3)
        at += 3
        if size == 0 or at + size > end:
            return ()
        found.append(body[at : at + size])
        at += size
        if tls13:
            if at + 2 > end:
                return ()
            at += 2 + _length(body, at, 2)
    return tuple(found) if at == end or len(found) == MAX_CERTIFICATES else ()

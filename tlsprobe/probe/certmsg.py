"""The certificates inside a TLS Certificate handshake message, read without a TLS library.

Python's TLS layer hands out the peer's chain only after a completed handshake, yet a server
may fail the handshake after it sent its certificate (OpenSMTPD with OpenSSL 3 answering with
an internal error, a server demanding a client certificate over TLS 1.2). The transport sees
the Certificate message as OpenSSL processes it (TLS 1.3's decrypted) and this module reads
the DER certificates out of it: RFC 5246 section 7.4.2 (a list of 3-byte-length certificates)
and RFC 8446 section 4.4.2 (a request context first, extensions after each certificate). Pure
and bounded: a malformed message yields nothing rather than a guess.
"""

from __future__ import annotations

CERTIFICATE = 11
"""HandshakeType certificate."""
TLS13 = 0x0304
MAX_CERTIFICATES = 32


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

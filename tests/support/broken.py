"""Certificates the judge cannot read strictly, made by DER surgery on good ones.

Each maker takes a good certificate (DER) and the key of its issuer and returns the DER of a
certificate that differs in one way servers have been seen to differ: a signature algorithm
`cryptography` does not support, a name string of the wrong type, a duplicated or unknown
critical extension, an impossible date, a serial that is not positive, a huge name, truncated
or non-minimal DER. The issuer's key re-signs the result, so nothing else is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import der as D
from tests.support.pki import PrivateKey

Maker = Callable[[bytes, PrivateKey], bytes]


def _edit(edit: Callable[[D.Certificate], None], *, sign: bool = True) -> Maker:
    def make(good: bytes, issuer_key: PrivateKey) -> bytes:
        cert = D.Certificate(good)
        edit(cert)
        return cert.resign(issuer_key if sign else None)

    return make


def _name_value(part: int, tag: int, value: bytes) -> Callable[[D.Certificate], None]:
    """Set the last attribute of the subject or issuer (the CN in tests/support/pki.py)."""

    def edit(cert: D.Certificate) -> None:
        node = D.name_value_nodes(cert.tbs[part])[-1]
        node.tag, node.value = tag, value

    return edit


def _duplicate_extension(cert: D.Certificate) -> None:
    cert.extensions.append(D.parse(D.encode(cert.extensions[0])))


def _unknown_critical_extension(cert: D.Certificate) -> None:
    body = D.oid("1.3.6.1.4.1.55555.1") + D.tlv(D.BOOLEAN, b"\xff") + D.tlv(0x04, b"\x05\x00")
    cert.extensions.append(D.parse(D.tlv(D.SEQUENCE, body)))


def _set_serial(value: bytes) -> Callable[[D.Certificate], None]:
    def edit(cert: D.Certificate) -> None:
        cert.tbs.children[D.Certificate.SERIAL].value = value

    return edit


def _not_after(tag: int, text: bytes) -> Callable[[D.Certificate], None]:
    def edit(cert: D.Certificate) -> None:
        cert.tbs[D.Certificate.VALIDITY].children[1] = D.Node(tag, text)

    return edit


def _truncated(good: bytes, _key: PrivateKey) -> bytes:
    return good[: len(good) // 2]


def _non_minimal_length(good: bytes, key: PrivateKey) -> bytes:
    """The outer SEQUENCE's length in a longer form than DER allows (BER, not DER)."""
    der = _edit(lambda _: None)(good, key)
    tlv = D.parse(der)
    content = b"".join(D.encode(child) for child in tlv.children)
    return bytes([0x30, 0x84]) + len(content).to_bytes(4, "big") + content


def _version(number: int) -> Callable[[D.Certificate], None]:
    """The [0] version field says `number` (v3 is 2): cryptography refuses any other."""

    def edit(cert: D.Certificate) -> None:
        cert.tbs.children[0] = D.parse(D.tlv(0xA0, D.tlv(D.INTEGER, bytes([number]))))

    return edit


def _critical_flag(value: bytes | None) -> Callable[[D.Certificate], None]:
    """The first extension's critical flag (basicConstraints, TRUE in tests/support/pki.py) as
    BOOLEAN `value`, or written out as an explicit FALSE (DER leaves a default out)."""

    def edit(cert: D.Certificate) -> None:
        extension = cert.extensions[0]
        flag = D.Node(D.BOOLEAN, b"\x00" if value is None else value)
        if extension.children[1].tag == D.BOOLEAN:
            extension.children[1] = flag
        else:
            extension.children.insert(1, flag)

    return edit


def _tbs_long_length(cert: D.Certificate) -> None:
    """The serial number's length in the long form (0x81 n) where the short one fits: BER."""
    serial = cert.tbs.children[D.Certificate.SERIAL]
    serial.encoded = bytes([D.INTEGER, 0x81, len(serial.value)]) + serial.value


def _wrong_parameters(good: bytes, key: PrivateKey) -> bytes:
    """The signature algorithm's parameters wrong in both places: NULL after ECDSA-with-SHA256
    (RFC 5758 says absent), an INTEGER after sha256WithRSAEncryption (RFC 4055 says NULL)."""
    algorithm = D.SHA256_RSA_INTEGER if isinstance(key, rsa.RSAPrivateKey) else D.ECDSA_SHA256_NULL
    cert = D.Certificate(good)
    cert.tbs.children[D.Certificate.SIGNATURE] = D.parse(algorithm)
    tbs = D.encode(cert.tbs)
    signature = D.Node(D.BIT_STRING, b"\x00" + D.sign(key, tbs))
    return D.tlv(D.SEQUENCE, tbs + algorithm + D.encode(signature))


SUBJECT, ISSUER = D.Certificate.SUBJECT, D.Certificate.ISSUER

MAKERS: dict[str, Maker] = {
    "gost-signature": _edit(lambda c: c.set_signature_algorithm(D.GOST_2012_256), sign=False),
    "sm2-signature": _edit(lambda c: c.set_signature_algorithm(D.SM2_SM3), sign=False),
    "t61-8bit-subject": _edit(_name_value(SUBJECT, D.T61_STRING, b"M\xfcller Mail")),
    "ia5-8bit-subject": _edit(_name_value(SUBJECT, D.IA5_STRING, b"m\xe4il.contoso.test")),
    "utf8-invalid-subject": _edit(_name_value(SUBJECT, D.UTF8_STRING, b"mail\xff\xfe")),
    "printable-star-subject": _edit(_name_value(SUBJECT, D.PRINTABLE_STRING, b"*.contoso.test")),
    "printable-at-issuer": _edit(_name_value(ISSUER, D.PRINTABLE_STRING, b"ca@contoso.test")),
    "duplicate-extension": _edit(_duplicate_extension),
    "unknown-critical-extension": _edit(_unknown_critical_extension),
    "negative-serial": _edit(_set_serial(b"\xff\x01")),
    "zero-serial": _edit(_set_serial(b"\x00")),
    "month-13": _edit(_not_after(D.UTC_TIME, b"261332000000Z")),
    "generalized-time-garbage": _edit(_not_after(D.GENERALIZED_TIME, b"2026XX01000000Z")),
    "huge-subject": _edit(_name_value(SUBJECT, D.UTF8_STRING, b"x" * 60000)),
    "truncated": _truncated,
    "non-minimal-length": _non_minimal_length,
    "non-minimal-length-in-tbs": _edit(_tbs_long_length),
    "utc-time-offset": _edit(_not_after(D.UTC_TIME, b"2608010000+0100")),
    "generalized-time-fraction": _edit(_not_after(D.GENERALIZED_TIME, b"20260801000000.5Z")),
    "version-4": _edit(_version(3)),
    "version-9": _edit(_version(8)),
    "boolean-true-0x01": _edit(_critical_flag(b"\x01")),
    "explicit-boolean-false": _edit(_critical_flag(None)),
    "wrong-signature-parameters": _wrong_parameters,
    "printable-underscore-subject": _edit(
        _name_value(SUBJECT, D.PRINTABLE_STRING, b"mail_relay.contoso.test")
    ),
}
"""Every kind, by a name used as the test id."""

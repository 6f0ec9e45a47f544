"""Reading the certificates out of a TLS Certificate message, TLS 1.2 and 1.3 layouts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlsprobe.probe.transport.certmsg import certificates

LEAF, INTERMEDIATE = b"\x30\x82leaf-der", b"\x30\x82intermediate-der"


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def message(body: bytes) -> bytes:
    return b"\x0b" + u24(len(body)) + body


def tls12(*ders: bytes) -> bytes:
    entries = b"".join(u24(len(d)) + d for d in ders)
    return message(u24(len(entries)) + entries)


def tls13(*ders: bytes, context: bytes = b"") -> bytes:
    entries = b"".join(u24(len(d)) + d + b"\x00\x04\x00\x05\x00\x00" for d in ders)
    return message(bytes([len(context)]) + context + u24(len(entries)) + entries)


def test_both_layouts_give_the_chain_in_order() -> None:
    assert certificates(0x0303, tls12(LEAF, INTERMEDIATE)) == (LEAF, INTERMEDIATE)
    assert certificates(0x0304, tls13(LEAF, INTERMEDIATE)) == (LEAF, INTERMEDIATE)
    assert certificates(0x0304, tls13(LEAF, context=b"ctx")) == (LEAF,)


@pytest.mark.parametrize(
    "broken",
    [
        b"",
        b"\x0b\x00\x00",
        b"\x02" + tls12(LEAF)[1:],  # not a Certificate message
        tls12(LEAF)[:-1],  # truncated
        message(u24(100) + u24(len(LEAF)) + LEAF),  # list longer than the message
        message(u24(3) + u24(0)),  # an empty certificate
    ],
)
def test_malformed_messages_give_nothing(broken: bytes) -> None:
    assert certificates(0x0303, broken) == ()


@given(st.binary(max_size=300), st.sampled_from([0x0301, 0x0303, 0x0304]))
def test_any_bytes_end_in_a_tuple_never_an_exception(data: bytes, version: int) -> None:
    found = certificates(version, b"\x0b" + data)
    assert isinstance(found, tuple)
    assert all(der and der in data for der in found)

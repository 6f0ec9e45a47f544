"""DER surgery on real certificates: parse to a tree, change a field, re-encode, re-sign.

The judge must survive certificates that `cryptography` will not read. Such certificates are
made here from good ones built by `tests.support.pki`: the to-be-signed part is parsed into a
tree of TLVs, one field is changed (a signature algorithm nobody supports, a subject string of
the wrong type, a duplicated extension, an impossible date...), the tree is encoded again and
signed by the issuer's key, so everything but the changed field stays valid.

Only what certificates use is supported: single-byte tags and definite lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
T61_STRING = 0x14
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
BOOLEAN = 0x01

SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
ECDSA_SHA256_NULL = bytes.fromhex("300c06082a8648ce3d0403020500")
SHA256_RSA_ABSENT = bytes.fromhex("300b06092a864886f70d01010b")
SHA256_RSA_INTEGER = bytes.fromhex("300e06092a864886f70d01010b020100")

# Signature algorithms cryptography does not know: GOST R 34.10-2012 (256 bit) and SM2 with SM3.
GOST_2012_256 = "1.2.643.7.1.1.3.2"
SM2_SM3 = "1.2.156.10197.1.501"


@dataclass
class Node:
    """One TLV. Constructed nodes (tag bit 0x20) hold children; primitive ones hold bytes."""

    tag: int
    value: bytes = b""
    children: list[Node] = field(default_factory=list)
    encoded: bytes | None = None
    """The whole TLV as given, for encodings `encode` would correct (a BER length)."""

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def __getitem__(self, index: int) -> Node:
        return self.children[index]


def length_bytes(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length_bytes(len(content)) + content


def encode(node: Node) -> bytes:
    if node.encoded is not None:
        return node.encoded
    if node.constructed:
        return tlv(node.tag, b"".join(encode(child) for child in node.children))
    return tlv(node.tag, node.value)


def parse(data: bytes) -> Node:
    node, end = _parse_at(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes")
    return node


def _parse_at(data: bytes, offset: int) -> tuple[Node, int]:
    tag = data[offset]
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    content = data[start : start + length]
    if len(content) != length:
        raise ValueError("truncated")
    if not tag & 0x20:
        return Node(tag, content), start + length
    children: list[Node] = []
    position = 0
    while position < length:
        child, position = _parse_at(content, position)
        children.append(child)
    return Node(tag, children=children), start + length


def oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


class Certificate:
    """A certificate taken apart: `tbs` is the editable tree, `resign` puts it back together."""

    def __init__(self, der: bytes) -> None:
        self.root = parse(der)
        self.tbs = self.root[0]

    # Positions inside TBSCertificate (version [0] is present in every v3 certificate).
    SERIAL, SIGNATURE, ISSUER, VALIDITY, SUBJECT, SPKI = 1, 2, 3, 4, 5, 6

    @property
    def extensions(self) -> list[Node]:
        """The Extension SEQUENCEs, editable in place."""
        wrapper = next(n for n in self.tbs.children if n.tag == 0xA3)
        return wrapper[0].children

    def set_signature_algorithm(self, dotted: str) -> None:
        """Claim a signature algorithm, in the TBS and outside it (they must agree)."""
        algorithm = parse(tlv(SEQUENCE, oid(dotted)))
        self.tbs.children[self.SIGNATURE] = algorithm
        self.root.children[1] = algorithm

    def resign(self, signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None) -> bytes:
        """Encode again; sign the new TBS with `signer` (SHA-256), or keep the old signature
        bytes when `signer` is None (for algorithms nobody here can sign with)."""
        tbs = encode(self.tbs)
        if signer is not None:
            algorithm = parse(SHA256_RSA if isinstance(signer, rsa.RSAPrivateKey) else ECDSA_SHA256)
            self.tbs.children[self.SIGNATURE] = algorithm
            tbs = encode(self.tbs)
            self.root.children[1] = algorithm
            self.root.children[2] = Node(BIT_STRING, b"\x00" + sign(signer, tbs))
        return tlv(SEQUENCE, tbs + encode(self.root[1]) + encode(self.root[2]))


def sign(signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    if isinstance(signer, rsa.RSAPrivateKey):
        return signer.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return signer.sign(data, ec.ECDSA(hashes.SHA256()))


def name_value_nodes(name: Node) -> list[Node]:
    """The value TLV of every AttributeTypeAndValue of a Name, in order."""
    return [atv[1] for rdn in name.children for atv in rdn.children]

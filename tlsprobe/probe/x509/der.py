"""A lenient reader for certificates `cryptography` refuses: what can be read, and what cannot.

Servers send certificates that strict parsers reject as a whole: a PrintableString holding `*`,
a T61String with 8-bit bytes, an impossible date, a length in long form where DER wants the
short one. The report must still show the subject, the dates and the names the administrator
will recognise, so this module walks the TBSCertificate field by field, tolerating what it can
(non-minimal lengths, string types holding the wrong characters) and noting every deviation.
It never recurses into arbitrary depth: the certificate's shape is fixed, and every read is
bounded by the DER it was given. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

_BOOLEAN, _SEQUENCE = 0x01, 0x30
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_UTF8, _PRINTABLE, _T61, _IA5, _UNIVERSAL, _BMP = 0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E
_STRING_NAMES = {
    _UTF8: "UTF8String",
    _PRINTABLE: "PrintableString",
    _T61: "T61String",
    _IA5: "IA5String",
    _UNIVERSAL: "UniversalString",
    _BMP: "BMPString",
    0x12: "NumericString",
    0x1A: "VisibleString",
}
_PRINTABLE_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_SAN, _BASIC_CONSTRAINTS = "2.5.29.17", "2.5.29.19"
_DNS_NAME = 0x82
_MAX_ITEMS = 4096
"""Elements read from any one SEQUENCE or SET: a bound on work, far above real certificates."""


class DerError(ValueError):
    """Bytes that do not even hold the TLV structure of a certificate."""


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    offset: int
    """Offset of the tag byte."""
    start: int
    """Offset of the content."""
    end: int


def read_tlv(data: bytes, offset: int, limit: int | None = None) -> Tlv:
    """One TLV at `offset`. Long-form lengths are accepted even where DER wants short ones."""
    limit = len(data) if limit is None else limit
    if offset + 2 > limit:
        raise DerError(f"truncated at byte {offset}")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise DerError(f"multi-byte tag at byte {offset}")
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError(f"unsupported length form at byte {offset}")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    if start + length > limit:
        raise DerError(f"truncated: element at byte {offset} runs past the end")
    return Tlv(tag, offset, start, start + length)


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    items: list[Tlv] = []
    offset = parent.start
    while offset < parent.end:
        if len(items) >= _MAX_ITEMS:
            raise DerError(f"more than {_MAX_ITEMS} elements in one structure")
        item = read_tlv(data, offset, parent.end)
        items.append(item)
        offset = item.end
    return items


def oid_string(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise DerError("malformed object identifier")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


@dataclass
class LenientCertificate:
    """What could be read. A field left None could not be; `notes` says what deviated."""

    serial: int | None = None
    signature_oid: str | None = None
    issuer: str | None = None
    subject: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    common_names: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    is_ca: bool = False
    spki: bytes | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    """Deviations by part: encoding, serial, signature, issuer, subject, validity, extensions."""

    def note(self, part: str, detail: str) -> None:
        self.notes.setdefault(part, []).append(detail)


def read_certificate(der: bytes) -> LenientCertificate:
    """Read every field that can be read; never raises."""
    result = LenientCertificate()
    try:
        fields = _tbs_fields(der)
    except DerError as exc:
        result.note("encoding", str(exc))
        return result
    if fields and fields[0].tag == 0xA0:
        fields = fields[1:]  # version [0]
    readers = (_serial, _signature, _issuer, _validity, _subject, _spki)
    for reader, item in zip(readers, fields, strict=False):
        try:
            reader(der, item, result)
        except (DerError, ValueError, IndexError) as exc:
            result.note(reader.__name__.strip("_"), f"cannot be read: {exc}")
    extensions = next((f for f in fields[6:] if f.tag == 0xA3), None)
    if extensions is not None:
        try:
            _extensions(der, extensions, result)
        except (DerError, ValueError, IndexError) as exc:
            result.note("extensions", f"cannot be read: {exc}")
    return result


def _tbs_fields(der: bytes) -> list[Tlv]:
    outer = read_tlv(der, 0)
    tbs = read_tlv(der, outer.start, outer.end)
    if outer.tag != _SEQUENCE or tbs.tag != _SEQUENCE:
        raise DerError("not a certificate: no SEQUENCE")
    return children(der, tbs)


def _serial(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    out.serial = int.from_bytes(der[item.start : item.end], "big", signed=True)


def _signature(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    algorithm = children(der, item)[0]
    out.signature_oid = oid_string(der[algorithm.start : algorithm.end])


def _issuer(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    out.issuer, _ = _name(der, item, out, "issuer")


def _subject(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    out.subject, out.common_names = _name(der, item, out, "subject")


def _spki(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    out.spki = der[item.offset : item.end]


def _validity(der: bytes, item: Tlv, out: LenientCertificate) -> None:
    start, end = children(der, item)[:2]
    out.not_before = _time(der, start)
    out.not_after = _time(der, end)


def _time(der: bytes, item: Tlv) -> datetime:
    text = der[item.start : item.end].decode("ascii")
    if item.tag == _UTC_TIME and len(text) == 13:
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        # RFC 5280: UTCTime years 50-99 are 19xx; strptime's pivot is 69.
        year = parsed.year if parsed.year < 2050 else parsed.year - 100
        return parsed.replace(year=year, tzinfo=UTC)
    if item.tag == _GENERALIZED_TIME and len(text) == 15:
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    raise DerError(f"time {text!r} is neither UTCTime nor GeneralizedTime in DER form")


def _name(der: bytes, item: Tlv, out: LenientCertificate, part: str) -> tuple[str, tuple[str, ...]]:
    """RFC 4514 rendering (last RDN first) and the CN values."""
    rdns: list[str] = []
    common_names: list[str] = []
    for rdn in children(der, item):
        pairs = []
        for atv in children(der, rdn):
            kind, value = children(der, atv)[:2]
            oid = oid_string(der[kind.start : kind.end])
            label = _ATTRIBUTE_NAMES.get(oid, oid)
            text = _string(der[value.start : value.end], value.tag, label, out, part)
            if label == "CN":
                common_names.append(text)
            pairs.append(f"{label}={_escape(text)}")
        rdns.append("+".join(pairs))
    return ",".join(reversed(rdns)), tuple(common_names)


def _string(raw: bytes, tag: int, where: str, out: LenientCertificate, part: str) -> str:
    kind = _STRING_NAMES.get(tag, f"tag 0x{tag:02x}")
    if tag == _UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            out.note(part, f"{where} is a UTF8String that is not valid UTF-8")
            return raw.decode("utf-8", "replace")
    if tag == _BMP:
        return raw.decode("utf-16-be", "replace")
    if tag == _UNIVERSAL:
        return raw.decode("utf-32-be", "replace")
    if tag == _PRINTABLE and not set(raw) <= _PRINTABLE_CHARS:
        bad = sorted({chr(b) if b < 0x80 else f"0x{b:02x}" for b in set(raw) - _PRINTABLE_CHARS})
        out.note(part, f"{where} is a PrintableString holding {', '.join(bad)}, not allowed there")
    elif tag in (_T61, _IA5) and any(b >= 0x80 for b in raw):
        out.note(part, f"{where} is a {kind} with 8-bit bytes (shown as Latin-1)")
    elif tag not in _STRING_NAMES:
        out.note(part, f"{where} is not a string ({kind})")
    return raw.decode("latin-1")


def _escape(text: str) -> str:
    escaped = "".join(f"\\{c}" if c in ',+"\\<>;=' else c for c in text)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    return escaped


def _extensions(der: bytes, wrapper: Tlv, out: LenientCertificate) -> None:
    seen: set[str] = set()
    for oid, value in _extension_list(der, wrapper):
        if oid in seen:
            out.note("extensions", f"extension {oid} appears more than once")
            continue
        seen.add(oid)
        if oid == _SAN:
            out.dns_names = tuple(
                der[n.start : n.end].decode("latin-1")
                for n in children(der, value)
                if n.tag == _DNS_NAME
            )
        elif oid == _BASIC_CONSTRAINTS:
            fields = children(der, value)
            out.is_ca = bool(fields and fields[0].tag == _BOOLEAN and der[fields[0].start])


def _extension_list(der: bytes, wrapper: Tlv) -> Iterator[tuple[str, Tlv]]:
    """(OID, parsed value) per extension; criticality is the verifier's business."""
    for extension in children(der, children(der, wrapper)[0]):
        parts = children(der, extension)
        octets = parts[-1]
        yield (
            oid_string(der[parts[0].start : parts[0].end]),
            read_tlv(der, octets.start, octets.end),
        )

"""Judge TLSA records (RFC 6698, 7671, 7672) against the chain an SMTP server served.

Pure: a TLSA answer (records plus the DNSSEC status the resolver gave them) and the DER chain
as sent go in, one `dane` check and the verdict of every record come out. SMTP's rules
(RFC 7672 section 3.1): only DANE-TA(2) and DANE-EE(3) are usable; DANE-EE matches the leaf's
certificate or public key whatever its names and dates; DANE-TA matches a certificate of the
chain as sent, which must then issue a valid leaf carrying the MX host name, the TLSA base
domain or the next-hop domain (section 3.2.3). PKIX-TA(0) and PKIX-EE(1), unknown parameters
and association data of the wrong length are unusable. Records that do not validate (an
insecure zone or MX lookup) are ignored by senders, so they only earn a warning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tlsprobe.model import (
    Check,
    CheckName,
    DaneFindings,
    DnssecStatus,
    Status,
    Tlsa,
    TlsaMatch,
    TlsaVerdict,
)
from tlsprobe.probe.dns import danecache
from tlsprobe.probe.listing import listed
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509 import o365
from tlsprobe.probe.x509.evaluate import TrustStore, check_trust

CHECK = CheckName.DANE
SYMPTOM = (
    "senders that validate DANE (Exchange Online to a DNSSEC-signed domain, Postfix with "
    "security level dane) defer every message to this host until the TLSA records are fixed"
)
MX_SYMPTOM = (
    "senders that validate DNSSEC (Exchange Online to a DNSSEC-signed domain, Postfix with "
    "security level dane) defer every message to the domain until its MX answer validates"
)

DANE_TA, DANE_EE = 2, 3
_DIGEST_SIZES = {1: 32, 2: 64}
"""Matching type 1 is SHA2-256, 2 is SHA2-512 (RFC 6698 section 2.1.3)."""
_USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """What the resolver said about `_PORT._tcp.HOST` TLSA."""

    name: str
    """The owner asked."""
    status: DnssecStatus
    records: tuple[Tlsa, ...] = ()
    base: str = ""
    """The TLSA base domain: the host after CNAME expansion (RFC 7672 section 2.2.3)."""
    detail: str = ""
    """Failure words from the resolver, with the extended DNS error when one was given."""


def parse_tlsa(text: str) -> Tlsa:
    """`3 1 1 <hex>` (spaces inside the hex allowed) to a record; raises ValueError."""
    fields = text.split()
    if len(fields) < 4:
        raise ValueError(f"TLSA needs usage, selector, matching type and data: {text!r}")
    usage, selector, mtype = (int(f) for f in fields[:3])
    if not all(0 <= v <= 255 for v in (usage, selector, mtype)):
        raise ValueError(f"TLSA parameters are octets: {text!r}")
    return Tlsa(usage, selector, mtype, bytes.fromhex("".join(fields[3:])))


def unusable_reason(record: Tlsa) -> str:
    """Why a sender ignores this record; empty when it is usable for SMTP."""
    if record.usage in (0, 1):
        return f"{_USAGE_NAMES[record.usage]}({record.usage}) is not used by SMTP (RFC 7672 3.1.3)"
    if record.usage not in (DANE_TA, DANE_EE):
        return f"unknown certificate usage {record.usage}"
    if record.selector not in (0, 1):
        return f"unknown selector {record.selector}"
    if record.mtype not in (0, 1, 2):
        return f"unknown matching type {record.mtype}"
    size = _DIGEST_SIZES.get(record.mtype)
    if size is not None and len(record.data) != size:
        return f"malformed: matching type {record.mtype} needs {size} bytes, has {len(record.data)}"
    if not record.data:
        return "malformed: empty association data"
    return ""


def association(cert: x509.Certificate, selector: int, mtype: int) -> bytes | None:
    """The association data `cert` gives for (selector, matching type); None if unreadable."""
    try:
        if selector == 0:
            selected = cert.public_bytes(Encoding.DER)
        else:
            selected = cert.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
    except (ValueError, TypeError):
        return None
    if mtype == 1:
        return hashlib.sha256(selected).digest()
    if mtype == 2:
        return hashlib.sha512(selected).digest()
    return selected


def judge(
    answer: TlsaAnswer,
    chain_der: Sequence[bytes],
    *,
    host: str,
    next_hop: str | None,
    mx_status: DnssecStatus | None,
    now: datetime,
) -> tuple[Check | None, DaneFindings]:
    """The `dane` check (None when no TLSA records exist: not applicable) and the findings."""
    chain = _Chain(tuple(chain_der), [certs.load(der) for der in chain_der])
    names = _reference_names(host, answer.base, next_hop, mx_status)
    verdicts = _verdicts(answer.records, chain, names, now)
    findings = DaneFindings(answer.name, answer.status, mx_status, verdicts, answer.detail)
    return _check(answer, findings, chain.certs), findings


def _reference_names(
    host: str, base: str, next_hop: str | None, mx_status: DnssecStatus | None
) -> tuple[str, ...]:
    """RFC 7672 3.2.3: the MX host, the TLSA base domain, and the next-hop domain (which a
    sender trusts only when the MX lookup that led to the host was secure)."""
    names = [host, base]
    if next_hop and mx_status in (None, DnssecStatus.SECURE):
        names.append(next_hop)
    return tuple(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True, slots=True)
class _Chain:
    """The chain as sent: DER (the cache key of DANE-TA verdicts) and parsed."""

    der: tuple[bytes, ...]
    certs: list[x509.Certificate]


def _verdicts(
    records: Sequence[Tlsa],
    chain: _Chain,
    names: tuple[str, ...],
    now: datetime,
) -> tuple[TlsaVerdict, ...]:
    verdicts = [_verdict(r, chain, names, now) for r in records]
    if not any(v.match is TlsaMatch.MATCHED for v in verdicts):
        return tuple(verdicts)
    # With a match in place, a DANE-EE SPKI record for another key is the next key, staged.
    return tuple(
        TlsaVerdict(v.record, TlsaMatch.NEXT_KEY, "matches no served key: the staged next key")
        if v.match is TlsaMatch.NO_MATCH and v.record.usage == DANE_EE and v.record.selector == 1
        else v
        for v in verdicts
    )


def _verdict(record: Tlsa, chain: _Chain, names: tuple[str, ...], now: datetime) -> TlsaVerdict:
    reason = unusable_reason(record)
    if reason:
        return TlsaVerdict(record, TlsaMatch.UNUSABLE, reason)
    if record.usage == DANE_EE:
        if association(chain.certs[0], record.selector, record.mtype) == record.data:
            what = "certificate" if record.selector == 0 else "public key"
            return TlsaVerdict(record, TlsaMatch.MATCHED, f"the leaf's {what}")
        return TlsaVerdict(record, TlsaMatch.NO_MATCH, "matches no served certificate or key")
    # A path verification per probe: remembered per (chain, record, names), see danecache.
    return danecache.trust_anchor_verdict(
        chain.der,
        record,
        names,
        now,
        lambda: _trust_anchor_verdict(record, chain.certs, names, now),
    )


def _trust_anchor_verdict(
    record: Tlsa, chain: Sequence[x509.Certificate], names: tuple[str, ...], now: datetime
) -> TlsaVerdict:
    """DANE-TA: a CA certificate the server sent, then a valid path and a name (3.2.3)."""
    anchors = [
        (i, c)
        for i, c in enumerate(chain)
        if i and association(c, record.selector, record.mtype) == record.data
    ]
    if not anchors:
        return TlsaVerdict(record, TlsaMatch.NO_MATCH, "matches no certificate the server sent")
    position, anchor = anchors[0]
    subject = anchor.subject.rfc4514_string()
    trusted, _path = check_trust(list(chain), TrustStore([anchor], f"TLSA {record.text}"), now)
    if trusted.status is not Status.OK:
        note = f"chain certificate {position} ({subject}) matches, but {trusted.message}"
        return TlsaVerdict(record, TlsaMatch.NO_MATCH, note)
    leaf = certs.facts(chain[0])
    presented = leaf.dns_names or leaf.common_names
    matched = next((n for n in names if o365.hostname_matches(n, presented)), None)
    if matched is None:
        note = (
            f"trust anchor {subject} matches, but the leaf names "
            f"({listed(list(presented), sep=', ')}) carry none of {', '.join(names)}"
        )
        return TlsaVerdict(record, TlsaMatch.NO_MATCH, note)
    return TlsaVerdict(
        record,
        TlsaMatch.MATCHED,
        f"trust anchor {subject} (chain position {position}); leaf name matches {matched}",
    )


def _check(
    answer: TlsaAnswer, findings: DaneFindings, chain: Sequence[x509.Certificate]
) -> Check | None:
    if answer.status is DnssecStatus.BOGUS:
        # RFC 7672 2.1.1: a bogus answer is no denial of existence; validating senders treat
        # the host as unusable and defer: an outage, whatever records the zone means to publish.
        detail = f": {answer.detail}" if answer.detail else ""
        return Check(
            CHECK,
            Status.CRITICAL,
            f"TLSA answer for {answer.name} is bogus (DNSSEC validation failed{detail}); "
            "validating senders defer every message to this host",
            SYMPTOM,
        )
    if answer.status is DnssecStatus.FAILED:
        return _unknown(
            f"TLSA lookup for {answer.name} failed: {answer.detail or 'no answer'}; "
            "validating senders that see the same failure defer mail"
        )
    if findings.mx_status is DnssecStatus.BOGUS:
        return Check(
            CHECK,
            Status.CRITICAL,
            "the MX lookup that names this host is bogus (SERVFAIL from the validating resolver); "
            "validating senders defer every message to the domain",
            MX_SYMPTOM,
        )
    if not findings.records:
        return None
    insecure = _insecure(answer, findings)
    if insecure:
        return Check(CHECK, Status.WARNING, insecure, "senders ignore these TLSA records")
    usable = [v for v in findings.records if v.match is not TlsaMatch.UNUSABLE]
    if not usable:
        reasons = listed([f"{v.record.text[:24]}...: {v.note}" for v in findings.records])
        return Check(
            CHECK,
            Status.WARNING,
            f"no usable TLSA record at {answer.name} ({reasons}); "
            "senders fall back to unauthenticated TLS",
        )
    matched = [v for v in usable if v.match is TlsaMatch.MATCHED]
    if not matched:
        return Check(CHECK, Status.CRITICAL, _mismatch(answer.name, usable, chain), SYMPTOM)
    return _ok_or_single_key(answer.name, usable, matched, chain)


def _unknown(message: str) -> Check:
    return Check(CHECK, Status.UNKNOWN, message, SYMPTOM)


def _insecure(answer: TlsaAnswer, findings: DaneFindings) -> str:
    if answer.status is DnssecStatus.INSECURE:
        return (
            f"TLSA records at {answer.name} are not DNSSEC-secure (zone unsigned or resolver "
            "not validating): senders ignore them"
        )
    if findings.mx_status is DnssecStatus.INSECURE:
        return (
            "the MX lookup that names this host is not DNSSEC-secure: senders do not use "
            f"the TLSA records at {answer.name}"
        )
    return ""


def _mismatch(name: str, usable: Sequence[TlsaVerdict], chain: Sequence[x509.Certificate]) -> str:
    published = listed([f"{v.record.text[:24]}... ({v.note})" for v in usable])
    return (
        f"no TLSA record at {name} matches the chain served: published {published}; "
        f"the server's key gives {_served(chain[0])}"
    )


def _served(leaf: x509.Certificate) -> str:
    """The records that would match the leaf, for the operator to compare or publish."""
    spki = association(leaf, 1, 1)
    cert = association(leaf, 0, 1)
    return f"3 1 1 {spki.hex() if spki else '?'} (certificate sha256 {cert.hex() if cert else '?'})"


def _ok_or_single_key(
    name: str,
    usable: Sequence[TlsaVerdict],
    matched: Sequence[TlsaVerdict],
    chain: Sequence[x509.Certificate],
) -> Check:
    first = matched[0]
    message = f"{first.record.text[:24]}... at {name} matches {first.note}"
    staged = [v for v in usable if v.match is TlsaMatch.NEXT_KEY]
    if staged:
        message += f"; next key staged ({staged[0].record.text[:24]}...)"
    if len(_keys_covered(usable, chain)) < 2:
        return Check(
            CHECK,
            Status.WARNING,
            f"{message}; only one key covered: no rollover scheme (publish the next key's "
            "3 1 1, or a 2 1 1 for the issuer, before the key changes)",
            "the next key change breaks DANE until the TLSA records follow",
        )
    return Check(CHECK, Status.OK, message)


def _keys_covered(usable: Sequence[TlsaVerdict], chain: Sequence[x509.Certificate]) -> set[bytes]:
    """Distinct keys the usable records pin: the leaf's key, issuers' keys, staged keys."""
    leaf_key = association(chain[0], 1, 0) or b"leaf"
    keys: set[bytes] = set()
    for verdict in usable:
        record = verdict.record
        if verdict.match is TlsaMatch.MATCHED and record.usage == DANE_EE:
            keys.add(leaf_key)
        else:
            keys.add(bytes([record.usage, record.selector, record.mtype]) + record.data)
    return keys

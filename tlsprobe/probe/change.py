"""What a change of leaf certificate is: a clean renewal, or a risky change and why.

One pure function, `classify`, compares the leaf an endpoint (or a sender) showed before with
the one it shows now, each as a `LeafRecord`: the certificate's facts and the verdict it got
there. The exporter keeps the old record across restarts (the history database holds the
certificate and the endpoint's last verdict), so the answer does not depend on whether the
exporter restarted in between. A clean renewal (`ChangeClass.RENEWAL`) keeps the subject, the
SAN set and the issuing CA, has no weaker key, loses no extended key usage, builds a
trusted full chain, fails no check that passed before, and expires later than the one it
replaces. Anything else is `ChangeClass.RISKY`, every difference named by a `ChangeReason` (a
closed set, the metric label) and a sentence ("issuer changed: R11 → WR2; clientAuth EKU
dropped"). The issuing CA is its organization: a sibling intermediate of the same CA with a
trusted chain is `INTERMEDIATE_ROTATED`, not risky, unless the caller says the endpoint's
connector names the issuer (`issuer_bound`: Exchange's TlsCertificateName).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsprobe.model import (
    CertFacts,
    CertPart,
    ChainReason,
    ChangeClass,
    ChangeReason,
    Check,
    CheckName,
    Status,
)
from tlsprobe.probe.listing import listed
from tlsprobe.probe.x509 import facts as certs

__all__ = ["Change", "LeafRecord", "classify", "leaf_record", "security_bits"]

_NO_CHECKS: Mapping[str, Status] = MappingProxyType({})

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH.dotted_string: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string: "clientAuth",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string: "anyExtendedKeyUsage",
}
_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string

# Checks whose failure has a reason of its own, and those a new leaf cannot be blamed for.
_OWN_REASON = frozenset(
    {CheckName.CHAIN_TRUSTED, CheckName.EXPECTED_CERTIFICATE, CheckName.CLIENT_AUTH_EKU}
)
_NOT_THE_LEAF = frozenset({CheckName.STARTTLS, CheckName.TLS_VERSION})

_MAX_NAMES = 6
"""Names listed in a reason's sentence; more are counted ("and 3 more")."""


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """A leaf as the classifier compares it: its facts and the verdict it got."""

    fingerprint: str
    subject: str
    issuer: str
    names: tuple[str, ...]
    """SAN dNSNames."""
    key_type: str
    key_bits: int
    ekus: frozenset[str] | None
    """Dotted OIDs of the extended key usage; None when the extension is absent (any use)."""
    not_after: float
    """Unix time; None-like 0.0 when the date could not be read."""
    checks: Mapping[str, Status] | None = None
    """Status per check name of the verdict it got; None when the verdict is not known (an
    old history): then every check is taken to have passed before."""
    chain_reason: ChainReason | None = None
    """Why chain_trusted failed, when it did."""
    issuer_ca: str = ""
    """The issuer's organization (`O=…, C=…`); "" when it names none: then the CA is known
    by the issuer's whole name only."""


@dataclass(frozen=True, slots=True)
class Change:
    """The class of one leaf change, each risky difference by reason and in words."""

    change: ChangeClass
    reasons: tuple[ChangeReason, ...] = ()
    details: tuple[str, ...] = ()
    previous_failing: tuple[str, ...] = ()
    """The checks that were critical on the old leaf: serving it again would not help."""

    @property
    def risky(self) -> bool:
        return self.change is ChangeClass.RISKY

    @property
    def text(self) -> str:
        """'issuer changed: R11 → WR2; clientAuth EKU dropped', or 'clean renewal'."""
        return "; ".join(self.details) if self.details else "clean renewal"


def leaf_record(leaf: CertFacts, checks: Iterable[Check] | None) -> LeafRecord:
    """The record of `leaf` as judged by `checks` (None: verdict unknown)."""
    statuses: dict[str, Status] | None = None
    reason = None
    if checks is not None:
        statuses = {}
        for check in checks:
            statuses[check.name.value] = check.status
            if check.name is CheckName.CHAIN_TRUSTED:
                reason = check.reason
    unreadable = leaf.unreadable(CertPart.VALIDITY)
    return LeafRecord(
        fingerprint=leaf.sha256,
        subject=leaf.subject,
        issuer=leaf.issuer,
        names=leaf.dns_names,
        key_type=leaf.key_type,
        key_bits=leaf.key_bits,
        ekus=certs.extended_key_usages(leaf.der),
        not_after=0.0 if unreadable else leaf.not_after.timestamp(),
        checks=MappingProxyType(statuses) if statuses is not None else None,
        chain_reason=reason,
        issuer_ca=certs.issuing_organization(leaf.der),
    )


def classify(old: LeafRecord | None, new: LeafRecord, *, issuer_bound: bool = False) -> Change:
    """Clean renewal or risky change from `old` to `new` (None: the old one is not known).
    `issuer_bound`: the endpoint's connector names the issuer (Exchange), so another
    intermediate of the same CA is risky too."""
    found: list[tuple[ChangeReason, str]] = []
    if old is None:
        found.append((ChangeReason.PREVIOUS_UNKNOWN, "the certificate it replaces is not known"))
    else:
        found.extend(_certificate_differences(old, new))
        if old.issuer != new.issuer:
            found.append(_issuer_difference(old, new, issuer_bound))
    found.extend(_verdict_differences(old, new))
    before = (old.checks if old is not None else None) or _NO_CHECKS
    failed = tuple(sorted(name for name, status in before.items() if status is Status.CRITICAL))
    found.sort(key=lambda item: _ORDER[item[0]])
    risky = any(reason is not ChangeReason.INTERMEDIATE_ROTATED for reason, _ in found)
    kind = ChangeClass.RISKY if risky else ChangeClass.RENEWAL
    return Change(kind, tuple(r for r, _ in found), tuple(t for _, t in found), failed)


_ORDER = {reason: position for position, reason in enumerate(ChangeReason)}


def _certificate_differences(
    old: LeafRecord, new: LeafRecord
) -> Iterable[tuple[ChangeReason, str]]:
    if old.subject != new.subject:
        yield ChangeReason.SUBJECT_CHANGED, f"subject changed: {old.subject} → {new.subject}"
    before = {n.lower().rstrip(".") for n in old.names}
    after = {n.lower().rstrip(".") for n in new.names}
    if after - before:
        yield ChangeReason.NAMES_ADDED, f"names added: {_listed(after - before)}"
    if before - after:
        yield ChangeReason.NAMES_REMOVED, f"names removed: {_listed(before - after)}"
    if _weaker(old, new):
        yield (
            ChangeReason.KEY_WEAKER,
            f"key weaker: {old.key_type} {old.key_bits} → {new.key_type} {new.key_bits}",
        )
    lost = _lost_usages(old.ekus, new.ekus)
    if lost:
        shown = ", ".join(_EKU_NAMES.get(oid, oid) for oid in sorted(lost))
        yield ChangeReason.EKU_LOST, f"{shown} EKU dropped"
    if new.not_after <= old.not_after:
        yield (
            ChangeReason.EXPIRY_EARLIER,
            f"expiry not later: {_date(old.not_after)} → {_date(new.not_after)}",
        )


def _issuer_difference(
    old: LeafRecord, new: LeafRecord, issuer_bound: bool
) -> tuple[ChangeReason, str]:
    """Another CA, or a sibling intermediate of the same one: the same issuer organization
    and a trusted new chain (R10 → R11). The sibling is risky only where it is bound."""
    move = f"{_short(old.issuer)} → {_short(new.issuer)}"
    trusted = (new.checks or _NO_CHECKS).get(CheckName.CHAIN_TRUSTED) is Status.OK
    if not (trusted and new.issuer_ca and new.issuer_ca == old.issuer_ca):
        return ChangeReason.ISSUER_CHANGED, f"issuer changed: {move}"
    if issuer_bound:
        why = "Exchange's TlsCertificateName names the issuer: update the send connector"
        return ChangeReason.ISSUER_CHANGED, f"issuer changed: {move} (same CA; {why})"
    return ChangeReason.INTERMEDIATE_ROTATED, f"intermediate rotated: {move}"


def _verdict_differences(
    old: LeafRecord | None, new: LeafRecord
) -> Iterable[tuple[ChangeReason, str]]:
    now = new.checks or _NO_CHECKS
    before = (old.checks if old is not None else None) or _NO_CHECKS
    if _failing(now.get(CheckName.CHAIN_TRUSTED)):
        if new.chain_reason is ChainReason.INTERMEDIATE_MISSING:
            yield ChangeReason.INTERMEDIATE_MISSING, "intermediate missing"
        else:
            why = new.chain_reason.value if new.chain_reason else "untrusted"
            yield ChangeReason.CHAIN_UNTRUSTED, f"chain untrusted: {why}"
    pin = CheckName.EXPECTED_CERTIFICATE
    if _failing(now.get(pin)) and not _failing(before.get(pin)):
        yield ChangeReason.PIN_MISMATCH, "pin no longer matches"
    newly = [
        name
        for name, status in now.items()
        if name not in _OWN_REASON
        and name not in _NOT_THE_LEAF
        and _failing(status)
        and status > before.get(name, Status.OK)
    ]
    if newly:
        words = ", ".join(f"{name} {now[name].label}" for name in sorted(newly))
        yield ChangeReason.CHECK_FAILING, f"newly failing: {words}"


def _failing(status: Status | None) -> bool:
    return status is Status.WARNING or status is Status.CRITICAL


def _lost_usages(old: frozenset[str] | None, new: frozenset[str] | None) -> frozenset[str]:
    """The usages `old` allowed that `new` does not (no extension, or anyEKU: every usage)."""
    if new is None or _ANY_EKU in new:
        return frozenset()
    if old is None or _ANY_EKU in old:
        # Every usage was allowed; name the ones that matter for mail.
        old = frozenset(oid for oid in _EKU_NAMES if oid != _ANY_EKU)
    return old - new


def security_bits(key_type: str, bits: int) -> int:
    """Approximate security strength of a key (NIST SP 800-57 part 1, table 2)."""
    if key_type in ("RSA", "DSA"):
        for size, strength in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
            if bits >= size:
                return strength
        return 0
    if key_type == "EC":
        return bits // 2
    return {"Ed25519": 128, "Ed448": 224}.get(key_type, 0)


def _weaker(old: LeafRecord, new: LeafRecord) -> bool:
    if old.key_type == new.key_type:
        return new.key_bits < old.key_bits
    return security_bits(new.key_type, new.key_bits) < security_bits(old.key_type, old.key_bits)


def _short(dn: str) -> str:
    """An issuer by its common name where it has one (R11, E6), else the whole name."""
    for part in dn.split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN" and value:
            return value.strip()
    return dn


def _listed(names: set[str]) -> str:
    return listed(sorted(names), _MAX_NAMES, ", ")


def _date(timestamp: float) -> str:
    if not timestamp:
        return "(unreadable)"
    return f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d}"

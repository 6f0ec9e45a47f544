"""Trust: whether a chain as sent builds to an anchor of the trust store, and if not, why.

Trust is decided by `cryptography.x509.verification` from the certificates the server sent plus
the trust store, never fetching missing intermediates (Exchange Online fetches none either).
When verification fails, a small path walk tells the reasons apart (`ChainReason`: self-signed,
unknown root, intermediate missing, expired, not yet valid, malformed).  `TrustStore` is built
once per file (or from the system store) and shared; verdicts are cached per (chain, store)
while no certificate involved crosses a validity boundary (`cached_check`), bounded in entries
and bytes.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509 import verification as xv

from tlsprobe.model import CertFacts, ChainReason, Check, CheckName, Status
from tlsprobe.probe import files
from tlsprobe.probe.x509 import bundle, readable
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.bytecache import ByteLRU

SYMPTOM = "450 4.4.317 UntrustedRoot / 550 5.7.64 TenantAttribution: relay refused"
"""What Exchange Online does with an untrusted chain."""
CACHE_SIZE = 16384
"""Chains remembered: enough for a large fleet's distinct (chain, host) pairs."""
CACHE_BYTES = 64 << 20
"""Bytes of chains each verdict cache may hold (estimated by `chain_bytes`): a fleet of
servers rotating large chains must not grow memory beyond it."""


def chain_bytes(chain_der: tuple[bytes, ...]) -> int:
    # DER plus the parsed facts and checks derived from it, about as large again.
    return 2 * sum(len(der) for der in chain_der) + 2048


class TrustStoreError(ValueError):
    """A trust store file that cannot be read or holds no certificate."""


class TrustStore:
    """Trust anchors: the system store or a PEM bundle. Built once, shared by every probe."""

    __slots__ = ("_by_subject", "anchors", "skipped", "source", "store")

    def __init__(self, anchors: Sequence[x509.Certificate], source: str, skipped: int = 0) -> None:
        if not anchors:
            raise TrustStoreError(f"{source}: holds no certificate")
        self.anchors = tuple(anchors)
        self.source = source
        self.skipped = skipped
        """Certificates in the bundle that could not be loaded (see `bundle`)."""
        # The cryptography Store is built once; it is immutable and safe to share.
        self.store = xv.Store(list(self.anchors))
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in self.anchors:
            self._by_subject.setdefault(_quiet_subject(cert), []).append(cert)

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "PEM") -> TrustStore:
        """Every certificate of a PEM bundle that loads; the others are skipped and counted."""
        anchors, skipped = bundle.read_bundle(pem)
        if not anchors:
            why = f"{skipped} could not be loaded" if skipped else "none found"
            raise TrustStoreError(f"{source}: no PEM certificate could be read ({why})")
        return cls(anchors, source, skipped)

    @classmethod
    def from_pem_file(cls, path: str | Path) -> TrustStore:
        try:
            data = files.read(path, bundle.MAX_BUNDLE_BYTES)
        except files.FileError as exc:
            raise TrustStoreError(str(exc)) from None
        return cls.from_pem(data, str(path))

    @classmethod
    def system(cls) -> TrustStore:
        return _system_store()

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return [c for c in self._by_subject.get(cert.issuer, []) if _signed_by(cert, c)]

    def anchors_named(self, subject: x509.Name) -> list[x509.Certificate]:
        return self._by_subject.get(subject, [])

    def contains(self, cert: x509.Certificate) -> bool:
        return cert in self._by_subject.get(cert.subject, [])


def _quiet_subject(cert: x509.Certificate) -> x509.Name:
    # A root's long or odd name makes the library warn; the user never sees library warnings.
    return certs.quiet(lambda: cert.subject)


@cache
def _system_store() -> TrustStore:
    paths = ssl.get_default_verify_paths()
    candidates = [
        paths.cafile,
        paths.openssl_cafile,
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return TrustStore.from_pem_file(candidate)
    raise TrustStoreError("no system trust store found; pass --ca-file")


def check_trust(
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    now: datetime,
    sent: Sequence[CertFacts] = (),
) -> tuple[Check, list[x509.Certificate]]:
    """chain_trusted, and the verified path (leaf to anchor) when there is one. `sent` are the
    facts of `chain` when the caller has them (their problems name a malformed chain)."""
    leaf, intermediates = chain[0], list(chain[1:])
    try:
        verified = _verifier(trust, now).verify(leaf, intermediates)
    except (xv.VerificationError, *certs.READ_ERRORS) as exc:
        malformed = readable.first_critical(sent or [certs.facts(c) for c in chain])
        if malformed is not None:
            return _untrusted(readable.MALFORMED, f"chain rejected: {malformed}"), []
        try:
            return _diagnose(chain, trust, now, str(exc)), []
        except certs.READ_ERRORS:
            # A name the walk cannot compare (a legacy string type): the verifier's word stands.
            return _untrusted(ChainReason.INVALID, f"chain rejected: {exc}"), []
    path = list(verified.chain)
    anchor = certs.facts(path[-1])
    return Check(
        CheckName.CHAIN_TRUSTED, Status.OK, f"chains to {anchor.subject} ({trust.source})"
    ), path


_TrustVerdict = tuple[Check, tuple[CertFacts, ...]]
_BOUNDARY_MARGIN = timedelta(seconds=2)
"""Verification may compare at whole seconds; near a validity boundary nothing is reused."""


class _TrustCache:
    """`check_trust` results per (chain, trust store), reused while the clock stays between the
    same two validity boundaries of every certificate the verdict can depend on: those sent, and
    the trust store's certificates named as an issuer of one of them. Bounded, least recently
    used first out."""

    def __init__(self, size: int) -> None:
        self._entries: ByteLRU[
            tuple[tuple[bytes, ...], TrustStore], tuple[datetime, datetime, _TrustVerdict]
        ] = ByteLRU(max_bytes=CACHE_BYTES, max_entries=size)

    def get(
        self,
        chain_der: tuple[bytes, ...],
        sent: Sequence[CertFacts],
        trust: TrustStore,
        now: datetime,
    ) -> _TrustVerdict:
        key = (chain_der, trust)
        entry = self._entries.get(key)
        if entry is not None and entry[0] < now < entry[1]:
            return entry[2]
        unparsed = readable.unparsed(sent)
        if unparsed is not None:
            # Nothing to give the verifier; a chain that cannot be parsed is never trusted.
            return _untrusted(
                readable.MALFORMED,
                f"{readable.describe(*unparsed)} cannot be parsed, so the chain cannot be "
                f"verified ({unparsed[1].problems[0].detail})",
            ), ()
        chain = [certs.load(der) for der in chain_der]
        # Facts already hold the library's warnings as problems; they are not printed again.
        trusted, path = certs.quiet(lambda: check_trust(chain, trust, now, sent))
        verdict = (trusted, tuple(certs.facts(c) for c in path))
        window = certs.quiet(lambda: _stable_window(chain, sent, trust, now))
        if window is not None:
            self._entries.put(key, (*window, verdict), chain_bytes(chain_der))
        return verdict

    def fresh(self, chain_der: tuple[bytes, ...], trust: TrustStore, now: datetime) -> bool:
        entry = self._entries.get((chain_der, trust))
        return entry is not None and entry[0] < now < entry[1]

    def clear(self) -> None:
        self._entries.clear()


def _stable_window(
    chain: Sequence[x509.Certificate],
    sent: Sequence[CertFacts],
    trust: TrustStore,
    now: datetime,
) -> tuple[datetime, datetime] | None:
    """The open interval around `now` in which no relevant certificate starts or ends being
    valid, shrunk by a margin; None when `now` is too close to a boundary to reuse anything."""
    try:
        issuers = {c.issuer for c in chain}
    except certs.READ_ERRORS:
        return None  # an issuer name that cannot be parsed: judge afresh every time
    anchors = [certs.facts(a) for name in issuers for a in trust.anchors_named(name)]
    return validity_window((*sent, *anchors), now)


def validity_window(
    involved: Sequence[CertFacts], now: datetime
) -> tuple[datetime, datetime] | None:
    """The open interval around `now` in which none of `involved` starts or ends being valid,
    shrunk by a margin; None when `now` is too close to a boundary to reuse a verdict."""
    bounds = [b for f in involved for b in (f.not_before, f.not_after)]
    lower = max((b for b in bounds if b <= now), default=datetime.min.replace(tzinfo=UTC))
    upper = min((b for b in bounds if b > now), default=datetime.max.replace(tzinfo=UTC))
    lower, upper = lower + _BOUNDARY_MARGIN, upper - _BOUNDARY_MARGIN
    if not lower < now < upper:
        return None
    return lower, upper


_TRUST_CACHE = _TrustCache(CACHE_SIZE)


def _verifier(trust: TrustStore, now: datetime) -> xv.ClientVerifier:
    # A client verifier checks the path without tying it to a host name (hostname and connector
    # name are separate checks) and the permissive EE policy skips the EKU requirement: Exchange
    # judges the issuer chain, not the leaf's extended key usage.
    return (
        xv.PolicyBuilder()
        .store(trust.store)
        .time(now)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )


def _diagnose(
    chain: Sequence[x509.Certificate], trust: TrustStore, now: datetime, detail: str
) -> Check:
    """Name the reason a chain failed: walk issuers by name and signature through what was sent."""
    leaf = chain[0]
    if leaf.subject == leaf.issuer and _signed_by(leaf, leaf) and not trust.contains(leaf):
        return _untrusted(
            ChainReason.SELF_SIGNED, "self-signed certificate; Exchange Online needs a public CA"
        )
    path, anchored = _walk(chain, trust)
    if not anchored:
        top = path[-1]
        issuer = top.issuer.rfc4514_string()
        if len(path) == 1 and not certs.is_ca(top):
            return _untrusted(
                ChainReason.INTERMEDIATE_MISSING,
                f"intermediate missing: issuer '{issuer}' was not sent and is not a trusted root; "
                "install the full chain on the server (Exchange Online fetches no intermediates)",
            )
        if top.subject == top.issuer:
            reason = (
                f"root '{issuer}' sent by the server is not in the trust store ({trust.source})"
            )
        else:
            reason = f"issuer '{issuer}' is not in the trust store ({trust.source})"
        return _untrusted(
            ChainReason.UNKNOWN_ROOT,
            f"unknown root: {reason}; a private CA fails in Exchange Online",
        )
    for position, cert in enumerate(path):
        facts = certs.facts(cert)
        what = "leaf" if position == 0 else ("root" if facts.self_issued else "intermediate")
        if now >= facts.not_after:
            return _untrusted(
                ChainReason.LEAF_EXPIRED if position == 0 else ChainReason.INTERMEDIATE_EXPIRED,
                f"{what} '{facts.subject}' expired on {facts.not_after:%Y-%m-%d}",
            )
        if now < facts.not_before:
            return _untrusted(
                ChainReason.NOT_YET_VALID,
                f"{what} '{facts.subject}' not valid before {facts.not_before:%Y-%m-%d}",
            )
    return _untrusted(ChainReason.INVALID, f"chain rejected: {detail}")


def _untrusted(reason: ChainReason, message: str) -> Check:
    return Check(CheckName.CHAIN_TRUSTED, Status.CRITICAL, message, SYMPTOM, reason)


def _walk(
    chain: Sequence[x509.Certificate], trust: TrustStore
) -> tuple[list[x509.Certificate], bool]:
    """Issuer path from the leaf through the sent certificates; anchored at a store cert."""
    path = [chain[0]]
    pool = list(chain[1:])
    while len(path) <= len(chain):
        current = path[-1]
        if trust.contains(current):
            return path, True
        anchors = trust.issuers_of(current)
        if anchors:
            # The store's root closes the path, so its own validity is judged too.
            return [*path, anchors[0]], True
        if current.subject == current.issuer:
            return path, False
        nxt = next(
            (c for c in pool if c.subject == current.issuer and _signed_by(current, c)), None
        )
        if nxt is None:
            return path, False
        pool.remove(nxt)
        path.append(nxt)
    return path, False


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Did `issuer` sign `cert`? For signatures cryptography will not check (SHA-1, MD5),
    fall back to the names and key identifiers, so the diagnosis still finds the path."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return cert.issuer == issuer.subject and _key_ids_agree(cert, issuer)
    return True


def _key_ids_agree(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return True  # nothing to contradict the name match
    return aki.key_identifier is None or aki.key_identifier == ski.digest


def cached_check(
    chain_der: tuple[bytes, ...], sent: Sequence[CertFacts], trust: TrustStore, now: datetime
) -> tuple[Check, tuple[CertFacts, ...]]:
    """`check_trust` for a chain as captured, from the cache while it holds (see `_TrustCache`)."""
    return _TRUST_CACHE.get(chain_der, sent, trust, now)


def is_cached(chain_der: tuple[bytes, ...], trust: TrustStore, now: datetime) -> bool:
    """Whether `cached_check` would answer from the cache."""
    return _TRUST_CACHE.fresh(chain_der, trust, now)


def clear_cache() -> None:
    _TRUST_CACHE.clear()

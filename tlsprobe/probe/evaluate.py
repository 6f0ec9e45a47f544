"""Judge a captured chain: pure functions of (chain, endpoint, policy, trust store, now).

The handshake never verifies (it must capture broken chains); this module decides afterwards.
Trust is decided by `cryptography.x509.verification` from the certificates the server sent plus
the trust store, never fetching missing intermediates (Exchange Online fetches none either).
When verification fails, a small path walk tells the reasons apart for the human message.
No I/O here except loading a trust store file once (`TrustStore`), and the clock is injected.
Probes call `evaluate_der`, which memoises the clock-independent work per chain (fleets serve
the same chain probe after probe) and gives the same verdict as a fresh evaluation.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as xv

from tlsprobe.model import (
    CertFacts,
    CertPart,
    ChainReason,
    Check,
    CheckName,
    Policy,
    Status,
    TlsInfo,
    is_ip_literal,
    o365_ready,
)
from tlsprobe.probe import bundle, certs, o365, readable
from tlsprobe.probe.bytecache import ByteLRU

SYMPTOMS: dict[CheckName, str] = {
    CheckName.STARTTLS: "defers the mail (451 4.4.0 TLS required): without a TLS session no "
    "certificate-based connector can match",
    CheckName.TLS_VERSION: "accepts only TLS 1.2 and newer: the connection fails",
    CheckName.CHAIN_TRUSTED: "450 4.4.317 UntrustedRoot / 550 5.7.64 TenantAttribution: "
    "relay refused",
    CheckName.NOT_EXPIRED: "rejects an expired certificate: relay stops "
    "(550 5.7.64 TenantAttribution)",
    CheckName.HOSTNAME: "judges the connector name, not this; but senders that verify the host "
    "name (MTA-STS, DANE, strict TLS) refuse this host",
    CheckName.KEY_STRENGTH: "refuses weak keys, as current TLS stacks do",
    CheckName.SIGNATURE_ALGORITHM: "refuses SHA-1/MD5 signatures, as current TLS stacks do",
    CheckName.EXPECTED_CERTIFICATE: "the served certificate is not the one pinned for the "
    "connector: relay breaks if Exchange expects the pinned one",
    CheckName.CERTIFICATE_FORMAT: readable.SYMPTOM,
}
"""What Exchange Online does when a check fails. Every output shows it after an "Exchange
Online" label (the report's `Exchange Online:` line, the JSON key `exchange_online`), so the
texts never name Exchange Online again at their start."""

_OLD_TLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
_WEAK_HASHES = frozenset({"sha1", "md5", "md2", "md4"})
_MIN_BITS = {"RSA": 2048, "DSA": 2048, "EC": 256}
_SECONDS_PER_DAY = 86400.0


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
            with Path(path).open("rb") as handle:
                data = handle.read(bundle.MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise TrustStoreError(f"{path}: {exc.strerror or exc}") from exc
        if len(data) > bundle.MAX_BUNDLE_BYTES:
            raise TrustStoreError(f"{path}: larger than {bundle.MAX_BUNDLE_BYTES >> 20} MiB")
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


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def o365_ready(self) -> bool:
        return o365_ready(self.checks)


def evaluate(
    chain: Sequence[x509.Certificate],
    *,
    host: str,
    tls: TlsInfo,
    policy: Policy,
    trust: TrustStore,
    now: datetime,
) -> Verdict:
    """All certificate checks for a captured chain (leaf first, as sent). `chain` is non-empty."""
    return evaluate_der(
        tuple(c.public_bytes(Encoding.DER) for c in chain),
        host=host,
        tls=tls,
        policy=policy,
        trust=trust,
        now=now,
    )


def evaluate_der(
    chain_der: tuple[bytes, ...],
    *,
    host: str | None,
    tls: TlsInfo,
    policy: Policy,
    trust: TrustStore,
    now: datetime,
) -> Verdict:
    """`evaluate` for the chain as captured (DER, leaf first, non-empty): what probes call.

    A fleet serves the same chain probe after probe, so only the clock-dependent work is redone
    each time: `not_expired` and `chain_trusted` near a validity boundary. Everything else is a pure
    function of (chain, host, TLS, policy) and is cached on exactly that; the trust verdict is
    cached per (chain, trust store) while no certificate it involves crosses a validity boundary.
    The verdict is identical to one computed from scratch. `host=None` judges a client's chain
    (the send side): every check but `hostname`. Never raises for what a peer sent: a
    certificate that cannot be read strictly is judged on what can be read, and the rest is a
    `certificate_format` finding. Only the first `MAX_CHAIN` certificates are judged, which
    bounds the work of the verifier and of the diagnosis walk.
    """
    sent_count = len(chain_der)
    chain_der = judged_part(chain_der)
    static = _static_checks(chain_der, host, tls, policy)
    trusted, path = _TRUST_CACHE.get(chain_der, static.sent, trust, now)
    if sent_count > len(chain_der):
        trusted = replace(trusted, message=f"{trusted.message} {_beyond(sent_count)}")
    expiry_chain = path or static.sent
    head = 3 if static.checks[2].name == readable.CHECK else 2
    checks = [
        *static.checks[:head],
        trusted,
        check_expiry(expiry_chain, policy, now),
        *static.checks[head:],
    ]
    return Verdict(tuple(checks))


def verdict_cached(
    chain_der: tuple[bytes, ...],
    *,
    host: str | None,
    tls: TlsInfo,
    policy: Policy,
    trust: TrustStore,
    now: datetime,
) -> bool:
    """Whether `evaluate_der` would answer from its caches, without parsing or verifying: then
    judging is cheap enough for the event loop."""
    chain_der = judged_part(chain_der)
    static = _STATIC.get((chain_der, host, tls, policy))
    return static is not None and _TRUST_CACHE.fresh(chain_der, trust, now)


MAX_CHAIN = 10
"""Certificates judged per chain, leaf first. Real chains have two to five; a server that sends
hundreds (373 fit under OpenSSL's 100 KiB cap) must not cost seconds of path walking."""


def judged_part(chain_der: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The certificates that are judged: the first `MAX_CHAIN` the server sent."""
    return chain_der[:MAX_CHAIN]


def _beyond(sent: int) -> str:
    return f"(the server sent {sent} certificates; the first {MAX_CHAIN} were judged)"


@dataclass(frozen=True, slots=True)
class _Static:
    """What a chain is, independent of the clock and of the trust store."""

    sent: tuple[CertFacts, ...]
    checks: tuple[Check, ...]
    """starttls, tls_version and certificate_format (only when a certificate has problems),
    then hostname through expected_certificate (report order)."""


_CACHE_SIZE = 16384
"""Chains remembered: enough for a large fleet's distinct (chain, host) pairs."""
CACHE_BYTES = 64 << 20
"""Bytes of chains each verdict cache may hold (estimated by `_chain_bytes`): a fleet of
servers rotating large chains must not grow memory beyond it."""
_STATIC: ByteLRU[tuple[tuple[bytes, ...], str | None, TlsInfo, Policy], _Static] = ByteLRU(
    max_bytes=CACHE_BYTES, max_entries=_CACHE_SIZE
)


def _chain_bytes(chain_der: tuple[bytes, ...]) -> int:
    # DER plus the parsed facts and checks derived from it, about as large again.
    return 2 * sum(len(der) for der in chain_der) + 2048


def _static_checks(
    chain_der: tuple[bytes, ...], host: str | None, tls: TlsInfo, policy: Policy
) -> _Static:
    key = (chain_der, host, tls, policy)
    return _STATIC.memoize(
        key, lambda: _judge_static(chain_der, host, tls, policy), _chain_bytes(chain_der)
    )


def _judge_static(
    chain_der: tuple[bytes, ...], host: str | None, tls: TlsInfo, policy: Policy
) -> _Static:
    sent = tuple(certs.facts_from_der(der) for der in chain_der)
    leaf = sent[0]
    names = (*leaf.dns_names, *leaf.common_names)
    pattern = (
        o365.ConnectorPattern.parse(policy.certificate_domain)
        if policy.certificate_domain
        else None
    )
    checks = [
        Check(CheckName.STARTTLS, Status.OK, "TLS session established"),
        check_tls_version(tls),
        *filter(None, [readable.check_format(sent)]),
        # A sender (a TLS client) has no name that was dialled: no hostname check for it.
        *([check_hostname(host, leaf)] if host is not None else []),
        o365.check_certificate_domain(names, pattern, policy.accepted_domains),
        o365.check_accepted_domain(names, pattern, policy.accepted_domains),
        check_key_strength(sent),
        check_signature(sent),
    ]
    if policy.expected:
        checks.append(check_expected(leaf, policy.expected))
    return _Static(sent, tuple(checks))


def _fail(
    name: CheckName, status: Status, message: str, reason: ChainReason | None = None
) -> Check:
    return Check(name, status, message, SYMPTOMS.get(name, ""), reason)


def check_tls_version(tls: TlsInfo) -> Check:
    if tls.version in _OLD_TLS:
        return _fail(
            CheckName.TLS_VERSION,
            Status.CRITICAL,
            f"{tls.version} negotiated; TLS 1.2 or newer is required",
        )
    return Check(CheckName.TLS_VERSION, Status.OK, f"{tls.version} ({tls.cipher})")


# --- trust ---------------------------------------------------------------------------------


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
            self._entries.put(key, (*window, verdict), _chain_bytes(chain_der))
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
    bounds = [b for f in (*sent, *anchors) for b in (f.not_before, f.not_after)]
    lower = max((b for b in bounds if b <= now), default=datetime.min.replace(tzinfo=UTC))
    upper = min((b for b in bounds if b > now), default=datetime.max.replace(tzinfo=UTC))
    lower, upper = lower + _BOUNDARY_MARGIN, upper - _BOUNDARY_MARGIN
    if not lower < now < upper:
        return None
    return lower, upper


_TRUST_CACHE = _TrustCache(_CACHE_SIZE)


def clear_caches() -> None:
    """Forget cached verdicts (tests that rebuild certificates with the same DER use this)."""
    _STATIC.clear()
    _TRUST_CACHE.clear()


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
    return _fail(CheckName.CHAIN_TRUSTED, Status.CRITICAL, message, reason)


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


# --- expiry --------------------------------------------------------------------------------


def check_expiry(chain: Sequence[CertFacts], policy: Policy, now: datetime) -> Check:
    for position, facts in enumerate(chain):
        what = "certificate" if position == 0 else f"chain certificate '{facts.subject}'"
        if facts.unreadable(CertPart.VALIDITY):
            return _fail(
                CheckName.NOT_EXPIRED, Status.CRITICAL, f"{what}: validity dates cannot be read"
            )
        if now >= facts.not_after:
            days = (now - facts.not_after).total_seconds() / _SECONDS_PER_DAY
            return _fail(
                CheckName.NOT_EXPIRED,
                Status.CRITICAL,
                f"{what} expired {_days(days)} ago ({facts.not_after:%Y-%m-%d %H:%M} UTC)",
            )
        if now < facts.not_before:
            return _fail(
                CheckName.NOT_EXPIRED,
                Status.CRITICAL,
                f"{what} not valid before {facts.not_before:%Y-%m-%d %H:%M} UTC",
            )
    earliest = min(chain, key=lambda f: f.not_after)
    days_left = (earliest.not_after - now).total_seconds() / _SECONDS_PER_DAY
    whose = "" if earliest is chain[0] else f" (chain certificate '{earliest.subject}')"
    message = f"expires in {_days(days_left)} on {_date(earliest.not_after)}{whose}"
    if days_left < policy.crit_days:
        return _fail(
            CheckName.NOT_EXPIRED,
            Status.CRITICAL,
            f"{message}; critical under {policy.crit_days:g} days",
        )
    if days_left < policy.warn_days:
        return _fail(
            CheckName.NOT_EXPIRED,
            Status.WARNING,
            f"{message}; warning under {policy.warn_days:g} days",
        )
    return Check(CheckName.NOT_EXPIRED, Status.OK, message)


@lru_cache(maxsize=_CACHE_SIZE)
def _date(when: datetime) -> str:
    # strftime is the costliest step of a probe's expiry check; certificates repeat.
    return f"{when:%Y-%m-%d}"


def days_left(facts: CertFacts, now: datetime) -> float:
    return (facts.not_after - now).total_seconds() / _SECONDS_PER_DAY


def _days(days: float) -> str:
    if days < 1:
        return f"{days * 24:.1f} hours"
    return f"{days:.0f} day" + ("" if round(days) == 1 else "s")


# --- names ---------------------------------------------------------------------------------


def check_hostname(host: str, leaf: CertFacts) -> Check:
    """RFC 9525: SAN dNSName only; CN-only matches are a warning (Exchange accepts CN)."""
    if is_ip_literal(host.strip("[]")):
        return Check(
            CheckName.HOSTNAME, Status.UNKNOWN, f"probed by IP address {host}; host name not judged"
        )
    if leaf.dns_names:
        matched = o365.hostname_matches(host, leaf.dns_names)
        if matched:
            return Check(CheckName.HOSTNAME, Status.OK, f"'{host}' matches SAN '{matched}'")
        return _fail(
            CheckName.HOSTNAME,
            Status.CRITICAL,
            f"'{host}' not in the certificate's SAN ({_names(leaf.dns_names)})",
        )
    matched = o365.hostname_matches(host, leaf.common_names)
    if matched:
        return _fail(
            CheckName.HOSTNAME,
            Status.WARNING,
            f"'{host}' matches only the CN '{matched}': the certificate has no SAN "
            "(RFC 9525 and MTA-STS need a SAN)",
        )
    return _fail(
        CheckName.HOSTNAME,
        Status.CRITICAL,
        f"'{host}' does not match: no SAN, CN {_names(leaf.common_names) or 'absent'}",
    )


def _names(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --- key, signature, pin -------------------------------------------------------------------


def check_key_strength(chain: Sequence[CertFacts]) -> Check:
    for position, facts in enumerate(chain):
        if position and facts.self_issued:
            continue  # a root sent along is not judged: the store's copy is what counts
        minimum = _MIN_BITS.get(facts.key_type)
        who = "leaf" if position == 0 else f"intermediate '{facts.subject}'"
        if facts.key_type == "unknown":
            return _fail(
                CheckName.KEY_STRENGTH, Status.CRITICAL, f"{who} key algorithm is not supported"
            )
        if minimum is not None and facts.key_bits < minimum:
            return _fail(
                CheckName.KEY_STRENGTH,
                Status.CRITICAL,
                f"{who} key {facts.key} is under {minimum} bits",
            )
    return Check(CheckName.KEY_STRENGTH, Status.OK, f"leaf key {chain[0].key}")


def check_signature(chain: Sequence[CertFacts]) -> Check:
    for position, facts in enumerate(chain):
        if position and facts.self_issued:
            continue  # a root's self-signature carries no trust
        who = "leaf" if position == 0 else f"intermediate '{facts.subject}'"
        if facts.unreadable(CertPart.SIGNATURE):
            return _fail(
                CheckName.SIGNATURE_ALGORITHM,
                Status.CRITICAL,
                f"{who} signed with {facts.signature_algorithm}, which is not supported",
            )
        if facts.signature_hash in _WEAK_HASHES:
            return _fail(
                CheckName.SIGNATURE_ALGORITHM,
                Status.CRITICAL,
                f"{who} signed with {facts.signature_algorithm} ({facts.signature_hash.upper()})",
            )
    return Check(CheckName.SIGNATURE_ALGORITHM, Status.OK, chain[0].signature_algorithm)


def normalize_pin(pin: str) -> str:
    """Fingerprints compare as bare lower-case hex; `<I>..<S>..` strings by collapsed spaces."""
    stripped = pin.strip()
    if stripped.startswith("<I>"):
        return " ".join(stripped.split()).casefold()
    return stripped.replace(":", "").replace(" ", "").lower()


def check_expected(leaf: CertFacts, expected: Sequence[str]) -> Check:
    served = {normalize_pin(leaf.sha256), normalize_pin(leaf.exchange_name)}
    if any(normalize_pin(pin) in served for pin in expected):
        return Check(
            CheckName.EXPECTED_CERTIFICATE, Status.OK, "served certificate is the pinned one"
        )
    return _fail(
        CheckName.EXPECTED_CERTIFICATE,
        Status.CRITICAL,
        f"served certificate {leaf.sha256[:16]}... ({leaf.exchange_name}) is not the pinned one",
    )

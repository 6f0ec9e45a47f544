"""Judge a captured chain: pure functions of (chain, endpoint, policy, trust store, now).

The handshake never verifies (it must capture broken chains); this module decides afterwards.
`chain_trusted` comes from `trust` (path building and its diagnosis, the `TrustStore`); the
other checks are here. No I/O here, and the clock is injected.
Probes call `evaluate_der`, which memoises the clock-independent work per chain (fleets serve
the same chain probe after probe) and gives the same verdict as a fresh evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

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
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509 import o365, outbound, readable
from tlsprobe.probe.x509 import trust as trust_module
from tlsprobe.probe.x509.bytecache import ByteLRU
from tlsprobe.probe.x509.trust import TrustStore, TrustStoreError, check_trust

__all__ = [
    "SYMPTOMS",
    "TrustStore",
    "TrustStoreError",
    "Verdict",
    "check_trust",
    "evaluate",
    "evaluate_der",
    "evaluate_or_unjudged",
]

log = logging.getLogger("tlsprobe.probe")

SYMPTOMS: dict[CheckName, str] = {
    CheckName.STARTTLS: "defers the mail (451 4.4.0 TLS required): without a TLS session no "
    "certificate-based connector can match",
    CheckName.TLS_VERSION: "accepts only TLS 1.2 and newer: the connection fails",
    CheckName.CHAIN_TRUSTED: trust_module.SYMPTOM,
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


def evaluate_or_unjudged(
    chain_der: tuple[bytes, ...],
    *,
    host: str | None,
    tls: TlsInfo,
    policy: Policy,
    trust: TrustStore,
    now: datetime,
    name: str,
) -> Verdict:
    """`evaluate_der` with the last resort both sides share (the probe's servers, the
    receiver's clients), for a bug the fuzzers have not found: an exception is logged and
    becomes a critical `certificate_format` verdict that replaces the previous one, instead
    of a traceback and a stale OK. `name` names the endpoint or sender in the log."""
    try:
        return evaluate_der(chain_der, host=host, tls=tls, policy=policy, trust=trust, now=now)
    except Exception as exc:
        log.exception("cannot judge the chain of %s", name)
        message = (
            f"tlsprobe could not judge this chain ({type(exc).__name__}: {exc}); please report"
        )
        return Verdict(
            (
                Check(CheckName.STARTTLS, Status.OK, "TLS session established"),
                Check(readable.CHECK, Status.CRITICAL, message, SYMPTOMS[readable.CHECK]),
            )
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
    trusted, path = trust_module.cached_check(chain_der, static.sent, trust, now)
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
    if policy.outbound is not None:
        leaf = static.sent[0]
        checks.append(
            outbound.check_outbound(
                policy.outbound, host, leaf.dns_names, leaf.common_names, trusted
            )
        )
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
    return static is not None and trust_module.is_cached(chain_der, trust, now)


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


_STATIC: ByteLRU[tuple[tuple[bytes, ...], str | None, TlsInfo, Policy], _Static] = ByteLRU(
    max_bytes=trust_module.CACHE_BYTES, max_entries=trust_module.CACHE_SIZE
)


def _static_checks(
    chain_der: tuple[bytes, ...], host: str | None, tls: TlsInfo, policy: Policy
) -> _Static:
    key = (chain_der, host, tls, policy)
    return _STATIC.memoize(
        key,
        lambda: _judge_static(chain_der, host, tls, policy),
        trust_module.chain_bytes(chain_der),
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
        *([check_hostname(host, leaf, policy.hostname_required)] if host is not None else []),
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


def clear_caches() -> None:
    """Forget cached verdicts (tests that rebuild certificates with the same DER use this)."""
    _STATIC.clear()
    trust_module.clear_cache()


# --- expiry --------------------------------------------------------------------------------


LIFETIME_AWARE_UP_TO = 200.0
"""Days of lifetime up to which the expiry warning follows the lifetime (public CAs issue no
longer-lived certificates since March 2026, CA/Browser Forum ballot SC-081)."""
RENEWAL_GRACE_DAYS = 3.0
"""How overdue a renewal at a third of the lifetime left may be before it warns."""


def expiry_thresholds(policy: Policy, cert: CertFacts) -> tuple[float, float]:
    """(warning, critical) days left for `cert` under `policy`: what `check_expiry` applies, and
    what `tlsprobe check` prints as the thresholds of its `days_left` perfdata.

    With `warn_days`/`crit_days` configured, those. Otherwise a certificate of up to 200 days
    warns once a renewal at a third of its lifetime left is 3 days overdue (at most a twelfth
    of the lifetime), a longer-lived one at `warn_days`; critical is `crit_days`, or a sixth
    of the lifetime when that is less. So a 47-day leaf renewed at 16 days left never warns,
    and warns from 12.7 days left.
    """
    if policy.fixed_expiry_days:
        return policy.warn_days, policy.crit_days
    lifetime = (cert.not_after - cert.not_before).total_seconds() / _SECONDS_PER_DAY
    crit = min(policy.crit_days, max(lifetime, 0.0) / 6)
    if lifetime > LIFETIME_AWARE_UP_TO:
        return max(policy.warn_days, crit), crit
    warn = lifetime / 3 - min(RENEWAL_GRACE_DAYS, lifetime / 12)
    return max(warn, crit), crit


def check_expiry(chain: Sequence[CertFacts], policy: Policy, now: datetime) -> Check:
    problem = _outside_validity(chain, now)
    if problem:
        return _fail(CheckName.NOT_EXPIRED, Status.CRITICAL, problem)
    earliest = min(chain, key=lambda f: f.not_after)
    left = days_left(earliest, now)
    whose = "" if earliest is chain[0] else f" (chain certificate '{earliest.subject}')"
    message = f"expires in {_days(left)} on {_date(earliest.not_after)}{whose}"
    warn, crit = expiry_thresholds(policy, earliest)
    for status, limit in ((Status.CRITICAL, crit), (Status.WARNING, warn)):
        if left < limit:
            return _fail(
                CheckName.NOT_EXPIRED, status, f"{message}; {status.label} under {limit:.3g} days"
            )
    return Check(CheckName.NOT_EXPIRED, Status.OK, message)


def _outside_validity(chain: Sequence[CertFacts], now: datetime) -> str | None:
    """Why the first certificate (leaf first) that is not valid now is not, or None."""
    for position, facts in enumerate(chain):
        what = "certificate" if position == 0 else f"chain certificate '{facts.subject}'"
        if facts.unreadable(CertPart.VALIDITY):
            return f"{what}: validity dates cannot be read"
        if now >= facts.not_after:
            days = (now - facts.not_after).total_seconds() / _SECONDS_PER_DAY
            return f"{what} expired {_days(days)} ago ({facts.not_after:%Y-%m-%d %H:%M} UTC)"
        if now < facts.not_before:
            return f"{what} not valid before {facts.not_before:%Y-%m-%d %H:%M} UTC"
    return None


@lru_cache(maxsize=trust_module.CACHE_SIZE)
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


INFORMATIONAL = (
    "informational: judged as a relay (a connector is configured, and this host is neither an "
    "mx: target nor an outbound connector's smart host); tlsprobe did not look up whether an MX "
    "points at it: if an MX or a sender dials it by this name, hostname_check: required "
    "(tlsprobe check --hostname-check required)"
)


def check_hostname(host: str, leaf: CertFacts, required: bool = True) -> Check:
    """RFC 9525: SAN dNSName only; CN-only matches are a warning (Exchange accepts CN).

    Not `required` (a relay nobody dials by name), a mismatch is reported as unknown, with the
    reason: it neither pages nor clears `o365_ready`."""
    check = _hostname(host, leaf)
    if required or check.status in (Status.OK, Status.UNKNOWN):
        return check
    return Check(CheckName.HOSTNAME, Status.UNKNOWN, f"{check.message}; {INFORMATIONAL}")


def _hostname(host: str, leaf: CertFacts) -> Check:
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

"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) as pure functions: parse, match, judge.

The `_mta-sts` TXT record announces a policy and its id; the policy file names a mode
(`enforce`, `testing`, `none`), the MX host patterns and a `max_age`. A sender that holds an
`enforce` policy delivers only to an MX that matches a pattern and serves a certificate that
chains to a trusted root and names the MX host in its SAN; in `testing` it delivers anyway and
reports. This module parses both records, matches MX hosts, judges an endpoint (from the
`chain_trusted` and `hostname` checks the probe already made) and compares a policy with the
one seen before. Fetching lives in `mtasts_fetch`, DNS in `dnssec`.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tlsprobe.model import Check, CheckName, Status
from tlsprobe.probe.listing import listed

CHECK = CheckName.MTA_STS
MAX_POLICY_BYTES = 64 * 1024
"""RFC 8461 section 3.3: senders may refuse larger policies; so do we."""
MAX_AGE_LIMIT = 31_557_600
"""One year, the largest `max_age` RFC 8461 allows."""
MAX_TXT_BYTES = 4096

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
SYMPTOM_ENFORCE = (
    "senders that honour MTA-STS (Gmail, Exchange Online and others) refuse to deliver to "
    "this MX while the policy is in enforce mode"
)


class StsMode(enum.StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(ValueError):
    """A TXT record or policy file that a sender would reject, with the reason."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy file."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    """Patterns as published, lower case: `mail.example.com` or `*.example.com`."""
    sha256: str
    """Of the file's bytes: a changed policy under an unchanged id is a finding."""


def parse_txt(texts: Sequence[str]) -> str | None:
    """The policy id from the `_mta-sts` TXT strings (each already joined); None when no record
    announces a policy; raises PolicyError for a broken announcement.

    Records not starting with `v=STSv1` are ignored; more than one that does is an error
    (RFC 8461 section 3.1: senders then act as if no policy existed).
    """
    ours = [t for t in texts if t.replace(" ", "").startswith("v=STSv1")]
    if not ours:
        return None
    if len(ours) > 1:
        raise PolicyError(f"{len(ours)} v=STSv1 TXT records (exactly one allowed)")
    fields = _txt_fields(ours[0])
    if fields.get("v") != "STSv1":
        raise PolicyError(f"the first field must be v=STSv1: {ours[0][:80]!r}")
    policy_id = fields.get("id", "")
    if not _ID.fullmatch(policy_id):
        raise PolicyError(f"id must be 1-32 letters or digits, got {policy_id[:40]!r}")
    return policy_id


def _txt_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def parse_policy(body: bytes) -> Policy:
    """A policy file (RFC 8461 section 3.2); raises PolicyError with the sender's reason."""
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is {len(body)} bytes, over the {MAX_POLICY_BYTES} limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy is not UTF-8: {exc}") from exc
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    return _policy(fields, tuple(mx), hashlib.sha256(body).hexdigest())


def _policy(fields: dict[str, str], mx: tuple[str, ...], digest: str) -> Policy:
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version must be STSv1, got {fields.get('version', 'none')[:20]!r}")
    try:
        mode = StsMode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError(
            f"mode must be enforce, testing or none, got {fields.get('mode', 'none')[:20]!r}"
        ) from None
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10) or int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be 0-{MAX_AGE_LIMIT} seconds, got {age[:20]!r}")
    if mode is not StsMode.NONE and not mx:
        raise PolicyError(f"mode {mode} needs at least one mx line")
    return Policy(mode, int(age), mx, digest)


def mx_matches(host: str, patterns: Sequence[str]) -> str | None:
    """The pattern that admits `host` (RFC 8461 section 4.1); None when none does.

    `*.example.com` stands for exactly one label: it admits `mx1.example.com`, not
    `example.com` nor `a.b.example.com`.
    """
    wanted = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            first, _, rest = wanted.partition(".")
            if first and rest == pattern[2:]:
                return pattern
        elif pattern == wanted:
            return pattern
    return None


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    """What a probe learnt about one policy domain: the TXT id, the policy, or why not."""

    domain: str
    policy_id: str | None
    """From the TXT record; None when there is none (MTA-STS not applicable) or it is invalid."""
    policy: Policy | None
    error: str = ""
    """Why the TXT record or the policy could not be used (empty when they could)."""
    tlsrpt_rua: tuple[str, ...] = ()
    """TLS-RPT report destinations from `_smtp._tls` (information only)."""

    @property
    def published(self) -> bool:
        """The domain announces a policy (a TXT id was found, or the TXT record is broken)."""
        return self.policy_id is not None or bool(self.error)


def check_endpoint(domain: DomainPolicy, host: str, checks: Sequence[Check]) -> Check | None:
    """The `mta_sts` check for one MX endpoint; None when MTA-STS does not apply."""
    if not domain.published:
        return None
    policy = domain.policy
    if policy is None:
        return Check(
            CHECK,
            Status.UNKNOWN,
            f"MTA-STS policy of {domain.domain} unusable: {domain.error}; senders without a "
            "cached policy deliver without MTA-STS",
        )
    if policy.mode is StsMode.NONE:
        return None
    failures = _failures(policy, host, checks)
    if not failures:
        matched = mx_matches(host, policy.mx)
        return Check(CHECK, Status.OK, f"{policy.mode} policy of {domain.domain}: mx {matched}")
    message = f"{policy.mode} policy of {domain.domain}: " + "; ".join(failures)
    if policy.mode is StsMode.ENFORCE:
        return Check(CHECK, Status.CRITICAL, message, SYMPTOM_ENFORCE)
    return Check(CHECK, Status.WARNING, message + " (testing: senders deliver and report only)")


def _failures(policy: Policy, host: str, checks: Sequence[Check]) -> list[str]:
    found: list[str] = []
    if mx_matches(host, policy.mx) is None:
        found.append(f"MX {host} matches no mx pattern ({listed(policy.mx, sep=', ')})")
    by_name = {c.name: c for c in checks}
    trusted = by_name.get(CheckName.CHAIN_TRUSTED)
    if trusted is None or trusted.status is not Status.OK:
        found.append("certificate not trusted" + (f": {trusted.message}" if trusted else ""))
    named = by_name.get(CheckName.HOSTNAME)
    # MTA-STS reads the SAN only (RFC 8461 section 4.2): a CN-only match (warning) fails.
    if named is None or named.status is not Status.OK:
        found.append("host name not in the SAN" + (f": {named.message}" if named else ""))
    return found


def compare(previous: DomainPolicy | None, current: DomainPolicy) -> str:
    """A finding when the id and the policy did not change together; empty otherwise.

    Senders refetch only when the id changes: a new policy under the old id stays unseen
    until `max_age` runs out, and a new id with the same policy is harmless but noisy.
    """
    if previous is None or previous.policy is None or current.policy is None:
        return ""
    same_id = previous.policy_id == current.policy_id
    same_policy = previous.policy.sha256 == current.policy.sha256
    if same_id and not same_policy:
        return (
            f"policy of {current.domain} changed but its id {current.policy_id} did not: "
            "senders keep the cached policy until max_age runs out"
        )
    if not same_id and same_policy:
        return (
            f"id of {current.domain} changed ({previous.policy_id} -> {current.policy_id}) "
            "but the policy did not"
        )
    return ""


def parse_tlsrpt(texts: Sequence[str]) -> tuple[str, ...]:
    """The `rua` destinations of a `v=TLSRPTv1` record; () when there is none."""
    for text in texts:
        fields = _txt_fields(text)
        if fields.get("v") == "TLSRPTv1":
            return tuple(r.strip() for r in fields.get("rua", "").split(",") if r.strip())
    return ()

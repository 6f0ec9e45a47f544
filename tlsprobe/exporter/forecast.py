"""What breaks when: every endpoint and sender that fails now or will fail within N days.

One pure function, `forecast`, of the published results and the clock: `tlsprobe forecast`
prints it (text, JSON, CSV); a status-page section or a table can render the same entries.
An entry is one cause: a check that is critical now (Exchange Online refuses today), or the
first certificate of the chain as sent to expire within the horizon, the leaf or an
intermediate whose own expiry comes first. Entries are sorted by date, then tenant, target and
endpoint. No I/O here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tlsprobe.exporter.state import EndpointState, SenderState
from tlsprobe.model import (
    CertFacts,
    CertPart,
    ChainReason,
    CheckName,
    ProbeResult,
    Reason,
    Status,
)
from tlsprobe.probe.x509.evaluate import SYMPTOMS

DEFAULT_DAYS = 30.0

FIXES: dict[CheckName, str] = {
    CheckName.STARTTLS: "offer STARTTLS with a certificate on this port",
    CheckName.TLS_VERSION: "enable TLS 1.2 or 1.3 on the server",
    CheckName.CERTIFICATE_FORMAT: "reissue the certificate from a CA that encodes it correctly",
    CheckName.CHAIN_TRUSTED: "install the full chain (leaf, then its intermediates) from a "
    "publicly trusted CA",
    CheckName.NOT_EXPIRED: "renew the certificate and install it with its intermediates",
    CheckName.HOSTNAME: "reissue the certificate with this host name in its SANs",
    CheckName.CERTIFICATE_DOMAIN: "reissue the certificate with a name the connector's "
    "TlsSenderCertificateName matches, or correct the connector",
    CheckName.ACCEPTED_DOMAIN: "set the connector's certificate domain inside an accepted domain",
    CheckName.KEY_STRENGTH: "reissue with RSA 2048+ or EC P-256+",
    CheckName.SIGNATURE_ALGORITHM: "reissue with a SHA-256 (or stronger) signature",
    CheckName.EXPECTED_CERTIFICATE: "serve the pinned certificate, or update the pin after a "
    "planned renewal",
}
"""The fix line of each check that can fail now (README "Checks and how to fix them" has more)."""

_RENEW = "renew the certificate and install it with its intermediates before {date}"
_INTERMEDIATE = (
    "install the issuing CA's current intermediate before {date} (the leaf is valid until {leaf})"
)


_DATED = frozenset(
    {ChainReason.LEAF_EXPIRED, ChainReason.INTERMEDIATE_EXPIRED, ChainReason.NOT_YET_VALID}
)
"""Untrusted-chain reasons that are a validity date, which `not_expired` reports."""


@dataclass(frozen=True, slots=True)
class Watched:
    """One thing that can break: an endpoint of a target, or a sender, and its last result."""

    tenant: str
    name: str
    """The target's name, or the sender's."""
    kind: str
    """"endpoint" or "sender"."""
    result: ProbeResult


@dataclass(frozen=True, slots=True)
class Entry:
    when: datetime
    """When it breaks: the probe's time for what fails now, else the certificate's notAfter."""
    now: bool
    tenant: str
    name: str
    kind: str
    where: str
    """host:port (address) of an endpoint; the sender's EHLO name and peer address."""
    what: str
    symptom: str
    """What Exchange Online does then."""
    fix: str

    def days_left(self, now: datetime) -> float:
        return max((self.when - now).total_seconds() / 86400.0, 0.0)


def watched(
    states: Iterable[EndpointState], senders: Iterable[SenderState] = ()
) -> Iterator[Watched]:
    """The published states (what the pages read) as `Watched`."""
    for state in states:
        yield Watched(state.tenant, state.target, "endpoint", state.result)
    for sender in senders:
        if sender.result is not None:
            yield Watched(sender.sender.tenant, sender.sender.name, "sender", sender.result)


def forecast(items: Iterable[Watched], now: datetime, days: float = DEFAULT_DAYS) -> list[Entry]:
    """Every cause of breakage now or within `days` of `now`, sorted by date."""
    horizon = now + timedelta(days=days)
    entries: list[Entry] = []
    for item in items:
        entries.extend(_failing(item, now))
        expiry = _expiry(item, now, horizon)
        if expiry is not None:
            entries.append(expiry)
    entries.sort(key=order)
    return entries


def order(entry: Entry) -> tuple[datetime, str, str, str, str]:
    """How entries are sorted: by date, then tenant, name, where and what (for merging lists
    of entries made apart, as the status page does)."""
    return (entry.when, entry.tenant, entry.name, entry.where, entry.what)


def _where(item: Watched) -> str:
    result = item.result
    endpoint = result.endpoint
    address = result.address or endpoint.address
    if item.kind == "sender":
        return f"{endpoint.host} from {address or '-'}"
    return f"{endpoint.host}:{endpoint.port}" + (f" ({address})" if address else "")


def _entry(item: Watched, when: datetime, *, now: bool, what: str, symptom: str, fix: str) -> Entry:
    return Entry(when, now, item.tenant, item.name, item.kind, _where(item), what, symptom, fix)


def _failing(item: Watched, now: datetime) -> Iterator[Entry]:
    result = item.result
    seen = min(datetime.fromtimestamp(result.started_at, UTC), now)
    if result.error is not None:
        what = f"{result.error.kind.value}: {result.error.message}"
        fix = "make the server reachable and offer STARTTLS"
        no_tls = result.error.kind in (Reason.NO_STARTTLS, Reason.STARTTLS_REJECTED)
        symptom = SYMPTOMS[CheckName.STARTTLS] if no_tls else ""
        yield _entry(item, seen, now=True, what=what, symptom=symptom, fix=fix)
        return
    valid = all(
        not c.unreadable(CertPart.VALIDITY) and c.not_before <= now < c.not_after
        for c in result.chain
    )
    for check in result.checks:
        if check.name is CheckName.NOT_EXPIRED and valid:
            continue  # under the critical threshold, not expired: `_expiry` dates it
        if check.reason in _DATED and not valid:
            continue  # the same expiry as `not_expired`, which says more (as the inhibitions)
        if check.status is Status.CRITICAL:
            symptom = check.symptom or SYMPTOMS.get(check.name, "")
            fix = FIXES.get(check.name, f'see the README section "{check.name}"')
            what = f"{check.name}: {check.message}"
            yield _entry(item, seen, now=True, what=what, symptom=symptom, fix=fix)


def _expiry(item: Watched, now: datetime, horizon: datetime) -> Entry | None:
    """The first certificate of the chain as sent (the root aside) to expire, if it does
    within the horizon and after now (one already expired is a critical check)."""
    chain = [
        c
        for c in item.result.chain
        if not c.unreadable(CertPart.VALIDITY) and (c is item.result.chain[0] or not c.self_issued)
    ]
    if not chain or chain[0] is not item.result.chain[0]:
        return None
    first = min(chain, key=lambda c: c.not_after)
    if not now < first.not_after <= horizon:
        return None
    leaf = chain[0]
    date = f"{first.not_after:%Y-%m-%d}"
    symptom = SYMPTOMS[CheckName.NOT_EXPIRED]
    if first is leaf or first.not_after == leaf.not_after:
        what, fix = "leaf expires", _RENEW.format(date=date)
        if any(
            c.name is CheckName.NOT_EXPIRED and c.status is Status.WARNING
            for c in item.result.checks
        ):
            what = "leaf expires; its renewal is overdue (not_expired at warning)"
    else:
        what = f"intermediate '{_short(first)}' expires before the leaf"
        fix = _INTERMEDIATE.format(date=date, leaf=f"{leaf.not_after:%Y-%m-%d}")
    return _entry(item, first.not_after, now=False, what=what, symptom=symptom, fix=fix)


def _short(cert: CertFacts) -> str:
    return cert.subject if len(cert.subject) <= 80 else cert.subject[:77] + "..."


# --- renderings ----------------------------------------------------------------------------

FIELDS = ("when", "days_left", "now", "tenant", "name", "kind", "where", "what", "symptom", "fix")
"""The columns of the JSON objects and the CSV, in order."""


def as_rows(entries: Iterable[Entry], now: datetime) -> Iterator[dict[str, Any]]:
    for entry in entries:
        # Entry's fields are immutable scalars: read directly (asdict deep-copies each one).
        yield {
            "when": f"{entry.when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
            "days_left": round(entry.days_left(now), 1),
            **{key: getattr(entry, key) for key in FIELDS[2:]},
        }


def to_json(entries: Iterable[Entry], now: datetime) -> str:
    return json.dumps(list(as_rows(entries, now)), indent=2) + "\n"


def to_csv(entries: Iterable[Entry], now: datetime) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(as_rows(entries, now))
    return out.getvalue()


def to_text(entries: list[Entry], now: datetime, days: float) -> str:
    if not entries:
        return f"Nothing fails now or within {days:g} days.\n"
    lines = [f"{len(entries)} entries: failing now, or within {days:g} days (UTC)", ""]
    for entry in entries:
        when = "now" if entry.now else f"in {entry.days_left(now):.0f} days"
        lines.append(
            f"{entry.when:%Y-%m-%d %H:%M}  {when:<12} {entry.tenant or '-'}/{entry.name}  "
            f"{entry.kind} {entry.where}"
        )
        lines.append(f"    {entry.what}")
        if entry.symptom:
            lines.append(f"    Exchange Online: {entry.symptom}")
        lines.append(f"    Fix: {entry.fix}")
    return "\n".join(lines) + "\n"

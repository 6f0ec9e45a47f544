"""Cross-tenant attribution (Microsoft message center MC1226222), over every tenant of one
exporter.

Exchange Online attributes mail arriving on an OnPremises inbound connector to a tenant by the
client certificate's domain first, then the envelope sender, then the recipient. One on-premises
server relaying for several tenants therefore needs one client certificate, and one send
connector, per tenant. Two findings, each reported for both tenants involved:

- `shared_certificate`: one certificate (by SHA-256 fingerprint) presented for two tenants,
  served by their targets or presented by their senders;
- `shared_name`: two certificates, one per tenant, that carry the same name (SAN or CN): the
  names an inbound connector matches, so either tenant's connector that accepts one accepts
  the other;
- `connector_overlap`: a certificate presented for one tenant whose names another tenant's
  connector (`TlsSenderCertificateName`, Microsoft's matching) also accepts: `*.contoso.com`
  in one tenant and `relay.contoso.com` in another.

Pure: certificates and connector patterns in, findings out. The connector patterns are found by
each certificate name's label suffixes, so the work grows with the certificates and their
names, not with certificates times tenants; `MAX_FINDINGS` bounds the answer.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from tlsprobe.exporter.exposition.metrics import Sample
from tlsprobe.exporter.state import EndpointState, SenderState, attributed
from tlsprobe.model import EndpointKey, ProbeResult
from tlsprobe.probe.names import normalize_name
from tlsprobe.probe.x509 import o365

SHARED = "shared_certificate"
OVERLAP = "connector_overlap"
SHARED_NAME = "shared_name"
MAX_FINDINGS = 1000
_State = TypeVar("_State", EndpointState, SenderState)
FIX = (
    "give each tenant its own send connector on the relay with its own certificate, whose names "
    "only that tenant's inbound connector accepts (Set-SendConnector -TlsCertificateName per "
    "tenant; Set-InboundConnector -TlsSenderCertificateName to a name no other tenant uses)"
)


@dataclass(frozen=True, slots=True)
class Presented:
    """A certificate seen for a tenant: a target's served leaf, or a sender's client leaf."""

    tenant: str
    fingerprint: str
    names: tuple[str, ...]
    """SAN dNSNames and subject CNs: what an inbound connector matches."""
    source: str
    """`target NAME` or `sender NAME`, for messages."""


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    tenant: str
    other_tenant: str
    reason: str
    fingerprint: str
    message: str


def findings(
    presented: Iterable[Presented], patterns: Mapping[str, str | None]
) -> tuple[Finding, ...]:
    """Every cross-tenant finding, sorted, each tenant's side separately; `patterns` maps a
    tenant to its connector certificate domain (None or absent: none configured)."""
    seen: dict[tuple[str, str], Presented] = {}
    for item in presented:
        if item.tenant and item.fingerprint:
            seen.setdefault((item.tenant, item.fingerprint), item)
    parsed = {t: o365.ConnectorPattern.parse(p) for t, p in patterns.items() if t and p}
    out: set[Finding] = set()
    by_fingerprint: dict[str, list[Presented]] = {}
    by_name: dict[str, list[Presented]] = {}
    for item in seen.values():
        by_fingerprint.setdefault(item.fingerprint, []).append(item)
        for name in dict.fromkeys(normalize_name(n) for n in item.names):
            by_name.setdefault(name, []).append(item)
    for group in by_fingerprint.values():
        _pairs(out, group, _shared)
    for name, group in by_name.items():
        _pairs(out, group, functools.partial(_shared_name, name=name))
    if len(out) >= MAX_FINDINGS:
        return tuple(sorted(out)[:MAX_FINDINGS])
    index = _PatternIndex(parsed)
    for item in seen.values():
        for tenant in index.candidates(item.names):
            if tenant == item.tenant:
                continue
            pattern = parsed[tenant]
            matched = o365.match_connector(pattern, item.names).matched
            if matched is not None:
                out.update(_overlap(item, tenant, str(pattern), matched))
        if len(out) >= MAX_FINDINGS:
            break
    return tuple(sorted(out)[:MAX_FINDINGS])


class _PatternIndex:
    """The tenants whose connector pattern could accept a certificate name, found by the name's
    label suffixes instead of trying every tenant's pattern on every certificate: a literal
    pattern accepts only its own name, `*.D` only names equal to or under D (o365's matching),
    so a pattern that accepts a name is keyed by the name or one of its suffixes. Exact: the
    candidates are then matched as before."""

    def __init__(self, parsed: Mapping[str, o365.ConnectorPattern]) -> None:
        self._literal: dict[str, list[str]] = {}
        self._wildcard: dict[str, list[str]] = {}
        for tenant, pattern in parsed.items():
            table = self._wildcard if pattern.wildcard else self._literal
            table.setdefault(pattern.domain, []).append(tenant)
        self._order = {tenant: i for i, tenant in enumerate(parsed)}

    def candidates(self, names: Iterable[str]) -> list[str]:
        found: set[str] = set()
        for name in dict.fromkeys(normalize_name(n) for n in names):
            found.update(self._literal.get(name, ()))
            labels = name.split(".")
            for start in range(len(labels)):
                found.update(self._wildcard.get(".".join(labels[start:]), ()))
        return sorted(found, key=self._order.__getitem__)


def _pairs(
    out: set[Finding],
    group: list[Presented],
    make: Callable[[Presented, Presented], Finding | None],
) -> None:
    """A finding for each ordered pair of the group from different tenants, while the
    findings stay under `MAX_FINDINGS`. A group of one tenant (its own certificates sharing a
    name) has no pair: it costs one pass, not one per pair of its members."""
    if len({item.tenant for item in group}) < 2:
        return
    for item in group:
        for other in group:
            if len(out) >= MAX_FINDINGS:
                return
            if other.tenant != item.tenant:
                found = make(item, other)
                if found is not None:
                    out.add(found)


def _shared_name(item: Presented, other: Presented, *, name: str) -> Finding | None:
    if item.fingerprint == other.fingerprint:
        return None  # the same certificate: `shared_certificate` says so
    message = (
        f"tenant {item.tenant} ({item.source}) and tenant {other.tenant} ({other.source}) present "
        f"certificates that both name {name!r}: Exchange Online attributes by the "
        f"certificate's domain, so either tenant's mail can be attributed to the other; {FIX}"
    )
    return Finding(item.tenant, other.tenant, SHARED_NAME, item.fingerprint, message)


def _shared(item: Presented, other: Presented) -> Finding:
    message = (
        f"tenant {item.tenant} ({item.source}) and tenant {other.tenant} ({other.source}) present "
        f"the same certificate {item.fingerprint[:16]}...: Exchange Online attributes its mail "
        f"to one tenant only; {FIX}"
    )
    return Finding(item.tenant, other.tenant, SHARED, item.fingerprint, message)


def _overlap(item: Presented, tenant: str, pattern: str, matched: str) -> tuple[Finding, Finding]:
    message = (
        f"the certificate of tenant {item.tenant} ({item.source}) names {matched!r}, which tenant "
        f"{tenant}'s connector {pattern!r} also accepts: Exchange Online may attribute "
        f"{item.tenant}'s mail to {tenant}; {FIX}"
    )
    return (
        Finding(item.tenant, tenant, OVERLAP, item.fingerprint, message),
        Finding(tenant, item.tenant, OVERLAP, item.fingerprint, message),
    )


def presented(
    states: Iterable[EndpointState], senders: Iterable[SenderState]
) -> Iterator[Presented]:
    """The certificates the exporter has seen per tenant: leaves served by each tenant's
    targets (the relay's certificate, as the server side shows it) and client leaves its
    senders presented."""
    for state in states:
        leaf = state.result.leaf
        if leaf is not None and state.tenant:
            names = (*leaf.dns_names, *leaf.common_names)
            yield Presented(state.tenant, leaf.sha256, names, f"target {state.target}")
    for sender in senders:
        result = sender.result
        leaf = result.leaf if result is not None else None
        if leaf is not None:
            names = (*leaf.dns_names, *leaf.common_names)
            source = f"sender {sender.sender.name}"
            yield Presented(sender.sender.tenant, leaf.sha256, names, source)


def samples(found: Iterable[Finding]) -> Iterator[Sample]:
    for f in found:
        labels = (f.tenant, f.other_tenant, f.reason, f.fingerprint)
        yield "tlsprobe_cross_tenant_attribution", labels, 1.0


class Attribution:
    """The findings of the current state, recomputed only when the certificates seen per
    tenant or the connector patterns changed (scrapes and page views repeat them), and the
    states they name marked critical (`state.attributed`): the endpoints' keys are found at
    recomputation, so marking a snapshot costs one lookup per named endpoint, not one per
    state, and a marked state is made once per published state."""

    def __init__(self) -> None:
        self._key: object = None
        self._found: tuple[Finding, ...] = ()
        self._messages: dict[tuple[str, str], tuple[str, ...]] = {}
        """(tenant, leaf SHA-256) -> the messages of the findings naming it."""
        self._endpoints: tuple[EndpointKey, ...] = ()
        self._marked: dict[object, tuple[object, object]] = {}
        """State key -> (the published state, its marked copy); emptied at recomputation."""

    def current(
        self,
        states: Iterable[EndpointState],
        senders: Iterable[SenderState],
        patterns: Mapping[str, str | None],
    ) -> tuple[Finding, ...]:
        states = list(states)
        items = frozenset(presented(states, senders))
        key = (items, tuple(sorted((t, p or "") for t, p in patterns.items())))
        if key != self._key:
            self._key, self._found = key, findings(items, patterns)
            messages: dict[tuple[str, str], list[str]] = {}
            for f in self._found:
                messages.setdefault((f.tenant, f.fingerprint), []).append(f.message)
            self._messages = {k: tuple(v) for k, v in messages.items()}
            self._endpoints = tuple(s.key for s in states if self._named(s.tenant, s.result))
            self._marked = {}
        return self._found

    @property
    def endpoints(self) -> tuple[EndpointKey, ...]:
        """The endpoints the findings name (as of the last `current`)."""
        return self._endpoints

    def _named(self, tenant: str, result: ProbeResult | None) -> tuple[str, ...]:
        leaf = result.leaf if result is not None else None
        return self._messages.get((tenant, leaf.sha256), ()) if leaf is not None else ()

    def mark(self, state: _State) -> _State:
        """`state` with its critical `cross_tenant` check when a finding names its tenant's
        certificate; the state itself otherwise."""
        tenant = state.tenant if isinstance(state, EndpointState) else state.sender.tenant
        messages = self._named(tenant, state.result)
        if not messages:
            return state
        key = state.key if isinstance(state, EndpointState) else ("sender", *state.sender.key)
        cached = self._marked.get(key)
        if cached is not None and cached[0] is state:
            return cast(_State, cached[1])
        assert state.result is not None  # named: it has a leaf
        marked = replace(state, result=attributed(state.result, messages))
        self._marked[key] = (state, marked)
        return marked


def section(found: Iterable[Finding]) -> str:
    """The status page's section: an `<h2>` and a table; empty without findings."""
    rows = "\n".join(
        f"<tr><td>{html.escape(f.tenant)}</td><td>{html.escape(f.other_tenant)}</td>"
        f"<td>{f.reason}</td><td>{html.escape(f.message)}</td></tr>"
        for f in found
    )
    if not rows:
        return ""
    return (
        "<h2>Cross-tenant attribution (MC1226222): critical</h2>\n"
        "<table><thead><tr><th>Tenant</th><th>Other tenant</th><th>Reason</th><th>Finding"
        f"</th></tr></thead>\n<tbody>\n{rows}\n</tbody></table>\n"
    )

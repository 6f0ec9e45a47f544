"""Exchange Online connector-name and accepted-domain matching, and RFC 9525 host matching.

Pure functions over strings: no I/O, no certificates, no clock. `evaluate.py` feeds them the leaf's
SAN dNSNames and subject CNs and gets back `Check` verdicts. Two different rule sets live here on
purpose, because they disagree: Exchange Online's certificate-based inbound connector
(`TlsSenderCertificateName`; README, "certificate_domain") treats `*.D` as "D and its whole subtree"
and compares CNs too, while RFC 9525 lets a wildcard stand for exactly one label and looks at SAN
dNSNames only. Every name is normalized the same way first: lower-case ASCII, one trailing dot
stripped, IDNs as A-labels, so `Mail.Contoso.COM.` and `mail.contoso.com` are one name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tlsprobe.model import Check, CheckName, Status
from tlsprobe.probe.names import is_host_name, normalize_name, show

CERTIFICATE_DOMAIN = CheckName.CERTIFICATE_DOMAIN
ACCEPTED_DOMAIN = CheckName.ACCEPTED_DOMAIN

SYMPTOM_CERTIFICATE_DOMAIN = "550 5.7.64 TenantAttribution: Relay Access Denied"
SYMPTOM_ACCEPTED_DOMAIN = (
    "550 5.7.51 TenantInboundAttribution; bounces and out-of-office replies fail"
)

_MAX_SHOWN = 5


class ConnectorPatternError(ValueError):
    """A connector certificate-domain value that Exchange Online would refuse or misread.

    `problem` says what is wrong without the value (the configuration never echoes one);
    `str()` quotes the value, for the command line that was just given it."""

    def __init__(self, value: str, problem: str) -> None:
        shown = f" {value!r}" if value else ""
        super().__init__(f"connector certificate domain{shown} {problem}")
        self.problem = problem


def _is_under(name: str, domain: str) -> bool:
    """`name` equals `domain` or lies below it, on a label boundary."""
    return name == domain or name.endswith("." + domain)


def _wildcard_base(name: str) -> str | None:
    """For a well-formed wildcard name `*.X` return X; None for anything else."""
    if name.startswith("*.") and "*" not in name[2:]:
        return name[2:]
    return None


@dataclass(frozen=True, slots=True)
class ConnectorPattern:
    """A parsed `TlsSenderCertificateName`: a literal name, or `*.domain` for a whole subtree.

    `*.D` needs at least two labels in D: `*.com` would accept any certificate under a
    top-level domain, which is never what an administrator meant.  A literal single label
    (`localhost`) is accepted so that lab set-ups can be probed; the accepted-domain check
    still flags it.
    """

    raw: str
    """The value as configured."""
    domain: str
    """Normalized; for `*.contoso.com` this is `contoso.com`."""
    wildcard: bool

    @classmethod
    def parse(cls, value: str) -> ConnectorPattern:
        """Validate and normalize a connector value; ConnectorPatternError says what is wrong."""
        if not value:
            raise ConnectorPatternError("", "is empty")
        if any(c.isspace() for c in value):
            raise ConnectorPatternError(value, "contains spaces")
        name = normalize_name(value)
        domain = _parse_wildcard(value, name)
        wildcard = domain is not None
        domain = name if domain is None else domain
        if not is_host_name(domain):
            raise ConnectorPatternError(
                value,
                "is not a valid DNS name "
                "(labels of letters, digits and inner hyphens, 1-63 characters, separated by dots)",
            )
        if wildcard and "." not in domain:
            raise ConnectorPatternError(
                value,
                "would accept every certificate under a "
                "top-level domain; use '*.' followed by your own domain",
            )
        return cls(raw=value, domain=domain, wildcard=wildcard)

    def __str__(self) -> str:
        return f"*.{self.domain}" if self.wildcard else self.domain


def _parse_wildcard(value: str, name: str) -> str | None:
    """The domain after a leading `*.`, None when `name` has no wildcard; raise when misplaced."""
    if "*" not in name:
        return None
    if name == "*":
        raise ConnectorPatternError(
            value, "would accept any certificate; use '*.contoso.com' or a literal name"
        )
    if name.count("*") > 1:
        raise ConnectorPatternError(
            value, "has more than one '*'; only a single leading '*.' is allowed"
        )
    labels = name.split(".")
    star = next(i for i, label in enumerate(labels) if "*" in label)
    if labels[star] != "*":
        raise ConnectorPatternError(
            value,
            "has '*' inside a label; "
            "only a whole leading label '*.' is allowed (for example '*.contoso.com')",
        )
    if star != 0:
        raise ConnectorPatternError(
            value,
            "embeds a wildcard; Exchange Online allows "
            "it only as the leading label (for example '*.contoso.com')",
        )
    return name[2:]


@dataclass(frozen=True, slots=True)
class ConnectorMatch:
    """How a connector value fared against one certificate's names."""

    matched: str | None
    """The normalized certificate name that satisfies the connector; None if none does."""
    near_miss: str | None
    """A wildcard certificate name `*.X` that would satisfy the connector if the connector were
    `*.X`, set only when nothing matched and the connector is the literal X or a name under X."""


def match_connector(pattern: ConnectorPattern, cert_names: Iterable[str]) -> ConnectorMatch:
    """Match a connector value against every SAN dNSName and subject CN, Microsoft's way.

    `*.D` is satisfied by D, by any name under D at any depth, and by wildcard names `*.D` and
    `*.sub.D`.  A literal N only by a certificate name equal to N: a wildcard certificate never
    satisfies a literal connector, which is reported as a near miss.  The first satisfying name,
    in the order given, wins.
    """
    near_miss: str | None = None
    for name in _normalized(cert_names):
        if _satisfies(pattern, name):
            return ConnectorMatch(matched=name, near_miss=None)
        base = _wildcard_base(name)
        if near_miss is None and not pattern.wildcard and base and _is_under(pattern.domain, base):
            near_miss = name
    return ConnectorMatch(matched=None, near_miss=near_miss)


def _satisfies(pattern: ConnectorPattern, name: str) -> bool:
    if not pattern.wildcard:
        return name == pattern.domain
    # A malformed certificate name such as `a.*.contoso.com` must not pass for a subdomain.
    if "*" in name and _wildcard_base(name) is None:
        return False
    return _is_under(name, pattern.domain)


def accepted_domain_for(name: str, accepted: Iterable[str]) -> str | None:
    """The most specific accepted domain that `name` equals or lies under, label-aligned.

    A wildcard certificate name `*.X` is judged by X, its subtree: `*.contoso.com` lies under
    accepted `contoso.com`, not under `mail.contoso.com`.
    """
    normalized = normalize_name(name)
    subject = _wildcard_base(normalized) or normalized
    if not subject:
        return None
    candidates = [d for d in _normalized(accepted) if _is_under(subject, d)]
    return max(candidates, key=len, default=None)


def hostname_matches(host: str, dns_names: Iterable[str]) -> str | None:
    """The SAN dNSName, as given, that identifies `host` under RFC 9525; None if none does.

    A wildcard counts only as the whole left-most label and stands for exactly one label: it
    never matches the apex, a deeper name, or a wildcard under a single label (`*.com`).
    Callers pass SAN dNSNames only; CN matching is their decision.
    """
    wanted = normalize_name(host)
    if not wanted or "*" in wanted:
        return None
    for entry in dns_names:
        if _rfc9525_match(wanted, normalize_name(entry)):
            return entry
    return None


def _rfc9525_match(host: str, pattern: str) -> bool:
    if "*" not in pattern:
        return pattern == host
    base = _wildcard_base(pattern)
    if base is None or "." not in base:
        return False
    first, _, rest = host.partition(".")
    return bool(first) and rest == base


def check_certificate_domain(
    cert_names: Sequence[str], pattern: ConnectorPattern | None, accepted: Sequence[str]
) -> Check:
    """Would the connector's TlsSenderCertificateName accept this certificate?

    Without a connector value the best available stand-in is "some certificate name lies in an
    accepted domain", since that is the domain an administrator would put on the connector.
    """
    names = _normalized(cert_names)
    if pattern is not None:
        return _certificate_domain_for_pattern(names, pattern)
    domains = _normalized(accepted)
    if not domains:
        return _check(
            CERTIFICATE_DOMAIN,
            Status.UNKNOWN,
            "no --certificate-domain or --accepted-domain given; connector match not checked",
        )
    return _accepted_domain_by_names(
        names, domains, CERTIFICATE_DOMAIN, " (no connector certificate domain given)"
    )


def _certificate_domain_for_pattern(names: list[str], pattern: ConnectorPattern) -> Check:
    result = match_connector(pattern, names)
    if result.matched is not None:
        return _check(
            CERTIFICATE_DOMAIN,
            Status.OK,
            f"certificate name {show(result.matched)} matches connector {show(str(pattern))}",
        )
    if result.near_miss is not None:
        return _check(
            CERTIFICATE_DOMAIN,
            Status.CRITICAL,
            f"wildcard certificate {show(result.near_miss)} does not satisfy literal connector "
            f"{show(str(pattern))}: Microsoft's rule is that the connector must be "
            f"{show(result.near_miss)}, or the certificate must name {show(str(pattern))}",
        )
    return _check(
        CERTIFICATE_DOMAIN,
        Status.CRITICAL,
        f"no certificate name matches connector {show(str(pattern))}; "
        f"certificate names: {_show_list(names)}",
    )


def check_accepted_domain(
    cert_names: Sequence[str], pattern: ConnectorPattern | None, accepted: Sequence[str]
) -> Check:
    """Is the connector's domain (or, without one, a certificate name) an accepted domain?

    A literal connector name under an accepted domain but not itself accepted only warns:
    Exchange Online attributes the mail by the envelope sender then, so ordinary relay works
    while NDRs and out-of-office replies (null sender) are refused.
    """
    domains = _normalized(accepted)
    if not domains:
        return _check(
            ACCEPTED_DOMAIN,
            Status.UNKNOWN,
            "no --accepted-domain given; tenant attribution not checked",
        )
    names = _normalized(cert_names)
    if pattern is None:
        return _accepted_domain_by_names(names, domains)
    return _accepted_domain_for_pattern(names, pattern, domains)


def _accepted_domain_by_names(
    names: list[str], domains: list[str], check: CheckName = ACCEPTED_DOMAIN, note: str = ""
) -> Check:
    """Without a connector name: some certificate name must lie in an accepted domain (both
    checks judge that then; `note` says why on success)."""
    found = _first_accepted(names, domains)
    if found is not None:
        name, domain = found
        return _check(
            check,
            Status.OK,
            f"certificate name {show(name)} lies in accepted domain {show(domain)}{note}",
        )
    return _check(
        check,
        Status.CRITICAL,
        f"no certificate name lies in an accepted domain ({_show_list(domains)}); "
        f"certificate names: {_show_list(names)}",
    )


def _accepted_domain_for_pattern(
    names: list[str], pattern: ConnectorPattern, domains: list[str]
) -> Check:
    connector = show(str(pattern))
    home = accepted_domain_for(pattern.domain, domains)
    if home is None:
        return _check(
            ACCEPTED_DOMAIN,
            Status.CRITICAL,
            f"connector {connector} is not in any accepted domain ({_show_list(domains)}); "
            "add its domain as an accepted domain of the tenant",
        )
    # Given the connector lies in `home`, so does any name it matched; kept explicit so that a
    # future change to the matching rules cannot silently pass an unaccepted name.
    matched = match_connector(pattern, names).matched
    if matched is not None and accepted_domain_for(matched, domains) is None:
        return _check(
            ACCEPTED_DOMAIN,
            Status.CRITICAL,
            f"certificate name {show(matched)} matched connector {connector} but is not in "
            f"any accepted domain ({_show_list(domains)})",
        )
    if pattern.wildcard or pattern.domain == home:
        return _check(
            ACCEPTED_DOMAIN,
            Status.OK,
            f"connector {connector} lies in accepted domain {show(home)}",
        )
    return _check(
        ACCEPTED_DOMAIN,
        Status.WARNING,
        f"connector {connector} is under accepted domain {show(home)} but is not itself "
        "accepted: relay works only while the envelope sender's domain is accepted; NDRs and "
        f"out-of-office replies fail; add {show(pattern.domain)} as an accepted domain or use "
        f"{show('*.' + home)} on the connector",
    )


def _first_accepted(names: Iterable[str], domains: list[str]) -> tuple[str, str] | None:
    for name in names:
        domain = accepted_domain_for(name, domains)
        if domain is not None:
            return name, domain
    return None


def _normalized(names: Iterable[str]) -> list[str]:
    """Normalized, non-empty, de-duplicated names in their original order."""
    return list(dict.fromkeys(n for n in map(normalize_name, names) if n))


def _check(name: CheckName, status: Status, message: str) -> Check:
    symptom = ""
    if status in (Status.CRITICAL, Status.WARNING):
        symptom = (
            SYMPTOM_CERTIFICATE_DOMAIN if name == CERTIFICATE_DOMAIN else SYMPTOM_ACCEPTED_DOMAIN
        )
    return Check(name=name, status=status, message=message, symptom=symptom)


def _show_list(names: Sequence[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(show(n) for n in names[:_MAX_SHOWN])
    extra = len(names) - _MAX_SHOWN
    return f"{shown} (+{extra} more)" if extra > 0 else shown

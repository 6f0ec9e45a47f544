"""The closed enums that cross module boundaries: every metric label value comes from one of
these (or from the configuration), never from free text."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Nagios-style status; the integer is both the exit code and the metric value."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Reason(enum.StrEnum):
    """Why no healthy TLS session was seen. The only failure text that becomes a label value."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    DNS = "dns"
    THROTTLED = "throttled"
    NO_STARTTLS = "no_starttls"
    STARTTLS_REJECTED = "starttls_rejected"
    TLS_HANDSHAKE = "tls_handshake"
    PROTOCOL = "protocol"
    UNREACHABLE = "unreachable"

    @property
    def status(self) -> Status:
        """UNKNOWN when nothing about the endpoint's TLS could be learnt, else CRITICAL."""
        return Status.UNKNOWN if self in _OUTSIDE_TLS else Status.CRITICAL


_OUTSIDE_TLS = frozenset(
    {Reason.REFUSED, Reason.TIMEOUT, Reason.DNS, Reason.THROTTLED, Reason.UNREACHABLE}
)

# Reasons worth retrying: the next attempt may well see a certificate.
TRANSIENT_REASONS = frozenset({Reason.REFUSED, Reason.TIMEOUT, Reason.DNS, Reason.THROTTLED})


class CanaryReason(enum.StrEnum):
    """Why a send-side canary failed: the only canary failure text that becomes a label."""

    SUBMIT_UNREACHABLE = "submit_unreachable"
    SUBMIT_TIMEOUT = "submit_timeout"
    SUBMIT_TLS = "submit_tls"
    SUBMIT_AUTH = "submit_auth"
    SUBMIT_REFUSED = "submit_refused"
    SUBMIT_PROTOCOL = "submit_protocol"
    """The relay broke SMTP: a malformed reply, or one past the canary's bounds."""
    MISSING = "missing"
    """Submitted, but not received before its deadline (the relay's routing or TLS broke)."""


IMPLICIT_TLS_PORT = 465
"""Submissions (RFC 8314): the one port where TLS starts at connect unless told otherwise."""


class Mode(enum.StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"

    @classmethod
    def for_port(cls, port: int) -> Mode:
        """The mode a port implies when none is configured: implicit TLS on 465 only."""
        return cls.IMPLICIT if port == IMPLICIT_TLS_PORT else cls.STARTTLS


class CheckName(enum.StrEnum):
    """Every check a result may carry, in report order. `expected_certificate` only when pinned,
    `certificate_format` only when a certificate could not be read strictly."""

    STARTTLS = "starttls"
    TLS_VERSION = "tls_version"
    CERTIFICATE_FORMAT = "certificate_format"
    CHAIN_TRUSTED = "chain_trusted"
    NOT_EXPIRED = "not_expired"
    HOSTNAME = "hostname"
    CERTIFICATE_DOMAIN = "certificate_domain"
    ACCEPTED_DOMAIN = "accepted_domain"
    KEY_STRENGTH = "key_strength"
    SIGNATURE_ALGORITHM = "signature_algorithm"
    EXPECTED_CERTIFICATE = "expected_certificate"
    CLIENT_AUTH_EKU = "client_auth_eku"
    """Send side only: the leaf a relay sends with allows TLS client authentication."""
    SAME_AS_SERVER = "same_as_server"
    """Send side only: the relay sends with the certificate it serves."""
    DANE = "dane"
    """Only when the host publishes TLSA records (and DANE was asked for)."""
    MTA_STS = "mta_sts"
    """Only when the host's policy domain publishes an MTA-STS policy (and it was asked for)."""
    OUTBOUND_CONNECTOR = "outbound_connector"
    """Server side, only when an Exchange Online outbound connector routes to the host: its
    `TlsSettings` (and `TlsDomain`) judged as Exchange Online applies them."""
    CROSS_TENANT = "cross_tenant"
    """Exporter only (`tlsprobe serve`, over all its tenants), only where a cross-tenant
    attribution finding (MC1226222) names the certificate: never from one probe alone."""


CHECK_NAMES: tuple[CheckName, ...] = (
    *tuple(CheckName)[:11],
    CheckName.OUTBOUND_CONNECTOR,
    CheckName.DANE,
    CheckName.MTA_STS,
    CheckName.CROSS_TENANT,
)
"""The checks of a server probe, in report order (each has its runbook heading in the README);
`outbound_connector` only where an outbound connector routes to the host, `dane` and `mta_sts`
only where DNS policies apply, `cross_tenant` only in the exporter, where another tenant
shares the certificate (`exporter.exchange.attribution`)."""


class TlsSettings(enum.StrEnum):
    """An Exchange Online outbound connector's `TlsSettings`: what it demands of the server."""

    ENCRYPTION_ONLY = "EncryptionOnly"
    """A TLS session; any certificate."""
    CERTIFICATE_VALIDATION = "CertificateValidation"
    """A TLS session with a trusted, unexpired chain."""
    DOMAIN_VALIDATION = "DomainValidation"
    """A trusted chain whose names match the connector's `TlsDomain` (or the smart host)."""


class ChainReason(enum.StrEnum):
    """Why `chain_trusted` failed: the `reason` label of `tlsprobe_chain_untrusted_info`."""

    SELF_SIGNED = "self_signed"
    UNKNOWN_ROOT = "unknown_root"
    INTERMEDIATE_MISSING = "intermediate_missing"
    INTERMEDIATE_EXPIRED = "intermediate_expired"
    LEAF_EXPIRED = "leaf_expired"
    NOT_YET_VALID = "not_yet_valid"
    MALFORMED = "malformed"
    """A certificate that cannot be parsed, or whose signature algorithm or extensions the
    verifier refuses (see the `certificate_format` check)."""
    INVALID = "invalid"
    NO_CERTIFICATE = "no_certificate"
    """Send side only: the relay negotiated TLS without presenting a client certificate."""


class Phase(enum.StrEnum):
    """Where a probe spent its time: the `phase` label of `tlsprobe_probe_duration_seconds`."""

    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    TOTAL = "total"


PHASES: tuple[Phase, ...] = tuple(Phase)


class ChangeClass(enum.StrEnum):
    """What a change of an endpoint's or a sender's leaf is: the `change` label of
    `tlsprobe_cert_change_info`."""

    RENEWAL = "renewal"
    """A clean renewal: same names, same issuing CA, no weaker key, no EKU lost, trusted full
    chain, no check newly failing, a later expiry. Recorded; pages nobody."""
    RISKY = "risky"
    """Anything else; each difference is a `ChangeReason`. Pages at once."""


class ChangeReason(enum.StrEnum):
    """What differs in a leaf change, each reason risky but `INTERMEDIATE_ROTATED`: the
    `reasons` label of `tlsprobe_cert_change_info` (comma-joined, in this order)."""

    PREVIOUS_UNKNOWN = "previous_unknown"
    """The history no longer holds the certificate it replaces: nothing to compare with."""
    SUBJECT_CHANGED = "subject_changed"
    NAMES_ADDED = "names_added"
    NAMES_REMOVED = "names_removed"
    ISSUER_CHANGED = "issuer_changed"
    """Another CA (the issuer's organization differs, or the new chain is not trusted), or a
    sibling intermediate where the connector names the issuer (Exchange)."""
    INTERMEDIATE_ROTATED = "intermediate_rotated"
    """Not risky: another intermediate of the same CA (same issuer organization, trusted
    chain), as Let's Encrypt picks at random; named in a renewal's reasons."""
    KEY_WEAKER = "key_weaker"
    EKU_LOST = "eku_lost"
    INTERMEDIATE_MISSING = "intermediate_missing"
    CHAIN_UNTRUSTED = "chain_untrusted"
    """Untrusted for any other reason than a missing intermediate (see `ChainReason`)."""
    EXPIRY_EARLIER = "expiry_earlier"
    """The new leaf does not expire later than the one it replaces."""
    PIN_MISMATCH = "pin_mismatch"
    CHECK_FAILING = "check_failing"
    """A check (other than those above) fails that did not fail on the old certificate."""

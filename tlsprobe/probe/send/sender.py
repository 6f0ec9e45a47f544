"""Judge what a relay presented as a TLS *client*: one received session to one `ProbeResult`.

Exchange Online's certificate-based connector judges the certificate the on-prem relay presents
when it *sends*. The receiver (`receiver.py`) captures that chain, whatever it is, in a
`Session`; this module judges it with the same engine and last resort as the server side
(`evaluate_or_unjudged`, without `hostname`, since a client has no name we dialled) plus two
checks only a sender has:

- `client_auth_eku`: the leaf's extended key usage lacks clientAuth (warning). Public CAs stop
  putting clientAuth into server certificates in 2026; a receiver that verifies client
  certificates with OpenSSL's purpose check refuses such a leaf.
- `same_as_server`: the relay presents another certificate when sending than the server probe
  of the same host sees when receiving (warning; both fingerprints named).

A session that negotiated TLS without a client certificate is critical ("no certificate
presented"): Exchange Online logs `TLS negotiation failed with error NoCredentials`. Pure apart
from certificate parsing (cached by DER); the clock is injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsprobe.model import (
    Capture,
    CertFacts,
    ChainReason,
    Check,
    CheckName,
    Endpoint,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe.smtp.server import Message
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore, evaluate_or_unjudged, judged_part

SYMPTOMS: dict[CheckName, str] = {
    CheckName.STARTTLS: "the relay did not start TLS: a certificate-based connector never "
    "matches; Exchange Online rejects the mail (451 4.4.0 / 550 5.7.64 TenantAttribution)",
    CheckName.CLIENT_AUTH_EKU: "Exchange Online judges the chain and the name, not the EKU; "
    "receivers that verify client certificates with OpenSSL's purpose check refuse this leaf",
    CheckName.SAME_AS_SERVER: "the certificate pinned or named for the connector may be the "
    "server's, not the one the relay sends with: relay breaks when they differ in name or issuer",
}
_NO_CERTIFICATE = (
    "TLS negotiation failed with error NoCredentials: the connector cannot match; "
    "550 5.7.64 TenantAttribution"
)


@dataclass(frozen=True, slots=True)
class Session:
    """What the receiver saw of one inbound SMTP session. `chain_der` is as the client sent it
    (leaf first) and is kept whatever the verdict; empty when no certificate was presented."""

    peer: str
    """The client's IP address."""
    local_port: int
    started_at: float
    helo: str | None = None
    tls: TlsInfo | None = None
    chain_der: tuple[bytes, ...] = ()
    sni: str | None = None
    error: ProbeError | None = None
    """Why the session did not end cleanly (after TLS this does not void the chain)."""
    messages: tuple[Message, ...] = ()
    auth_attempts: int = 0
    refused_recipients: int = 0
    discarded_plaintext: int = 0
    plaintext_mail: bool = False
    """The client tried MAIL/RCPT/DATA before STARTTLS."""
    phases: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    transcript: tuple[str, ...] = ()

    @property
    def capture(self) -> Capture:
        """What the probe engine would have captured of this session (the peer's address)."""
        return Capture(
            self.peer,
            self.chain_der,
            self.tls,
            self.error,
            phases=self.phases,
            transcript=self.transcript,
        )


def judge_session(
    session: Session,
    policy: Policy,
    trust: TrustStore,
    *,
    now: datetime,
    name: str = "",
    server_sha256: str | None = None,
) -> ProbeResult:
    """The verdict on the certificate a sender presented. `name` is the sender's configured
    name (the `target` of the result); `server_sha256` the leaf the server probe of the same
    host saw, when there is one (enables `same_as_server`)."""
    endpoint = Endpoint(
        host=session.helo or session.peer,
        port=session.local_port,
        address=session.peer,
        sni=session.sni,
        target=name,
    )
    if session.tls is None:
        return _without_tls(endpoint, session)
    if not session.chain_der:
        return _without_certificate(endpoint, session, session.tls)
    # Facts never fail: what cannot be read strictly is a certificate_format finding.
    chain = tuple(certs.facts_from_der(der) for der in judged_part(session.chain_der))
    verdict = evaluate_or_unjudged(
        session.chain_der,
        host=None,
        tls=session.tls,
        policy=policy,
        trust=trust,
        now=now,
        name=name or session.peer,
    )
    checks = (
        _client_starttls(session),
        *verdict.checks[1:],
        check_client_auth_eku(chain[0]),
        *([check_same_as_server(chain[0], server_sha256)] if server_sha256 else []),
    )
    return replace(_result(endpoint, session, chain, checks), connector=policy.connector)


def _client_starttls(session: Session) -> Check:
    return Check(CheckName.STARTTLS, Status.OK, f"client started TLS (EHLO {session.helo or '-'})")


def _without_tls(endpoint: Endpoint, session: Session) -> ProbeResult:
    if session.plaintext_mail:
        error = ProbeError(Reason.NO_STARTTLS, "client tried to send mail without STARTTLS")
    elif session.error is not None:
        error = session.error
    else:
        error = ProbeError(Reason.NO_STARTTLS, "client ended the session without STARTTLS")
    checks: tuple[Check, ...] = ()
    if error.kind is Reason.NO_STARTTLS:
        checks = (
            Check(CheckName.STARTTLS, Status.CRITICAL, error.message, SYMPTOMS[CheckName.STARTTLS]),
        )
    return ProbeResult.failed(
        endpoint,
        error,
        started_at=session.started_at,
        address=session.peer,
        tls=session.tls,
        checks=checks,
        phases=session.phases,
        transcript=session.transcript,
    )


def _without_certificate(endpoint: Endpoint, session: Session, tls: TlsInfo) -> ProbeResult:
    check = Check(
        CheckName.CHAIN_TRUSTED,
        Status.CRITICAL,
        "no certificate presented: the relay sent no client certificate "
        "(Postfix: smtp_tls_chain_files; Exchange: the send connector's TlsCertificateName)",
        _NO_CERTIFICATE,
        ChainReason.NO_CERTIFICATE,
    )
    checks = (
        _client_starttls(session),
        Check(CheckName.TLS_VERSION, Status.OK, tls.version),
        check,
    )
    return _result(endpoint, session, (), checks)


def _result(
    endpoint: Endpoint, session: Session, chain: tuple[CertFacts, ...], checks: tuple[Check, ...]
) -> ProbeResult:
    return ProbeResult.judged(
        endpoint, session.capture, started_at=session.started_at, chain=chain, checks=checks
    )


# --- the checks only a sender has ----------------------------------------------------------


_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string
_ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string
_SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH.dotted_string


def check_client_auth_eku(leaf: CertFacts) -> Check:
    usages = certs.extended_key_usages(leaf.der)
    if usages is None:
        return Check(CheckName.CLIENT_AUTH_EKU, Status.OK, "no EKU extension: every usage allowed")
    if _CLIENT_AUTH in usages or _ANY_EKU in usages:
        return Check(CheckName.CLIENT_AUTH_EKU, Status.OK, "leaf allows TLS client authentication")
    shown = "serverAuth only" if usages == {_SERVER_AUTH} else ", ".join(sorted(usages)) or "none"
    return Check(
        CheckName.CLIENT_AUTH_EKU,
        Status.WARNING,
        f"leaf EKU lacks clientAuth ({shown}): receivers that verify client certificates "
        "(OpenSSL purpose check: Postfix smtpd_tls_req_ccert / permit_tls_clientcerts, Exim "
        "tls_verify_hosts, Sendmail) refuse it; public CAs stop issuing clientAuth in 2026",
        SYMPTOMS[CheckName.CLIENT_AUTH_EKU],
    )


def check_same_as_server(leaf: CertFacts, server_sha256: str) -> Check:
    if leaf.sha256 == server_sha256.lower():
        return Check(CheckName.SAME_AS_SERVER, Status.OK, "sends with the certificate it serves")
    return Check(
        CheckName.SAME_AS_SERVER,
        Status.WARNING,
        f"sends with {leaf.sha256} but serves {server_sha256.lower()} "
        "(Postfix: smtp_tls_chain_files differs from smtpd_tls_chain_files)",
        SYMPTOMS[CheckName.SAME_AS_SERVER],
    )

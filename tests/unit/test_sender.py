"""The send side's verdicts: a received session's client chain judged like a server's, plus
`client_auth_eku` and `same_as_server`. Chains are made here; no sockets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Hierarchy, Issued, make_leaf
from tests.support.smtpclients import check_named
from tlsprobe.model import (
    Capture,
    ConnectorRef,
    Endpoint,
    Policy,
    ProbeError,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe import prober
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509 import evaluate
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))


def session(chain: tuple[Issued, ...] | list[bytes], *, tls: TlsInfo | None = TLS13) -> Session:
    ders = tuple(c if isinstance(c, bytes) else c.der for c in chain)
    return Session(
        "127.0.0.2", 2525, NOW.timestamp(), helo="relay.contoso.test", tls=tls, chain_der=ders
    )


def sent(pki: Hierarchy, leaf: Issued) -> tuple[Issued, ...]:
    return (leaf, Issued(pki.intermediate.cert, pki.intermediate.key))


def test_a_good_client_chain_is_ok_and_ready_without_a_hostname_check(
    pki: Hierarchy, trust: TrustStore
) -> None:
    result = judge_session(
        session(sent(pki, pki.leaf(("relay.contoso.test",)))),
        POLICY,
        trust,
        now=NOW,
        name="relay-1",
    )
    assert result.status is Status.OK and result.o365_ready
    names = [c.name for c in result.checks]
    assert "hostname" not in names and "client_auth_eku" in names
    assert "same_as_server" not in names  # no server probe to compare with
    assert result.endpoint.name == "relay-1" and result.address == "127.0.0.2"


def test_no_certificate_presented_is_critical(trust: TrustStore) -> None:
    result = judge_session(session(()), POLICY, trust, now=NOW)
    assert result.status is Status.CRITICAL and not result.o365_ready
    check = result.check("chain_trusted")
    assert check is not None and check.reason == "no_certificate"
    assert "no certificate presented" in check.message
    assert "NoCredentials" in check.symptom


def test_a_client_that_never_starts_tls_is_critical(trust: TrustStore) -> None:
    plain = Session("127.0.0.2", 2525, NOW.timestamp(), plaintext_mail=True)
    result = judge_session(plain, POLICY, trust, now=NOW)
    assert result.status is Status.CRITICAL
    assert result.error is not None and result.error.kind is Reason.NO_STARTTLS


def test_a_timeout_before_tls_is_unknown(trust: TrustStore) -> None:
    slow = Session("127.0.0.2", 2525, NOW.timestamp(), error=ProbeError(Reason.TIMEOUT, "slow"))
    assert judge_session(slow, POLICY, trust, now=NOW).status is Status.UNKNOWN


def test_a_leaf_without_client_auth_is_a_warning_naming_the_receivers(
    pki: Hierarchy, trust: TrustStore
) -> None:
    leaf = pki.leaf(("relay.contoso.test",), client_auth=False)
    result = judge_session(session(sent(pki, leaf)), POLICY, trust, now=NOW)
    check = result.check("client_auth_eku")
    assert check is not None and check.status is Status.WARNING
    assert "serverAuth only" in check.message and "Postfix" in check.message
    assert result.status is Status.WARNING and result.o365_ready  # Exchange does not judge EKU


def test_same_as_server_names_both_fingerprints(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf(("relay.contoso.test",))
    other = pki.leaf(("mail.contoso.test",))
    result = judge_session(
        session(sent(pki, leaf)), POLICY, trust, now=NOW, server_sha256=other.sha256
    )
    check = result.check("same_as_server")
    assert check is not None and check.status is Status.WARNING
    assert leaf.sha256 in check.message and other.sha256 in check.message
    same = judge_session(
        session(sent(pki, leaf)), POLICY, trust, now=NOW, server_sha256=leaf.sha256.upper()
    )
    assert check_named(same, "same_as_server").status is Status.OK


def test_an_expired_client_certificate_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf(
        ("relay.contoso.test",),
        not_before=NOW - timedelta(days=100),
        not_after=NOW - timedelta(days=1),
    )
    result = judge_session(session(sent(pki, leaf)), POLICY, trust, now=NOW)
    assert check_named(result, "not_expired").status is Status.CRITICAL
    assert result.status is Status.CRITICAL and not result.o365_ready


def test_a_name_outside_the_accepted_domains_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    result = judge_session(
        session(sent(pki, pki.leaf(("relay.fabrikam.test",)))), POLICY, trust, now=NOW
    )
    assert check_named(result, "certificate_domain").status is Status.CRITICAL
    assert not result.o365_ready


def test_a_self_signed_client_certificate_is_captured_and_judged(trust: TrustStore) -> None:
    leaf = make_leaf(None, ("relay.contoso.test",))
    result = judge_session(session((leaf,)), POLICY, trust, now=NOW)
    assert result.chain[0].sha256 == leaf.sha256
    check = result.check("chain_trusted")
    assert check is not None and check.reason == "self_signed"


def test_an_unparseable_client_certificate_is_a_critical_verdict(trust: TrustStore) -> None:
    result = judge_session(session([b"not a certificate"]), POLICY, trust, now=NOW)
    assert result.status is Status.CRITICAL
    assert result.error is None  # judged on what was sent, with its fingerprint
    finding = result.check("certificate_format")
    assert finding is not None and finding.status is Status.CRITICAL


def test_a_leaf_without_any_eku_extension_allows_client_use(
    pki: Hierarchy, trust: TrustStore
) -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=relay.contoso.test"))
        .issuer_name(pki.intermediate.cert.subject)
        .public_key(pki.leaf().key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
    )
    cert = builder.sign(pki.intermediate.key, hashes.SHA256())
    result = judge_session(session([cert.public_bytes(Encoding.DER)]), POLICY, trust, now=NOW)
    assert check_named(result, "client_auth_eku").status is Status.OK


def test_a_senders_verdict_speaks_for_the_inbound_connector(
    pki: Hierarchy, trust: TrustStore
) -> None:
    policy = replace(POLICY, inbound_connector="From contoso relay")
    leaf = pki.leaf(("relay.contoso.test",))
    result = judge_session(session(sent(pki, leaf)), policy, trust, now=NOW, name="relay-1")
    assert result.connector == ConnectorRef(
        "inbound", "From contoso relay", "TlsSenderCertificateName *.contoso.test"
    )
    assert result.readiness == (
        "ready for the inbound connector 'From contoso relay' "
        "(TlsSenderCertificateName *.contoso.test)"
    )


@pytest.mark.parametrize("side", ["sender", "server"])
def test_both_sides_share_the_last_resort_verdict(
    side: str,
    pki: Hierarchy,
    trust: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in judging (here: evaluate_der raising) is a critical certificate_format verdict
    that replaces the old one, logged, on the probe's side and the receiver's alike; the
    receiver's raised out of the session."""

    def broken(*_args: object, **_kwargs: object) -> object:
        raise ValueError("a bug the fuzzers have not found")

    monkeypatch.setattr(evaluate, "evaluate_der", broken)
    leaf = pki.leaf(("relay.contoso.test",))
    chain = (leaf.der, pki.intermediate.der)
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    now = datetime.now(UTC)
    if side == "sender":
        relayed = Session("192.0.2.10", 2525, now.timestamp(), helo="r", tls=tls, chain_der=chain)
        result = judge_session(relayed, Policy(), trust, now=now, name="relay-1")
    else:
        capture = Capture("192.0.2.10", chain, tls)
        result = prober.judge(
            Endpoint("relay.test"), capture, Policy(), trust, started_at=0, now=now
        )
    finding = result.check("certificate_format")
    assert result.status is Status.CRITICAL and finding is not None
    assert "could not judge this chain (ValueError" in finding.message
    assert "cannot judge the chain of" in caplog.text

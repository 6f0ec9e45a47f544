"""Verdicts of `tlsprobe.probe.x509.evaluate` on chains built in the test, against a fixed clock.

Every certificate here has its validity set relative to `NOW`, never to the real date, so a
verdict cannot drift as time passes. The chains cover each `chain_trusted` reason token, the
expiry thresholds (including an intermediate that expires before the leaf), RFC 9525 host
matching, weak keys and signatures, TLS versions, certificate pins, and `o365_ready`, which must
hold only when everything Exchange Online demands holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from cryptography import x509

from tests.support.expected import SERVER_CHECKS
from tests.support.pki import FIXED_INTERMEDIATE_CN as INTERMEDIATE_CN
from tests.support.pki import FIXED_NOW as NOW
from tests.support.pki import FIXED_ROOT_CN as ROOT_CN
from tests.support.pki import (
    Hierarchy,
    Issued,
    KeyKind,
    make_intermediate,
    make_leaf,
    make_root,
)
from tlsprobe.model import Check, CheckName, Policy, Status, TlsInfo, overall_status
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import (
    SYMPTOMS,
    TrustStore,
    Verdict,
    check_expected,
    check_expiry,
    check_hostname,
    check_key_strength,
    check_signature,
    check_tls_version,
    check_trust,
    evaluate,
)

HOST = "mail.contoso.test"
TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
EXCHANGE_POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))


def days(n: float) -> timedelta:
    return timedelta(days=n)


@pytest.fixture(scope="module")
def private_ca() -> Hierarchy:
    """A CA the trust store does not know (an in-house PKI)."""
    root = make_root("Private Root CA", not_before=NOW - days(365), not_after=NOW + days(3650))
    intermediate = make_intermediate(
        root, "Private Intermediate CA", not_before=NOW - days(365), not_after=NOW + days(1825)
    )
    return Hierarchy(root, intermediate)


@pytest.fixture(scope="module")
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="evaluate root")


def leaf(
    issuer: Hierarchy | Issued | None,
    names: Sequence[str] = (HOST,),
    *,
    starts: float = -30,
    ends: float = 60,
    common_name: str | None = None,
    key: KeyKind = KeyKind.RSA2048,
    signature_hash: str = "sha256",
) -> Issued:
    """A leaf valid from NOW+starts to NOW+ends days; `issuer` None makes it self-signed."""
    signer = issuer.intermediate if isinstance(issuer, Hierarchy) else issuer
    return make_leaf(
        signer,
        names,
        common_name=common_name,
        key=key,
        signature_hash=signature_hash,
        not_before=NOW + days(starts),
        not_after=NOW + days(ends),
    )


def intermediate(ca: Hierarchy, *, starts: float = -365, ends: float = 1825) -> Issued:
    """Another issue of the CA's intermediate (same name and key, so it signs the same leaves)."""
    return make_intermediate(
        ca.root, INTERMEDIATE_CN, not_before=NOW + days(starts), not_after=NOW + days(ends)
    )


def run(
    chain: Sequence[x509.Certificate],
    store: TrustStore,
    *,
    host: str = HOST,
    tls: TlsInfo = TLS13,
    policy: Policy = EXCHANGE_POLICY,
) -> Verdict:
    return evaluate(chain, host=host, tls=tls, policy=policy, trust=store, now=NOW)


def check_of(verdict: Verdict, name: str) -> Check:
    found = [c for c in verdict.checks if c.name == name]
    assert len(found) == 1, f"{name}: {verdict.checks}"
    return found[0]


# --- the whole verdict ---------------------------------------------------------------------


def test_good_chain_passes_every_check_in_report_order(ca: Hierarchy, store: TrustStore) -> None:
    verdict = run(ca.chain(leaf(ca)), store)
    assert [c.name for c in verdict.checks] == list(SERVER_CHECKS)
    assert {c.name: c.status for c in verdict.checks} == dict.fromkeys(
        (c.name for c in verdict.checks), Status.OK
    )
    assert all(c.symptom == "" and c.reason is None for c in verdict.checks)
    assert verdict.o365_ready is True
    assert overall_status(verdict.checks) is Status.OK


# --- chain_trusted -------------------------------------------------------------------------


def test_trusted_chain_names_its_anchor(ca: Hierarchy, store: TrustStore) -> None:
    trusted = check_of(run(ca.chain(leaf(ca)), store), "chain_trusted")
    assert trusted.status is Status.OK
    assert trusted.reason is None
    assert f"CN={ROOT_CN}" in trusted.message
    assert "evaluate root" in trusted.message


def test_check_trust_returns_the_verified_path_leaf_to_anchor(
    ca: Hierarchy, store: TrustStore
) -> None:
    issued = leaf(ca)
    trusted, path = check_trust(ca.chain(issued), store, NOW)
    assert trusted.status is Status.OK
    assert path == [issued.cert, ca.intermediate.cert, ca.root.cert]


def test_untrusted_chain_has_no_path(ca: Hierarchy, store: TrustStore) -> None:
    trusted, path = check_trust((leaf(ca).cert,), store, NOW)
    assert trusted.status is Status.CRITICAL
    assert path == []


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("leaf", "root", "intermediate"), id="out-of-order-with-root"),
        pytest.param(("leaf", "intermediate", "root"), id="root-sent-along"),
    ],
)
def test_root_sent_along_or_out_of_order_is_not_a_fault(
    ca: Hierarchy, store: TrustStore, order: tuple[str, ...]
) -> None:
    issued = leaf(ca)
    by_role = {"leaf": issued.cert, "intermediate": ca.intermediate.cert, "root": ca.root.cert}
    verdict = run([by_role[role] for role in order], store)
    assert check_of(verdict, "chain_trusted").status is Status.OK
    # The root sent along is not judged either: no check fails because of it.
    assert overall_status(verdict.checks) is Status.OK
    assert verdict.o365_ready is True


def test_self_signed_leaf(store: TrustStore) -> None:
    trusted = check_of(run((leaf(None).cert,), store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "self_signed")
    assert "self-signed" in trusted.message
    assert trusted.symptom == SYMPTOMS[CheckName.CHAIN_TRUSTED]
    assert "4.4.317 UntrustedRoot" in trusted.symptom


def test_private_root_sent_along_is_an_unknown_root(
    private_ca: Hierarchy, store: TrustStore
) -> None:
    issued = leaf(private_ca)
    chain = (issued.cert, private_ca.intermediate.cert, private_ca.root.cert)
    trusted = check_of(run(chain, store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "unknown_root")
    assert "unknown root" in trusted.message
    assert "CN=Private Root CA" in trusted.message
    assert "sent by the server" in trusted.message
    assert "evaluate root" in trusted.message  # names the store it is missing from


def test_intermediate_of_an_unknown_root_is_an_unknown_root(
    private_ca: Hierarchy, store: TrustStore
) -> None:
    trusted = check_of(run(private_ca.chain(leaf(private_ca)), store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "unknown_root")
    assert "issuer 'CN=Private Root CA" in trusted.message
    assert "not in the trust store" in trusted.message


def test_leaf_without_its_intermediate(ca: Hierarchy, store: TrustStore) -> None:
    trusted = check_of(run((leaf(ca).cert,), store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "intermediate_missing")
    assert "intermediate missing" in trusted.message
    assert f"CN={INTERMEDIATE_CN}" in trusted.message
    assert "full chain" in trusted.message


def test_expired_intermediate(ca: Hierarchy, store: TrustStore) -> None:
    chain = (leaf(ca).cert, intermediate(ca, ends=-1).cert)
    trusted = check_of(run(chain, store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "intermediate_expired")
    assert f"CN={INTERMEDIATE_CN}" in trusted.message
    assert "expired on 2026-05-31" in trusted.message


def test_expired_intermediate_is_called_an_intermediate(ca: Hierarchy, store: TrustStore) -> None:
    chain = (leaf(ca).cert, intermediate(ca, ends=-1).cert)
    message = check_of(run(chain, store), "chain_trusted").message
    assert message.startswith(f"intermediate 'CN={INTERMEDIATE_CN}")


def test_expired_leaf(ca: Hierarchy, store: TrustStore) -> None:
    trusted = check_of(run(ca.chain(leaf(ca, starts=-90, ends=-2)), store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "leaf_expired")
    assert f"leaf 'CN={HOST}" in trusted.message
    assert "expired on 2026-05-30" in trusted.message


def test_leaf_not_yet_valid(ca: Hierarchy, store: TrustStore) -> None:
    trusted = check_of(run(ca.chain(leaf(ca, starts=2, ends=90)), store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "not_yet_valid")
    assert "not valid before 2026-06-03" in trusted.message


def test_intermediate_not_yet_valid(ca: Hierarchy, store: TrustStore) -> None:
    chain = (leaf(ca).cert, intermediate(ca, starts=3).cert)
    trusted = check_of(run(chain, store), "chain_trusted")
    assert (trusted.status, trusted.reason) == (Status.CRITICAL, "not_yet_valid")
    assert f"CN={INTERMEDIATE_CN}" in trusted.message


def test_sha1_leaf_with_its_intermediate_is_not_called_intermediate_missing(
    ca: Hierarchy, store: TrustStore
) -> None:
    trusted = check_of(run(ca.chain(leaf(ca, signature_hash="sha1")), store), "chain_trusted")
    assert trusted.status is Status.CRITICAL
    assert trusted.reason != "intermediate_missing"
    assert "not sent" not in trusted.message


# --- not_expired ---------------------------------------------------------------------------


def expiry(*chain: Issued, policy: Policy = EXCHANGE_POLICY) -> Check:
    return check_expiry([certs.facts(c.cert) for c in chain], policy, NOW)


def test_expiry_ok(ca: Hierarchy) -> None:
    result = expiry(leaf(ca, ends=60))
    assert result.status is Status.OK
    assert result.message == "expires in 60 days on 2026-07-31"


@pytest.mark.parametrize(
    ("ends", "status", "words"),
    [
        (20, Status.WARNING, "expires in 20 days on 2026-06-21; warning under 21 days"),
        (6, Status.CRITICAL, "expires in 6 days on 2026-06-07; critical under 7 days"),
        (0.5, Status.CRITICAL, "expires in 12.0 hours"),
        (-2, Status.CRITICAL, "certificate expired 2 days ago (2026-05-30 00:00 UTC)"),
    ],
)
def test_expiry_thresholds(ca: Hierarchy, ends: float, status: Status, words: str) -> None:
    """A certificate of more than 200 days: the default 21 and 7 days."""
    result = expiry(leaf(ca, starts=-380, ends=ends))
    assert result.status is status
    assert words in result.message
    assert result.symptom == SYMPTOMS[CheckName.NOT_EXPIRED]


def test_expiry_thresholds_come_from_the_policy(ca: Hierarchy) -> None:
    policy = Policy(warn_days=30, crit_days=10, fixed_expiry_days=True)
    assert expiry(leaf(ca, ends=25), policy=policy).status is Status.WARNING
    assert expiry(leaf(ca, ends=9), policy=policy).status is Status.CRITICAL
    assert expiry(leaf(ca, ends=31), policy=policy).status is Status.OK


@pytest.mark.parametrize("lifetime", [47, 90, 100, 200])
def test_a_leaf_on_a_normal_acme_cycle_never_warns(ca: Hierarchy, lifetime: float) -> None:
    """Renewed at a third of its lifetime left: ok until then, and a little after."""
    third = lifetime / 3
    for left in (lifetime - 1, third + 0.5, third, third - 2):
        result = expiry(leaf(ca, starts=left - lifetime, ends=left))
        assert result.status is Status.OK, (lifetime, left, result.message)


@pytest.mark.parametrize("lifetime", [47, 90, 100, 200])
def test_a_renewal_overdue_by_a_few_days_warns(ca: Hierarchy, lifetime: float) -> None:
    left = lifetime / 3 - 3.5
    result = expiry(leaf(ca, starts=left - lifetime, ends=left))
    assert result.status is Status.WARNING, result.message
    assert "warning under " in result.message
    assert expiry(leaf(ca, starts=6.5 - lifetime, ends=6.5)).status is Status.CRITICAL


def test_a_47_day_leaf_thresholds(ca: Hierarchy) -> None:
    assert expiry(leaf(ca, starts=-31, ends=16)).status is Status.OK
    nine = expiry(leaf(ca, starts=-38, ends=9))
    assert nine.status is Status.WARNING
    assert nine.message.endswith("warning under 12.7 days")
    assert expiry(leaf(ca, starts=-41, ends=6)).status is Status.CRITICAL


def test_a_very_short_lived_leaf_is_critical_only_in_its_last_sixth(ca: Hierarchy) -> None:
    """Six-day certificates: a fixed 7-day critical would make them red all their life."""
    assert expiry(leaf(ca, starts=-3, ends=3)).status is Status.OK
    assert expiry(leaf(ca, starts=-4.6, ends=1.4)).status is Status.WARNING
    assert expiry(leaf(ca, starts=-5.1, ends=0.9)).status is Status.CRITICAL


def test_configured_days_override_the_lifetime(ca: Hierarchy) -> None:
    fixed = Policy(warn_days=21, crit_days=7, fixed_expiry_days=True)
    assert expiry(leaf(ca, starts=-31, ends=16), policy=fixed).status is Status.WARNING
    assert expiry(leaf(ca, starts=-31, ends=16)).status is Status.OK


def test_expiry_not_yet_valid(ca: Hierarchy) -> None:
    result = expiry(leaf(ca, starts=2, ends=90))
    assert result.status is Status.CRITICAL
    assert "not valid before 2026-06-03 00:00 UTC" in result.message


def test_intermediate_expiring_before_the_leaf_drives_the_verdict(
    ca: Hierarchy, store: TrustStore
) -> None:
    chain = (leaf(ca, ends=60).cert, intermediate(ca, ends=10).cert)
    verdict = run(chain, store)
    result = check_of(verdict, "not_expired")
    assert result.status is Status.WARNING
    assert "expires in 10 days on 2026-06-11" in result.message
    assert f"chain certificate 'CN={INTERMEDIATE_CN}" in result.message
    # Still accepted by Exchange Online today: a warning is not a relay failure.
    assert check_of(verdict, "chain_trusted").status is Status.OK
    assert verdict.o365_ready is True


def test_expired_intermediate_is_named_in_not_expired(ca: Hierarchy, store: TrustStore) -> None:
    chain = (leaf(ca, ends=60).cert, intermediate(ca, ends=-1).cert)
    result = check_of(run(chain, store), "not_expired")
    assert result.status is Status.CRITICAL
    assert f"chain certificate 'CN={INTERMEDIATE_CN}" in result.message
    assert "expired 1 day ago" in result.message


# --- hostname (RFC 9525) -------------------------------------------------------------------


def hostname(issued: Issued, host: str = HOST) -> Check:
    return check_hostname(host, certs.facts(issued.cert))


def test_hostname_san_match(ca: Hierarchy) -> None:
    result = hostname(leaf(ca, ("other.contoso.test", HOST)))
    assert result.status is Status.OK
    assert f"matches SAN '{HOST}'" in result.message


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("mail.contoso.test", Status.OK),
        ("MAIL.Contoso.Test.", Status.OK),
        ("a.mail.contoso.test", Status.CRITICAL),  # a wildcard stands for exactly one label
        ("contoso.test", Status.CRITICAL),  # and never for the apex
    ],
)
def test_hostname_wildcard_matches_one_label(ca: Hierarchy, host: str, status: Status) -> None:
    assert hostname(leaf(ca, ("*.contoso.test",)), host).status is status


def test_hostname_cn_only_is_a_warning(ca: Hierarchy) -> None:
    result = hostname(leaf(ca, (), common_name=HOST))
    assert result.status is Status.WARNING
    assert "only the CN" in result.message
    assert "no SAN" in result.message
    assert result.symptom == SYMPTOMS[CheckName.HOSTNAME]


def test_hostname_cn_is_ignored_when_a_san_exists(ca: Hierarchy) -> None:
    result = hostname(leaf(ca, ("relay.contoso.test",), common_name=HOST))
    assert result.status is Status.CRITICAL


def test_hostname_mismatch_is_critical(ca: Hierarchy) -> None:
    result = hostname(leaf(ca, ("relay.fabrikam.test",)))
    assert result.status is Status.CRITICAL
    assert f"'{HOST}' not in the certificate's SAN (relay.fabrikam.test)" in result.message


def test_hostname_no_san_and_cn_mismatch_is_critical(ca: Hierarchy) -> None:
    result = hostname(leaf(ca, (), common_name="relay.fabrikam.test"))
    assert result.status is Status.CRITICAL
    assert "no SAN" in result.message


@pytest.mark.parametrize("host", ["192.0.2.25", "2001:db8::25", "[2001:db8::25]"])
def test_hostname_not_judged_for_ip_hosts(ca: Hierarchy, host: str) -> None:
    result = hostname(leaf(ca), host)
    assert result.status is Status.UNKNOWN
    assert "IP address" in result.message


def test_ip_host_does_not_change_the_overall_status(ca: Hierarchy, store: TrustStore) -> None:
    verdict = run(ca.chain(leaf(ca)), store, host="192.0.2.25")
    assert check_of(verdict, "hostname").status is Status.UNKNOWN
    assert overall_status(verdict.checks) is Status.OK
    assert verdict.o365_ready is True


# --- key_strength, signature_algorithm, tls_version ----------------------------------------


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        (KeyKind.RSA1024, Status.CRITICAL, "leaf key RSA 1024 is under 2048 bits"),
        (KeyKind.RSA2048, Status.OK, "leaf key RSA 2048"),
        (KeyKind.EC_P256, Status.OK, "leaf key EC 256"),
    ],
)
def test_key_strength(
    ca: Hierarchy, store: TrustStore, key: KeyKind, status: Status, words: str
) -> None:
    result = check_of(run(ca.chain(leaf(ca, key=key)), store), "key_strength")
    assert result.status is status
    assert result.message == words


def test_weak_intermediate_key_is_named() -> None:
    root = make_root("Weak Root CA", not_before=NOW - days(365), not_after=NOW + days(3650))
    weak = make_intermediate(
        root,
        "Weak Intermediate CA",
        key=KeyKind.RSA1024,
        not_before=NOW - days(365),
        not_after=NOW + days(1825),
    )
    chain = [certs.facts(c.cert) for c in (leaf(weak), weak, root)]
    result = check_key_strength(chain)
    assert result.status is Status.CRITICAL
    assert "intermediate 'CN=Weak Intermediate CA" in result.message


def test_root_sent_along_is_not_judged_for_key_or_signature(ca: Hierarchy) -> None:
    """The store's copy of a root is what counts; a weak copy sent along is only shown."""
    weak_root = make_root(
        "Weak Sent Root CA",
        key=KeyKind.RSA1024,
        not_before=NOW - days(365),
        not_after=NOW + days(3650),
    )
    sha1_root = make_leaf(
        None, ("sha1 root",), signature_hash="sha1", not_before=NOW, not_after=NOW + days(1)
    )
    sent = [certs.facts(c.cert) for c in (leaf(ca), ca.intermediate, weak_root, sha1_root)]
    assert check_key_strength(sent).status is Status.OK
    assert check_signature(sent).status is Status.OK
    # The same certificates first in the chain are judged.
    assert check_key_strength(sent[2:]).status is Status.CRITICAL
    assert check_signature(sent[3:]).status is Status.CRITICAL


def test_sha1_signature_is_critical(ca: Hierarchy, store: TrustStore) -> None:
    result = check_of(run(ca.chain(leaf(ca, signature_hash="sha1")), store), "signature_algorithm")
    assert result.status is Status.CRITICAL
    assert "sha1WithRSAEncryption (SHA1)" in result.message
    assert result.symptom == SYMPTOMS[CheckName.SIGNATURE_ALGORITHM]


def test_sha256_signature_is_ok(ca: Hierarchy) -> None:
    result = check_signature([certs.facts(leaf(ca).cert)])
    assert (result.status, result.message) == (Status.OK, "sha256WithRSAEncryption")


@pytest.mark.parametrize(
    ("version", "status"),
    [
        ("TLSv1", Status.CRITICAL),
        ("TLSv1.1", Status.CRITICAL),
        ("TLSv1.2", Status.OK),
        ("TLSv1.3", Status.OK),
    ],
)
def test_tls_version(version: str, status: Status) -> None:
    result = check_tls_version(TlsInfo(version, "ECDHE-RSA-AES128-SHA"))
    assert result.status is status
    assert version in result.message
    if status is Status.CRITICAL:
        assert "TLS 1.2 or newer is required" in result.message
        assert result.symptom == SYMPTOMS[CheckName.TLS_VERSION]


# --- expected_certificate ------------------------------------------------------------------


def colon_fingerprint(issued: Issued) -> str:
    hexed = issued.sha256.upper()
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))


def test_no_pin_no_expected_certificate_check(ca: Hierarchy, store: TrustStore) -> None:
    verdict = run(ca.chain(leaf(ca)), store)
    assert "expected_certificate" not in [c.name for c in verdict.checks]


def test_pin_by_colon_separated_upper_case_fingerprint(ca: Hierarchy, store: TrustStore) -> None:
    issued = leaf(ca)
    pin = colon_fingerprint(issued)
    assert ":" in pin
    assert pin.isupper()
    policy = Policy(expected=("0" * 64, pin))  # any one pin may match
    verdict = run(ca.chain(issued), store, policy=policy)
    assert check_of(verdict, "expected_certificate").status is Status.OK


def test_pin_by_exchange_name(ca: Hierarchy) -> None:
    facts = certs.facts(leaf(ca).cert)
    pin = f"<I>CN={INTERMEDIATE_CN}, O=tlsprobe tests<S>CN={HOST}, O=tlsprobe test server"
    assert check_expected(facts, (pin,)).status is Status.OK
    # Exchange administrators paste these by hand: case and runs of spaces do not matter.
    sloppy = pin.replace(", ", ",   ").lower().replace("<i>", "<I>").replace("<s>", "<S>")
    assert check_expected(facts, (sloppy,)).status is Status.OK


def test_pin_mismatch(ca: Hierarchy) -> None:
    served = certs.facts(leaf(ca).cert)
    other = leaf(ca, ("relay.contoso.test",))
    result = check_expected(served, (colon_fingerprint(other), other.sha256))
    assert result.status is Status.CRITICAL
    assert "not the pinned one" in result.message
    assert served.sha256[:16] in result.message
    assert served.exchange_name in result.message
    assert result.symptom == SYMPTOMS[CheckName.EXPECTED_CERTIFICATE]


# --- o365_ready ----------------------------------------------------------------------------


def test_o365_ready_needs_no_match_of_the_probed_host_name_but_no_critical_check(
    ca: Hierarchy, store: TrustStore
) -> None:
    """Exchange matches the connector, not the host name the probe connected to; but a result
    with any critical check is never "ready" (it would stand next to a red row)."""
    cn_only = run(ca.chain(leaf(ca, (), common_name=HOST)), store)
    assert check_of(cn_only, "hostname").status is Status.WARNING
    assert cn_only.o365_ready is True
    other_host = run(ca.chain(leaf(ca)), store, host="smtp.fabrikam.test")
    assert check_of(other_host, "hostname").status is Status.CRITICAL
    assert all(check_of(other_host, n).status is Status.OK for n in ("certificate_domain",))
    assert other_host.o365_ready is False


TLS10 = TlsInfo("TLSv1", "ECDHE-RSA-AES128-SHA")


@pytest.mark.parametrize(
    ("ends", "send_intermediate", "tls", "policy", "failing"),
    [
        pytest.param(-1, True, TLS13, EXCHANGE_POLICY, "not_expired", id="expired"),
        pytest.param(60, False, TLS13, EXCHANGE_POLICY, "chain_trusted", id="untrusted"),
        pytest.param(
            60,
            True,
            TLS13,
            Policy(certificate_domain="relay.contoso.test", accepted_domains=("contoso.test",)),
            "certificate_domain",
            id="connector-mismatch",
        ),
        pytest.param(
            # A literal subdomain that is not itself accepted: relay works, NDRs and OOFs do not.
            60,
            True,
            TLS13,
            Policy(certificate_domain=HOST, accepted_domains=("contoso.test",)),
            "accepted_domain",
            id="accepted-domain-warning",
        ),
        pytest.param(60, True, TLS10, EXCHANGE_POLICY, "tls_version", id="tls1.0"),
        pytest.param(60, True, TLS13, Policy(), "certificate_domain", id="no-connector-policy"),
    ],
)
def test_o365_not_ready(
    ca: Hierarchy,
    store: TrustStore,
    ends: float,
    send_intermediate: bool,
    tls: TlsInfo,
    policy: Policy,
    failing: str,
) -> None:
    chain = ca.chain(leaf(ca, starts=-90, ends=ends))
    verdict = run(chain if send_intermediate else chain[:1], store, tls=tls, policy=policy)
    assert check_of(verdict, failing).status is not Status.OK
    assert verdict.o365_ready is False


def test_accepted_domain_warning_case_is_a_warning(ca: Hierarchy, store: TrustStore) -> None:
    policy = Policy(certificate_domain=HOST, accepted_domains=("contoso.test",))
    verdict = run(ca.chain(leaf(ca)), store, policy=policy)
    assert check_of(verdict, "certificate_domain").status is Status.OK
    assert check_of(verdict, "accepted_domain").status is Status.WARNING
    assert overall_status(verdict.checks) is Status.WARNING


# --- overall status ------------------------------------------------------------------------


def test_overall_status_of_evaluated_chains(ca: Hierarchy, store: TrustStore) -> None:
    cn_only = run(ca.chain(leaf(ca, (), common_name=HOST)), store)
    assert overall_status(cn_only.checks) is Status.WARNING
    expired = run(ca.chain(leaf(ca, starts=-90, ends=-1)), store)
    assert overall_status(expired.checks) is Status.CRITICAL


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [
        ((), Status.OK),
        ((Status.OK, Status.UNKNOWN), Status.OK),
        ((Status.OK, Status.WARNING, Status.UNKNOWN), Status.WARNING),
        ((Status.CRITICAL, Status.WARNING, Status.OK), Status.CRITICAL),
        ((Status.WARNING, Status.CRITICAL), Status.CRITICAL),
    ],
)
def test_overall_status(statuses: tuple[Status, ...], overall: Status) -> None:
    checks = [Check(list(CheckName)[i], status, "") for i, status in enumerate(statuses)]
    assert overall_status(checks) is overall

"""The change classifier (`tlsprobe.probe.change`) on certificates generated here and judged by
the real evaluator at a fixed clock: a clean renewal is one, and each risky difference is named."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.support.pki import FIXED_NOW as NOW
from tests.support.pki import Hierarchy, Issued, KeyKind, make_intermediate, make_root
from tlsprobe.model import ChangeClass, ChangeReason, Policy, Status, TlsInfo
from tlsprobe.probe.change import LeafRecord, classify, leaf_record, security_bits
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore, evaluate_der

TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
HOST = "mail.contoso.test"


def issue(ca: Hierarchy, *, start: float = -10, days: float = 90, **kwargs: object) -> Issued:
    return ca.leaf(not_before=NOW + timedelta(days=start), days=days, **kwargs)  # type: ignore[arg-type]


def record(
    leaf: Issued,
    ca: Hierarchy,
    store: TrustStore,
    *,
    with_intermediate: bool = True,
    policy: Policy | None = None,
) -> LeafRecord:
    chain = (leaf.der, ca.intermediate.der) if with_intermediate else (leaf.der,)
    verdict = evaluate_der(
        chain, host=HOST, tls=TLS13, policy=policy or Policy(), trust=store, now=NOW
    )
    return leaf_record(certs.facts_from_der(leaf.der), verdict.checks)


@pytest.fixture
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem)


def test_clean_renewal_is_a_renewal(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80), ca, store)
    new = record(issue(ca, start=-1), ca, store)
    change = classify(old, new)
    assert change.change is ChangeClass.RENEWAL
    assert change.reasons == ()
    assert change.text == "clean renewal"
    assert not change.risky


def test_clean_renewal_from_a_verdict_not_known(ca: Hierarchy, store: TrustStore) -> None:
    """An old history has the certificate but not its verdict: a new leaf that passes every
    check is still a renewal."""
    old = record(issue(ca, start=-80), ca, store)
    unknown = replace(old, checks=None, chain_reason=None)
    assert classify(unknown, record(issue(ca, start=-1), ca, store)).change is ChangeClass.RENEWAL


YEAR = timedelta(days=365)


def other_ca(root_cn: str, intermediate_cn: str, organization: str) -> Hierarchy:
    """Another CA (root and intermediate of `organization`), valid around the fixed clock."""
    root = make_root(
        root_cn, not_before=NOW - YEAR, not_after=NOW + 10 * YEAR, organization=organization
    )
    return Hierarchy(root, sibling(root, intermediate_cn, organization))


def sibling(root: Issued, common_name: str, organization: str = "tlsprobe tests") -> Issued:
    """An intermediate of `root`: with the fixed CA's organization, a sibling of its own."""
    return make_intermediate(
        root,
        common_name,
        not_before=NOW - YEAR,
        not_after=NOW + 5 * YEAR,
        organization=organization,
    )


def test_other_ca_and_dropped_client_auth_are_named(ca: Hierarchy, store: TrustStore) -> None:
    other = other_ca("Other Root CA", "Other Intermediate CA", "Other CA Inc.")
    both = TrustStore.from_pem(ca.ca_pem + other.ca_pem)
    old = record(issue(ca, start=-80), ca, both)
    new = record(issue(other, start=-1, client_auth=False), other, both)
    change = classify(old, new)
    assert change.change is ChangeClass.RISKY
    assert change.reasons == (ChangeReason.ISSUER_CHANGED, ChangeReason.EKU_LOST)
    assert change.text == (
        "issuer changed: Fixed Intermediate CA → Other Intermediate CA; clientAuth EKU dropped"
    )


def test_missing_intermediate_is_the_cause_not_only_untrusted(
    ca: Hierarchy, store: TrustStore
) -> None:
    old = record(issue(ca, start=-80), ca, store)
    new = record(issue(ca, start=-1), ca, store, with_intermediate=False)
    change = classify(old, new)
    assert change.reasons == (ChangeReason.INTERMEDIATE_MISSING,)
    assert change.text == "intermediate missing"


def test_names_added_and_removed(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80, names=(HOST, "smtp.contoso.test")), ca, store)
    new = record(issue(ca, start=-1, names=(HOST, "mx.contoso.test")), ca, store)
    change = classify(old, new)
    assert change.reasons == (ChangeReason.NAMES_ADDED, ChangeReason.NAMES_REMOVED)
    assert change.details == ("names added: mx.contoso.test", "names removed: smtp.contoso.test")


def test_weaker_key_and_earlier_expiry(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80, days=400, key=KeyKind.EC_P384), ca, store)
    new = record(issue(ca, start=-1, days=90, key=KeyKind.EC_P256), ca, store)
    change = classify(old, new)
    assert change.reasons == (ChangeReason.KEY_WEAKER, ChangeReason.EXPIRY_EARLIER)
    assert change.details[0] == "key weaker: EC 384 → EC 256"
    assert change.details[1].startswith("expiry not later: ")


def test_rsa_to_ec_of_equal_strength_is_not_weaker(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80), ca, store)
    new = record(issue(ca, start=-1, key=KeyKind.EC_P256), ca, store)
    assert classify(old, new).change is ChangeClass.RENEWAL
    assert security_bits("RSA", 2048) < security_bits("EC", 256)


def test_newly_failing_check_and_broken_pin(ca: Hierarchy, store: TrustStore) -> None:
    old_leaf = issue(ca, start=-80)
    pinned = Policy(expected=(old_leaf.sha256,))
    old = record(old_leaf, ca, store, policy=pinned)
    # Same names, but the host name only in the CN: hostname becomes a warning.
    new = record(issue(ca, start=-1, names=(), common_name=HOST), ca, store, policy=pinned)
    change = classify(old, new)
    assert ChangeReason.PIN_MISMATCH in change.reasons
    assert ChangeReason.NAMES_REMOVED in change.reasons
    assert ChangeReason.CHECK_FAILING in change.reasons
    assert "newly failing: hostname warning" in change.details


def test_a_check_that_failed_before_is_not_newly_failing(ca: Hierarchy, store: TrustStore) -> None:
    policy = Policy(certificate_domain="relay.fabrikam.test")  # no name matches, old or new
    old = record(issue(ca, start=-80), ca, store, policy=policy)
    new = record(issue(ca, start=-1), ca, store, policy=policy)
    assert old.checks is not None and old.checks["certificate_domain"] is Status.CRITICAL
    change = classify(old, new)
    assert change.change is ChangeClass.RENEWAL
    assert change.previous_failing == ("certificate_domain",)


def test_previous_unknown_is_risky(ca: Hierarchy, store: TrustStore) -> None:
    change = classify(None, record(issue(ca, start=-1), ca, store))
    assert change.reasons == (ChangeReason.PREVIOUS_UNKNOWN,)


def test_no_eku_to_server_auth_only_loses_client_auth(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80), ca, store)
    everything = replace(old, ekus=None)
    new = record(issue(ca, start=-1, client_auth=False), ca, store)
    assert classify(everything, new).details == ("clientAuth EKU dropped",)


def test_many_names_are_counted_not_all_listed(ca: Hierarchy, store: TrustStore) -> None:
    old = record(issue(ca, start=-80), ca, store)
    extra = tuple(f"mx{i}.contoso.test" for i in range(8))
    new = record(issue(ca, start=-1, names=(HOST, *extra)), ca, store)
    (added,) = [d for d in classify(old, new).details if d.startswith("names added: ")]
    assert added == "names added: " + ", ".join(sorted(extra)[:6]) + ", and 2 more"


# --- the issuing CA: a sibling intermediate, or another CA ---------------------------------


def test_a_sibling_intermediate_of_the_same_ca_is_a_renewal(
    ca: Hierarchy, store: TrustStore
) -> None:
    """Let's Encrypt issues from R10 or R11 at random: a clean renewal from the sibling is a
    renewal, with the rotation named."""
    r10, r11 = (Hierarchy(ca.root, sibling(ca.root, cn)) for cn in ("R10", "R11"))
    old = record(issue(r10, start=-80), r10, store)
    new = record(issue(r11, start=-1), r11, store)
    change = classify(old, new)
    assert change.change is ChangeClass.RENEWAL and not change.risky
    assert change.reasons == (ChangeReason.INTERMEDIATE_ROTATED,)
    assert change.text == "intermediate rotated: R10 → R11"


def test_a_sibling_intermediate_on_exchange_is_risky(ca: Hierarchy, store: TrustStore) -> None:
    """Exchange's TlsCertificateName (<I>issuer<S>subject) names the issuer: the same rotation
    breaks the connector until it is updated."""
    r10, r11 = (Hierarchy(ca.root, sibling(ca.root, cn)) for cn in ("R10", "R11"))
    old = record(issue(r10, start=-80), r10, store)
    new = record(issue(r11, start=-1), r11, store)
    change = classify(old, new, issuer_bound=True)
    assert change.change is ChangeClass.RISKY
    assert change.reasons == (ChangeReason.ISSUER_CHANGED,)
    assert change.text == (
        "issuer changed: R10 → R11 (same CA; Exchange's TlsCertificateName names the issuer:"
        " update the send connector)"
    )


def test_a_sibling_without_a_trusted_chain_is_an_issuer_change(
    ca: Hierarchy, store: TrustStore
) -> None:
    """Same organization, but the new chain does not verify: nothing says it is the same CA."""
    r10, r11 = (Hierarchy(ca.root, sibling(ca.root, cn)) for cn in ("R10", "R11"))
    old = record(issue(r10, start=-80), r10, store)
    new = record(issue(r11, start=-1), r11, store, with_intermediate=False)
    change = classify(old, new)
    assert change.reasons == (ChangeReason.ISSUER_CHANGED, ChangeReason.INTERMEDIATE_MISSING)
    assert change.details[0] == "issuer changed: R10 → R11"


def test_the_same_organization_under_another_trusted_root_is_the_same_ca(
    ca: Hierarchy,
) -> None:
    """The organization and a trusted chain make the CA (Let's Encrypt's ISRG Root X1 and X2
    are one CA); what a connector needs is the names and a trusted chain."""
    x2 = other_ca("Fixed Root X2", "E6", "tlsprobe tests")
    both = TrustStore.from_pem(ca.ca_pem + x2.ca_pem)
    old = record(issue(ca, start=-80), ca, both)
    change = classify(old, record(issue(x2, start=-1), x2, both))
    assert change.change is ChangeClass.RENEWAL
    assert change.text == "intermediate rotated: Fixed Intermediate CA → E6"


def test_another_ca_is_an_issuer_change_on_any_server(ca: Hierarchy, store: TrustStore) -> None:
    other = other_ca("Other Root CA", "R11", "Other CA Inc.")
    both = TrustStore.from_pem(ca.ca_pem + other.ca_pem)
    old = record(issue(ca, start=-80), ca, both)
    new = record(issue(other, start=-1), other, both)
    for bound in (False, True):
        change = classify(old, new, issuer_bound=bound)
        assert change.reasons == (ChangeReason.ISSUER_CHANGED,)
        assert change.text == "issuer changed: Fixed Intermediate CA → R11"


def test_an_issuer_without_an_organization_is_compared_by_its_whole_name(
    ca: Hierarchy,
) -> None:
    """A private CA named by CN only: no organization to call it the same CA by."""
    root = make_root("Private Root", not_before=NOW - YEAR, not_after=NOW + 10 * YEAR)
    first, second = (Hierarchy(root, sibling(root, cn, "")) for cn in ("Private A", "Private B"))
    private = TrustStore.from_pem(root.cert_pem)
    old = record(issue(first, start=-80), first, private)
    change = classify(old, record(issue(second, start=-1), second, private))
    assert change.reasons == (ChangeReason.ISSUER_CHANGED,)

"""MTA-STS parsing, MX pattern matching, the per-endpoint check and id/policy drift."""

from __future__ import annotations

import json

import pytest

from tlsprobe import policyreport
from tlsprobe.model import Check, CheckName, Status
from tlsprobe.probe.dns import mtasts
from tlsprobe.probe.dns.mtasts import DomainPolicy, PolicyError, StsMode

ENFORCE = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mail.contoso.test\r\n"
    b"mx: *.mx.contoso.test\r\nmax_age: 86400\r\n"
)
GOOD_CHECKS = (
    Check(CheckName.CHAIN_TRUSTED, Status.OK, "chains"),
    Check(CheckName.HOSTNAME, Status.OK, "matches"),
)


def domain(body: bytes = ENFORCE, policy_id: str = "20261130") -> DomainPolicy:
    return DomainPolicy("contoso.test", policy_id, mtasts.parse_policy(body))


def test_parse_policy() -> None:
    policy = mtasts.parse_policy(ENFORCE)
    assert policy.mode is StsMode.ENFORCE
    assert policy.max_age == 86400
    assert policy.mx == ("mail.contoso.test", "*.mx.contoso.test")
    # LF line endings and unknown fields are accepted, as senders accept them.
    lf = mtasts.parse_policy(b"version: STSv1\nmode: testing\nfoo: bar\nmx: a.test\nmax_age: 0\n")
    assert lf.mode is StsMode.TESTING and lf.max_age == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"mode: enforce\nmx: a.test\nmax_age: 1\n", "version"),
        (b"version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n", "mode"),
        (b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", "max_age"),
        (b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n", "max_age"),
        (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "mx"),
        (b"\xff\xfe", "UTF-8"),
        (b"x" * (mtasts.MAX_POLICY_BYTES + 1), "limit"),
    ],
)
def test_bad_policies_are_refused_with_the_reason(body: bytes, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        mtasts.parse_policy(body)


def test_parse_txt() -> None:
    assert mtasts.parse_txt(["v=STSv1; id=20261130T1;", "unrelated"]) == "20261130T1"
    assert mtasts.parse_txt(["google-site-verification=x"]) is None
    with pytest.raises(PolicyError, match="exactly one"):
        mtasts.parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"])
    with pytest.raises(PolicyError, match="id"):
        mtasts.parse_txt(["v=STSv1; id=not-alnum!"])


def test_mx_patterns_match_exactly_one_label() -> None:
    patterns = ("mail.contoso.test", "*.mx.contoso.test")
    assert mtasts.mx_matches("MAIL.contoso.test.", patterns) == "mail.contoso.test"
    assert mtasts.mx_matches("a.mx.contoso.test", patterns) == "*.mx.contoso.test"
    assert mtasts.mx_matches("mx.contoso.test", patterns) is None
    assert mtasts.mx_matches("a.b.mx.contoso.test", patterns) is None


def test_endpoint_ok_in_enforce() -> None:
    check = mtasts.check_endpoint(domain(), "mail.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is Status.OK


def test_mx_outside_the_patterns_is_critical_in_enforce_and_warning_in_testing() -> None:
    check = mtasts.check_endpoint(domain(), "relay.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is Status.CRITICAL
    assert "matches no mx pattern" in check.message and check.symptom
    testing = domain(ENFORCE.replace(b"enforce", b"testing"))
    check = mtasts.check_endpoint(testing, "relay.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is Status.WARNING


def test_untrusted_or_cn_only_certificate_fails() -> None:
    bad = (
        Check(CheckName.CHAIN_TRUSTED, Status.CRITICAL, "self-signed"),
        Check(CheckName.HOSTNAME, Status.WARNING, "CN only"),
    )
    check = mtasts.check_endpoint(domain(), "mail.contoso.test", bad)
    assert check is not None and check.status is Status.CRITICAL
    assert "self-signed" in check.message and "SAN" in check.message


def test_no_policy_or_mode_none_is_not_applicable() -> None:
    assert mtasts.check_endpoint(DomainPolicy("contoso.test", None, None), "m", GOOD_CHECKS) is None
    none = domain(b"version: STSv1\nmode: none\nmax_age: 1\n")
    assert mtasts.check_endpoint(none, "m", GOOD_CHECKS) is None


def test_unfetchable_policy_is_unknown() -> None:
    broken = DomainPolicy("contoso.test", "1", None, error="redirect refused")
    check = mtasts.check_endpoint(broken, "mail.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is Status.UNKNOWN
    assert "redirect refused" in check.message


def test_id_and_policy_must_change_together() -> None:
    before = domain()
    changed_policy = domain(ENFORCE.replace(b"86400", b"604800"))
    assert "did not" in mtasts.compare(before, changed_policy)
    new_id = domain(policy_id="20261201")
    assert "but the policy did not" in mtasts.compare(before, new_id)
    both = domain(ENFORCE.replace(b"86400", b"604800"), policy_id="20261201")
    assert mtasts.compare(before, both) == ""
    assert mtasts.compare(None, before) == ""


def test_tlsrpt() -> None:
    texts = ["v=TLSRPTv1; rua=mailto:tls@contoso.test,https://r.contoso.test/x"]
    assert mtasts.parse_tlsrpt(texts) == ("mailto:tls@contoso.test", "https://r.contoso.test/x")
    assert mtasts.parse_tlsrpt(["v=spf1 -all"]) == ()


def test_a_policy_of_thousands_of_mx_patterns_gives_bounded_messages_and_reports() -> None:
    patterns = b"".join(b"mx: m%d.contoso.test\r\n" % n for n in range(2500))
    policy = domain(ENFORCE + patterns)
    assert policy.policy is not None and len(policy.policy.mx) == 2502
    check = mtasts.check_endpoint(policy, "relay.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is Status.CRITICAL
    assert len(check.message) < 500 and "and 2499 more" in check.message
    lines = policyreport.sts_lines(policy)
    assert len("\n".join(lines)) < 1500 and "and 2482 more" in lines[0]
    data = policyreport.sts_json(policy)
    assert len(data["mx"]) == 20 and data["mx_total"] == 2502
    assert len(json.dumps(data)) < 2000


@pytest.mark.parametrize("field", ["version", "mode", "mx"])
def test_one_huge_field_of_a_policy_gives_bounded_messages_and_reports(field: str) -> None:
    """The policy's size is bounded (64 KiB), not what one line of it may hold: a 30,000-byte
    version, mode or mx pattern is quoted cut, in the check, the report and the JSON alike."""
    fields = {"version": b"STSv1", "mode": b"enforce", "mx": b"mx1.contoso.test"}
    fields[field] = b"x" * 30_000
    body = b"".join(b"%s: %s\r\n" % (k.encode(), v) for k, v in fields.items())
    body += b"mx: " + b"y" * 30_000 + b"\r\nmax_age: 86400\r\n"
    try:
        parsed, error = mtasts.parse_policy(body), ""
    except PolicyError as exc:  # a bad version or mode: the policy is unusable
        parsed, error = None, str(exc)
    policy = DomainPolicy("contoso.test", "20261130", parsed, error)
    check = mtasts.check_endpoint(policy, "relay.contoso.test", GOOD_CHECKS)
    assert check is not None and check.status is not Status.OK
    assert len(check.message) < 1000, check.message[:300]
    assert len("\n".join(policyreport.sts_lines(policy))) < 1500
    assert len(json.dumps(policyreport.sts_json(policy))) < 1500

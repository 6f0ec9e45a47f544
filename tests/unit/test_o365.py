"""Tables for Exchange Online connector matching, accepted domains and RFC 9525 host matching.

Each table row is one Office 365 connector rule (README, "certificate_domain"), or one edge of it:
apex and deep names under `*.D`, label alignment, case and trailing dots, IDNs, the
wildcard-certificate near miss, and the verdicts with the words an administrator needs to read in
the message.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlsprobe.model import Status
from tlsprobe.probe.names import normalize_name
from tlsprobe.probe.x509.o365 import (
    ConnectorMatch,
    ConnectorPattern,
    ConnectorPatternError,
    accepted_domain_for,
    check_accepted_domain,
    check_certificate_domain,
    hostname_matches,
    match_connector,
)

CERT_SYMPTOM = "550 5.7.64 TenantAttribution: Relay Access Denied"
ACCEPTED_SYMPTOM = "550 5.7.51 TenantInboundAttribution; bounces and out-of-office replies fail"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Mail.Contoso.COM", "mail.contoso.com"),
        ("mail.contoso.com.", "mail.contoso.com"),
        ("mail.contoso.com..", "mail.contoso.com."),  # only one trailing dot is stripped
        ("", ""),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("ü" * 70 + ".example", "ü" * 70 + ".example"),  # label too long: lower-cased input
    ],
)
def test_normalize_name(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize(
    ("value", "domain", "wildcard", "shown"),
    [
        ("*.contoso.com", "contoso.com", True, "*.contoso.com"),
        ("*.Contoso.COM.", "contoso.com", True, "*.contoso.com"),
        ("mail.contoso.com", "mail.contoso.com", False, "mail.contoso.com"),
        ("MAIL.contoso.com.", "mail.contoso.com", False, "mail.contoso.com"),
        ("*.bücher.example", "xn--bcher-kva.example", True, "*.xn--bcher-kva.example"),
        ("*.mail.contoso.com", "mail.contoso.com", True, "*.mail.contoso.com"),
        ("localhost", "localhost", False, "localhost"),  # lab set-ups: literal single label
    ],
)
def test_parse_valid(value: str, domain: str, wildcard: bool, shown: str) -> None:
    pattern = ConnectorPattern.parse(value)
    assert (pattern.raw, pattern.domain, pattern.wildcard) == (value, domain, wildcard)
    assert str(pattern) == shown


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", ["empty"]),
        ("mail .contoso.com", ["spaces"]),
        (" mail.contoso.com", ["spaces"]),
        ("*", ["any certificate"]),
        ("*.com", ["top-level domain"]),
        ("mail.*.contoso.com", ["embeds a wildcard", "leading label"]),
        ("contoso.*", ["embeds a wildcard"]),
        ("m*.contoso.com", ["inside a label"]),
        ("*mail.contoso.com", ["inside a label"]),
        ("*.*.contoso.com", ["more than one"]),
        ("*.mail.*.com", ["more than one"]),
        ("contoso..com", ["not a valid DNS name"]),
        (".contoso.com", ["not a valid DNS name"]),
        ("-mail.contoso.com", ["not a valid DNS name"]),
        ("mail_relay.contoso.com", ["not a valid DNS name"]),
        ("a" * 64 + ".contoso.com", ["not a valid DNS name"]),
        ("*.", ["any certificate"]),  # trailing dot stripped: a bare "*"
    ],
)
def test_parse_rejects(value: str, words: list[str]) -> None:
    with pytest.raises(ConnectorPatternError) as raised:
        ConnectorPattern.parse(value)
    message = str(raised.value)
    for word in words:
        assert word in message
    if value.strip():
        assert repr(value) in message  # says which value is wrong


def test_pattern_error_is_value_error() -> None:
    assert issubclass(ConnectorPatternError, ValueError)


@pytest.mark.parametrize(
    ("connector", "names", "matched", "near_miss"),
    [
        # `*.D` covers D itself, any depth under D, and wildcard names under D.
        ("*.contoso.com", ["contoso.com"], "contoso.com", None),
        ("*.contoso.com", ["mail.contoso.com"], "mail.contoso.com", None),
        ("*.contoso.com", ["a.b.c.contoso.com"], "a.b.c.contoso.com", None),
        ("*.contoso.com", ["*.contoso.com"], "*.contoso.com", None),
        ("*.contoso.com", ["*.eu.contoso.com"], "*.eu.contoso.com", None),
        # Label alignment: a suffix is not a subdomain.
        ("*.contoso.com", ["evilcontoso.com"], None, None),
        ("*.contoso.com", ["contoso.com.evil.net"], None, None),
        ("*.contoso.com", ["*.com"], None, None),
        ("*.contoso.com", ["mail.*.contoso.com"], None, None),  # malformed certificate name
        ("*.mail.contoso.com", ["contoso.com", "*.contoso.com"], None, None),
        # Case and trailing dots on both sides.
        ("*.Contoso.COM.", ["MAIL.CONTOSO.COM."], "mail.contoso.com", None),
        ("Mail.Contoso.com", ["mail.contoso.com."], "mail.contoso.com", None),
        # IDN: U-label and A-label are the same name.
        ("*.bücher.example", ["mx.xn--bcher-kva.example"], "mx.xn--bcher-kva.example", None),
        ("mx.xn--bcher-kva.example", ["MX.Bücher.example"], "mx.xn--bcher-kva.example", None),
        # A literal matches only its exact name.
        ("mail.contoso.com", ["mail.contoso.com"], "mail.contoso.com", None),
        ("mail.contoso.com", ["contoso.com", "relay.mail.contoso.com"], None, None),
        # A wildcard certificate never satisfies a literal connector: near miss.
        ("mail.contoso.com", ["*.contoso.com"], None, "*.contoso.com"),
        ("a.b.contoso.com", ["*.contoso.com"], None, "*.contoso.com"),
        ("contoso.com", ["*.contoso.com"], None, "*.contoso.com"),
        ("mail.contoso.com", ["*.fabrikam.com"], None, None),
        ("mail.contoso.com", ["*.eu.contoso.com"], None, None),
        # An exact name elsewhere in the list wins over a near miss.
        ("mail.contoso.com", ["*.contoso.com", "mail.contoso.com"], "mail.contoso.com", None),
        # The first satisfying name in the order given is reported.
        (
            "*.contoso.com",
            ["www.fabrikam.com", "a.contoso.com", "b.contoso.com"],
            "a.contoso.com",
            None,
        ),
        ("*.contoso.com", ["", "."], None, None),
        ("*.contoso.com", [], None, None),
    ],
)
def test_match_connector(
    connector: str, names: list[str], matched: str | None, near_miss: str | None
) -> None:
    result = match_connector(ConnectorPattern.parse(connector), names)
    assert result == ConnectorMatch(matched=matched, near_miss=near_miss)


def test_match_connector_accepts_any_iterable() -> None:
    pattern = ConnectorPattern.parse("*.contoso.com")
    assert match_connector(pattern, iter(["mail.contoso.com"])).matched == "mail.contoso.com"


@pytest.mark.parametrize(
    ("name", "accepted", "expected"),
    [
        ("contoso.com", ["contoso.com"], "contoso.com"),
        ("mail.contoso.com", ["contoso.com"], "contoso.com"),
        ("*.contoso.com", ["contoso.com"], "contoso.com"),
        ("*.contoso.com", ["mail.contoso.com"], None),  # the subtree is wider than the domain
        ("*.eu.contoso.com", ["contoso.com"], "contoso.com"),
        ("evilcontoso.com", ["contoso.com"], None),
        ("contoso.com.evil.net", ["contoso.com"], None),
        ("contoso.com", ["mail.contoso.com"], None),
        # The most specific accepted domain wins, whatever the order given.
        ("a.eu.contoso.com", ["contoso.com", "eu.contoso.com"], "eu.contoso.com"),
        ("a.eu.contoso.com", ["eu.contoso.com", "contoso.com"], "eu.contoso.com"),
        ("MAIL.Contoso.com.", ["CONTOSO.COM."], "contoso.com"),
        ("mx.bücher.example", ["xn--bcher-kva.example"], "xn--bcher-kva.example"),
        ("mx.xn--bcher-kva.example", ["Bücher.example"], "xn--bcher-kva.example"),
        ("mail.contoso.com", [], None),
        ("", ["contoso.com"], None),
    ],
)
def test_accepted_domain_for(name: str, accepted: list[str], expected: str | None) -> None:
    assert accepted_domain_for(name, accepted) == expected


@pytest.mark.parametrize(
    ("host", "dns_names", "expected"),
    [
        ("mail.example.com", ["mail.example.com"], "mail.example.com"),
        ("MAIL.Example.com.", ["mail.example.COM."], "mail.example.COM."),  # returned as given
        ("a.example.com", ["*.example.com"], "*.example.com"),  # one label
        ("example.com", ["*.example.com"], None),  # no apex match
        ("a.b.example.com", ["*.example.com"], None),  # no deeper match
        ("foo.example.com", ["f*.example.com"], None),  # no partial wildcard
        ("foo.example.com", ["*o.example.com"], None),
        ("a.b.example.com", ["a.*.example.com"], None),  # wildcard not left-most
        ("a.example.com", ["*.*.com"], None),
        ("example.com", ["*.com"], None),  # no wildcard over a single label
        ("evilexample.com", ["example.com"], None),
        ("xn--bcher-kva.example.com", ["*.example.com"], "*.example.com"),
        ("bücher.example", ["xn--bcher-kva.example"], "xn--bcher-kva.example"),
        ("*.example.com", ["*.example.com"], None),  # a host name never has a '*'
        ("", ["example.com"], None),
        ("mail.example.com", [], None),
        ("b.example.com", ["a.example.com", "*.example.com", "b.example.com"], "*.example.com"),
    ],
)
def test_hostname_matches(host: str, dns_names: list[str], expected: str | None) -> None:
    assert hostname_matches(host, dns_names) == expected


# (cert names, connector or None, accepted domains, status, words in the message)
CERTIFICATE_DOMAIN_CASES = [
    (
        ["mail.contoso.com"],
        "*.contoso.com",
        [],
        Status.OK,
        ["'mail.contoso.com'", "matches", "'*.contoso.com'"],
    ),
    (["contoso.com"], "*.contoso.com", [], Status.OK, ["'contoso.com'", "matches"]),
    (["MAIL.Contoso.com."], "mail.contoso.com", [], Status.OK, ["'mail.contoso.com'", "matches"]),
    (
        ["*.contoso.com"],
        "mail.contoso.com",
        ["contoso.com"],
        Status.CRITICAL,
        [
            "wildcard certificate '*.contoso.com'",
            "does not satisfy",
            "literal connector 'mail.contoso.com'",
            "must be '*.contoso.com'",
        ],
    ),
    (
        ["evilcontoso.com", "contoso.com.evil.net"],
        "*.contoso.com",
        [],
        Status.CRITICAL,
        [
            "no certificate name matches connector '*.contoso.com'",
            "'evilcontoso.com'",
            "'contoso.com.evil.net'",
        ],
    ),
    (
        [],
        "mail.contoso.com",
        [],
        Status.CRITICAL,
        ["'mail.contoso.com'", "certificate names: none"],
    ),
    # Without a connector value the accepted domains stand in for it.
    (
        ["mail.contoso.com"],
        None,
        ["contoso.com"],
        Status.OK,
        ["'mail.contoso.com'", "accepted domain 'contoso.com'"],
    ),
    (["*.contoso.com"], None, ["contoso.com"], Status.OK, ["'*.contoso.com'", "'contoso.com'"]),
    (
        ["mail.fabrikam.com"],
        None,
        ["contoso.com"],
        Status.CRITICAL,
        ["no certificate name lies in an accepted domain", "'contoso.com'", "'mail.fabrikam.com'"],
    ),
    (
        ["mail.contoso.com"],
        None,
        [],
        Status.UNKNOWN,
        ["no --certificate-domain or --accepted-domain given"],
    ),
]


@pytest.mark.parametrize(
    ("names", "connector", "accepted", "status", "words"), CERTIFICATE_DOMAIN_CASES
)
def test_check_certificate_domain(
    names: list[str], connector: str | None, accepted: list[str], status: Status, words: list[str]
) -> None:
    pattern = ConnectorPattern.parse(connector) if connector else None
    check = check_certificate_domain(names, pattern, accepted)
    assert (check.name, check.status) == ("certificate_domain", status)
    for word in words:
        assert word in check.message
    assert "\n" not in check.message
    assert check.symptom == (CERT_SYMPTOM if status is Status.CRITICAL else "")


# (cert names, connector or None, accepted domains, status, words in the message)
ACCEPTED_DOMAIN_CASES = [
    (["mail.contoso.com"], "*.contoso.com", [], Status.UNKNOWN, ["no --accepted-domain"]),
    ([], None, [], Status.UNKNOWN, ["no --accepted-domain"]),
    (
        ["mail.contoso.com"],
        "*.contoso.com",
        ["contoso.com"],
        Status.OK,
        ["'*.contoso.com'", "accepted domain 'contoso.com'"],
    ),
    (
        ["relay.eu.contoso.com"],
        "*.eu.contoso.com",
        ["contoso.com"],
        Status.OK,
        ["accepted domain 'contoso.com'"],
    ),
    (["contoso.com"], "contoso.com", ["CONTOSO.com."], Status.OK, ["'contoso.com'"]),
    (
        ["mail.contoso.com"],
        "mail.contoso.com",
        ["contoso.com", "mail.contoso.com"],
        Status.OK,
        ["accepted domain 'mail.contoso.com'"],
    ),
    (
        ["mail.contoso.com"],
        "mail.contoso.com",
        ["contoso.com"],
        Status.WARNING,
        [
            "'mail.contoso.com'",
            "not itself accepted",
            "envelope sender's domain is accepted",
            "NDRs and out-of-office replies fail",
            "add 'mail.contoso.com' as an accepted domain",
            "use '*.contoso.com' on the connector",
        ],
    ),
    (
        ["mail.fabrikam.com"],
        "*.fabrikam.com",
        ["contoso.com"],
        Status.CRITICAL,
        ["'*.fabrikam.com'", "not in any accepted domain", "'contoso.com'"],
    ),
    (
        ["mail.evilcontoso.com"],
        "mail.evilcontoso.com",
        ["contoso.com"],
        Status.CRITICAL,
        ["not in any accepted domain"],
    ),
    (
        ["*.contoso.com"],
        "*.contoso.com",
        ["mail.contoso.com"],
        Status.CRITICAL,
        ["not in any accepted domain"],
    ),
    # The connector is judged even when it matched no certificate name.
    (
        ["other.fabrikam.com"],
        "*.contoso.com",
        ["contoso.com"],
        Status.OK,
        ["accepted domain 'contoso.com'"],
    ),
    # Without a connector value a certificate name must lie in an accepted domain.
    (
        ["www.fabrikam.com", "mail.contoso.com"],
        None,
        ["contoso.com"],
        Status.OK,
        ["'mail.contoso.com'", "'contoso.com'"],
    ),
    (
        ["mail.fabrikam.com"],
        None,
        ["contoso.com"],
        Status.CRITICAL,
        ["no certificate name lies in an accepted domain", "'mail.fabrikam.com'"],
    ),
]


@pytest.mark.parametrize(
    ("names", "connector", "accepted", "status", "words"), ACCEPTED_DOMAIN_CASES
)
def test_check_accepted_domain(
    names: list[str], connector: str | None, accepted: list[str], status: Status, words: list[str]
) -> None:
    pattern = ConnectorPattern.parse(connector) if connector else None
    check = check_accepted_domain(names, pattern, accepted)
    assert (check.name, check.status) == ("accepted_domain", status)
    for word in words:
        assert word in check.message
    assert "\n" not in check.message
    failed = status in (Status.CRITICAL, Status.WARNING)
    assert check.symptom == (ACCEPTED_SYMPTOM if failed else "")


def test_long_name_lists_are_truncated() -> None:
    names = [f"host{i}.fabrikam.com" for i in range(12)]
    check = check_certificate_domain(names, ConnectorPattern.parse("*.contoso.com"), [])
    assert "'host4.fabrikam.com'" in check.message
    assert "host5.fabrikam.com" not in check.message
    assert "(+7 more)" in check.message


def test_duplicate_names_are_listed_once() -> None:
    names = ["mail.fabrikam.com", "MAIL.fabrikam.com.", "mail.fabrikam.com"]
    check = check_certificate_domain(names, ConnectorPattern.parse("*.contoso.com"), [])
    assert check.message.count("mail.fabrikam.com") == 1


def test_control_characters_in_a_cn_stay_on_one_line() -> None:
    check = check_certificate_domain(
        ["Contoso\nRelay\r"], ConnectorPattern.parse("*.contoso.com"), []
    )
    assert check.status is Status.CRITICAL
    assert "\n" not in check.message
    assert "\r" not in check.message
    assert "contoso\\x0arelay" in check.message


@given(st.lists(st.text(max_size=40), max_size=8), st.lists(st.text(max_size=20), max_size=3))
def test_messages_are_one_line_for_any_names(names: list[str], accepted: list[str]) -> None:
    pattern = ConnectorPattern.parse("mail.contoso.com")
    for check in (
        check_certificate_domain(names, pattern, accepted),
        check_certificate_domain(names, None, accepted),
        check_accepted_domain(names, pattern, accepted),
        check_accepted_domain(names, None, accepted),
    ):
        assert check.message
        assert check.message.isprintable()

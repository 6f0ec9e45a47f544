"""Facts parsed from DER by `tlsprobe.probe.x509.facts`: names, dates, serial, key, signature,
CA flags.

Parsing never judges, so each fact is checked against a certificate whose contents the test
chose: a CA hierarchy with fixed dates, hand-built certificates for exact serials and distinguished
names, an Ed25519 key, and one with a malformed SAN extension that must still be reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtensionOID, NameOID

from tests.support.pki import (
    FIXED_INTERMEDIATE_CN,
    Hierarchy,
    Issued,
    KeyKind,
    make_leaf,
    make_root,
    pooled_key,
)
from tests.support.pki import FIXED_NOW as NOW
from tlsprobe.model import CertFacts, CertPart
from tlsprobe.probe.x509.facts import CertificateParseError, facts, facts_from_der, load

HOST = "mail.contoso.test"


def leaf(
    ca: Hierarchy,
    names: Sequence[str] = (HOST,),
    *,
    common_name: str | None = None,
    key: KeyKind = KeyKind.RSA2048,
    signature_hash: str = "sha256",
) -> Issued:
    return make_leaf(
        ca.intermediate,
        names,
        common_name=common_name,
        key=key,
        signature_hash=signature_hash,
        not_before=NOW - timedelta(days=30),
        not_after=NOW + timedelta(days=60),
    )


def of(issued: Issued) -> CertFacts:
    return facts_from_der(issued.der)


def hand_built(
    subject: x509.Name,
    *,
    issuer: x509.Name | None = None,
    serial: int = 1,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> bytes:
    """A self-signed EC certificate (or one claiming `issuer`), exactly as specified, as DER."""
    key = pooled_key(KeyKind.EC_P256, "hand-built")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


# --- names, dates, serial, fingerprint ---------------------------------------------------------


def test_names_come_from_san_dnsnames_and_subject_cn(ca: Hierarchy) -> None:
    facts = of(leaf(ca, (HOST, "Autodiscover.Contoso.test", "192.0.2.25")))
    # SAN dNSNames as found (no normalization), iPAddress entries left out.
    assert facts.dns_names == (HOST, "Autodiscover.Contoso.test")
    assert facts.common_names == (HOST,)
    assert facts.subject == f"CN={HOST},O=tlsprobe test server"
    assert facts.issuer == f"CN={FIXED_INTERMEDIATE_CN},O=tlsprobe tests"


def test_cn_only_certificate_has_no_dns_names(ca: Hierarchy) -> None:
    facts = of(leaf(ca, (), common_name=HOST))
    assert facts.dns_names == ()
    assert facts.common_names == (HOST,)


def test_certificate_without_subject_cn() -> None:
    facts = facts_from_der(hand_built(x509.Name([])))
    assert facts.common_names == ()
    assert facts.subject == ""


def test_dates_are_aware_utc(ca: Hierarchy) -> None:
    facts = of(leaf(ca))
    assert facts.not_before == NOW - timedelta(days=30)
    assert facts.not_after == datetime(2026, 7, 31, tzinfo=UTC)
    assert facts.not_after.utcoffset() == timedelta(0)


def test_serial_is_upper_case_hex_without_separators() -> None:
    assert facts_from_der(hand_built(cn(HOST), serial=0xABCDEF0123)).serial == "ABCDEF0123"


def test_random_serial_matches_the_certificate(ca: Hierarchy) -> None:
    issued = leaf(ca)
    facts = of(issued)
    assert re.fullmatch(r"[0-9A-F]+", facts.serial)
    assert int(facts.serial, 16) == issued.cert.serial_number


def test_sha256_is_the_lower_case_fingerprint_of_the_der(ca: Hierarchy) -> None:
    issued = leaf(ca)
    assert of(issued).sha256 == hashlib.sha256(issued.der).hexdigest()
    assert of(issued).sha256 == issued.sha256
    assert of(issued).der == issued.der


def test_facts_of_a_loaded_certificate_equal_facts_of_its_der(ca: Hierarchy) -> None:
    issued = leaf(ca)
    assert facts(issued.cert) == of(issued)


# --- key and signature -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key_type", "bits"),
    [
        (KeyKind.RSA1024, "RSA", 1024),
        (KeyKind.RSA2048, "RSA", 2048),
        (KeyKind.EC_P256, "EC", 256),
        (KeyKind.EC_P384, "EC", 384),
    ],
)
def test_key_description(ca: Hierarchy, kind: KeyKind, key_type: str, bits: int) -> None:
    facts = of(leaf(ca, key=kind))
    assert (facts.key_type, facts.key_bits) == (key_type, bits)
    assert facts.key == f"{key_type} {bits}"


def test_ed25519_key_and_signature() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(cn(HOST))
        .issuer_name(cn(HOST))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, None)
    )
    facts = facts_from_der(cert.public_bytes(serialization.Encoding.DER))
    assert facts.key == "Ed25519 256"
    assert facts.signature_algorithm == "ed25519"
    assert facts.signature_hash is None


@pytest.mark.parametrize(
    ("signature_hash", "name"),
    [("sha256", "sha256WithRSAEncryption"), ("sha1", "sha1WithRSAEncryption")],
)
def test_rsa_signature_names_and_hash(ca: Hierarchy, signature_hash: str, name: str) -> None:
    facts = of(leaf(ca, signature_hash=signature_hash))
    assert facts.signature_algorithm == name
    assert facts.signature_hash == signature_hash


def test_ecdsa_signature_name() -> None:
    root = make_root(
        "Certs EC Root CA",
        key=KeyKind.EC_P384,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=10),
    )
    facts = of(make_leaf(root, not_before=NOW, not_after=NOW + timedelta(days=1)))
    assert facts.signature_algorithm == "ecdsa-with-SHA256"
    assert facts.signature_hash == "sha256"


# --- CA flags and the Exchange name ------------------------------------------------------------


def test_ca_and_self_issued_flags(ca: Hierarchy) -> None:
    self_signed = make_leaf(None, not_before=NOW, not_after=NOW + timedelta(days=1))
    flags = {
        "root": (of(ca.root).is_ca, of(ca.root).self_issued),
        "intermediate": (of(ca.intermediate).is_ca, of(ca.intermediate).self_issued),
        "leaf": (of(leaf(ca)).is_ca, of(leaf(ca)).self_issued),
        "self-signed leaf": (of(self_signed).is_ca, of(self_signed).self_issued),
    }
    assert flags == {
        "root": (True, True),
        "intermediate": (True, False),
        "leaf": (False, False),
        "self-signed leaf": (False, True),
    }


def test_exchange_name_of_a_test_leaf(ca: Hierarchy) -> None:
    assert of(leaf(ca)).exchange_name == (
        f"<I>CN={FIXED_INTERMEDIATE_CN}, O=tlsprobe tests"
        "<S>CN=mail.contoso.test, O=tlsprobe test server"
    )


def test_exchange_name_lists_the_most_specific_attribute_first() -> None:
    """Microsoft's own example: `<I>CN=R3, O=Let's Encrypt, C=US<S>CN=mail.contoso.com`."""
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Let's Encrypt"),
            x509.NameAttribute(NameOID.COMMON_NAME, "R3"),
        ]
    )
    der = hand_built(cn("mail.contoso.com"), issuer=issuer)
    assert (
        facts_from_der(der).exchange_name == "<I>CN=R3, O=Let's Encrypt, C=US<S>CN=mail.contoso.com"
    )


# --- what is not a certificate, and what is a broken one ---------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x82\x01\x00garbage", id="garbage"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\n", id="pem-not-der"),
    ],
)
def test_garbage_yields_facts_with_an_encoding_problem(data: bytes) -> None:
    facts = facts_from_der(data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.unreadable(CertPart.ENCODING)
    assert facts.unreadable(CertPart.VALIDITY)  # no dates invented
    assert facts.subject == "(unreadable)"


def test_truncated_der_yields_facts_with_an_encoding_problem(ca: Hierarchy) -> None:
    facts = facts_from_der(leaf(ca).der[:-20])
    assert facts.unreadable(CertPart.ENCODING)


def test_load_raises_a_parse_error_that_is_a_value_error() -> None:
    with pytest.raises(CertificateParseError, match="not a DER certificate"):
        load(b"\x30\x03not")
    assert issubclass(CertificateParseError, ValueError)


def test_malformed_san_still_yields_facts() -> None:
    # A SAN whose dNSName claims five bytes but holds one.
    broken_san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x05x"
    )
    der = hand_built(cn(HOST), serial=0x2A, extensions=[(broken_san, False)])
    facts = facts_from_der(der)
    assert facts.dns_names == ()
    assert facts.common_names == (HOST,)
    assert facts.serial == "2A"
    assert facts.key == "EC 256"
    assert facts.sha256 == hashlib.sha256(der).hexdigest()

"""Certificates the judge cannot read strictly still end in a verdict, never an exception.

Every kind in `tests.support.broken` is made from a good chain by DER surgery, once as the leaf
and once as the intermediate, and judged: what can be read is reported (the fingerprint of the
raw DER always), what cannot is a `certificate_format` finding, critical where strict verifiers
refuse the certificate. A library warning never reaches the user: it becomes a finding too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import der as D
from tests.support.broken import MAKERS
from tests.support.pki import FIXED_NOW as NOW
from tests.support.pki import Hierarchy, Issued
from tlsprobe import report
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.exposition.metrics import endpoint_samples
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import (
    CHECK_NAMES,
    UNREADABLE,
    Capture,
    Endpoint,
    Policy,
    ProbeResult,
    Status,
    TlsInfo,
)
from tlsprobe.probe.prober import judge
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509.evaluate import TrustStore

HOST = "mail.contoso.test"
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))

# Kinds a strict verifier refuses outright: critical whatever else holds.
REFUSED = {
    "gost-signature",
    "sm2-signature",
    "printable-star-subject",
    "printable-at-issuer",
    "duplicate-extension",
    "month-13",
    "generalized-time-garbage",
    "truncated",
    "non-minimal-length",
    "non-minimal-length-in-tbs",
    "utc-time-offset",
    "generalized-time-fraction",
    "version-4",
    "version-9",
    "boolean-true-0x01",
    "explicit-boolean-false",
    "wrong-signature-parameters",
    "printable-underscore-subject",
}
# Kinds read in full and verified anyway (a legacy string type, a long name): a warning.
WARNED = {"t61-8bit-subject", "ia5-8bit-subject", "utf8-invalid-subject", "huge-subject"}


@pytest.fixture(scope="module")
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="unreadable root")


@pytest.fixture(scope="module")
def leaf(ca: Hierarchy) -> Issued:
    return ca.leaf((HOST,), not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(60))


def judged(store: TrustStore, chain: tuple[bytes, ...]) -> ProbeResult:
    capture = Capture("192.0.2.25", chain, TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256"))
    return judge(Endpoint(HOST), capture, POLICY, store, started_at=0, now=NOW)


def broken_chain(kind: str, where: str, ca: Hierarchy, leaf: Issued) -> tuple[bytes, ...]:
    make = MAKERS[kind]
    if where == "leaf":
        return make(leaf.der, ca.intermediate.key), ca.intermediate.der
    return leaf.der, make(ca.intermediate.der, ca.root.key)


@pytest.mark.parametrize("where", ["leaf", "intermediate"])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_broken_certificate_ends_in_a_verdict(
    kind: str, where: str, ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    chain = broken_chain(kind, where, ca, leaf)
    result = judged(store, chain)

    assert result.error is None
    assert [c.sha256 for c in result.chain] == [hashlib.sha256(d).hexdigest() for d in chain]
    assert {c.name for c in result.checks} <= set(CHECK_NAMES)
    finding = result.check("certificate_format")
    if kind in REFUSED:
        assert result.status is Status.CRITICAL
        assert finding is not None and finding.status is Status.CRITICAL
        assert not result.o365_ready
        trusted = result.check("chain_trusted")
        assert trusted is not None and trusted.reason == "malformed"
    if kind in WARNED:
        assert finding is not None and finding.status is Status.WARNING
    if kind in WARNED and where == "leaf":
        assert result.status is Status.WARNING  # read and verified: Exchange accepts it
    # The reports render whatever was read.
    assert report.to_json(result)["checks"]
    assert "Checks" in report.human(result, NOW)


def test_a_t61_subject_is_reported_as_read(ca: Hierarchy, leaf: Issued, store: TrustStore) -> None:
    result = judged(store, broken_chain("t61-8bit-subject", "leaf", ca, leaf))
    assert result.chain[0].subject.startswith("CN=Müller Mail")
    finding = result.check("certificate_format")
    assert finding is not None
    assert finding.message == "leaf: subject: CN is a T61String with 8-bit bytes (shown as Latin-1)"
    trusted = result.check("chain_trusted")
    assert trusted is not None and trusted.status is Status.OK


def test_a_chain_certificate_with_a_t61_subject_still_verifies(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    """Names compare as bytes: the leaf names its issuer in the same legacy string."""
    name = (D.T61_STRING, b"Intermedi\xe4r CA")
    intermediate = D.Certificate(ca.intermediate.der)
    node = D.name_value_nodes(intermediate.tbs[D.Certificate.SUBJECT])[-1]
    node.tag, node.value = name
    child = D.Certificate(leaf.der)
    node = D.name_value_nodes(child.tbs[D.Certificate.ISSUER])[-1]
    node.tag, node.value = name
    chain = (child.resign(ca.intermediate.key), intermediate.resign(ca.root.key))

    result = judged(store, chain)

    assert result.status is Status.WARNING
    assert result.check("chain_trusted").status is Status.OK  # type: ignore[union-attr]
    assert result.chain[1].subject.startswith("CN=Intermediär CA")


def test_a_printable_string_with_a_star_is_read_leniently(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    result = judged(store, broken_chain("printable-star-subject", "leaf", ca, leaf))
    facts = result.chain[0]
    assert facts.common_names == ("*.contoso.test",)
    assert facts.dns_names == (HOST,)
    assert facts.not_after == leaf.cert.not_valid_after_utc
    finding = result.check("certificate_format")
    assert finding is not None
    assert "leaf: subject: CN is a PrintableString holding *, not allowed there" in finding.message


def test_a_signature_algorithm_nobody_supports_is_named(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    result = judged(store, broken_chain("gost-signature", "intermediate", ca, leaf))
    signature = result.check("signature_algorithm")
    assert signature is not None and signature.status is Status.CRITICAL
    assert "GOST R 34.10-2012" in signature.message
    assert "not supported" in signature.message


def test_unreadable_dates_are_critical_not_invented(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    result = judged(store, broken_chain("month-13", "leaf", ca, leaf))
    expiry = result.check("not_expired")
    assert expiry is not None and expiry.status is Status.CRITICAL
    assert expiry.message == "certificate: validity dates cannot be read"


def test_truncated_der_keeps_its_fingerprint(store: TrustStore, leaf: Issued) -> None:
    chain = (leaf.der[:100],)
    result = judged(store, chain)
    assert result.status is Status.CRITICAL
    assert result.chain[0].sha256 == hashlib.sha256(chain[0]).hexdigest()
    assert result.chain[0].subject == UNREADABLE


def test_a_huge_subject_is_clipped_in_messages(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    result = judged(store, broken_chain("huge-subject", "intermediate", ca, leaf))
    assert all(len(c.message) < 2000 for c in result.checks if c.name == "certificate_format")


def test_library_warnings_become_findings_not_output(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    # pytest turns warnings into errors here: reaching the asserts means none escaped.
    result = judged(store, broken_chain("negative-serial", "leaf", ca, leaf))
    assert result.chain[0].serial == "-FF"
    finding = result.check("certificate_format")
    assert finding is not None
    assert "serial number is not positive" in finding.message


@pytest.mark.parametrize("kind", ["duplicate-extension", "printable-star-subject", "truncated"])
def test_a_relay_presenting_a_broken_client_certificate_gets_a_verdict(
    kind: str, ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    """The send side judges client chains with the same engine, and its own EKU check."""
    chain = broken_chain(kind, "leaf", ca, leaf)
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    session = Session(
        "127.0.0.2", 2525, NOW.timestamp(), helo="relay.test", tls=tls, chain_der=chain
    )
    result = judge_session(session, POLICY, store, now=NOW)

    assert result.status is Status.CRITICAL
    assert result.chain[0].sha256 == hashlib.sha256(chain[0]).hexdigest()
    finding = result.check("certificate_format")
    assert finding is not None and finding.status is Status.CRITICAL


def _samples(result: ProbeResult) -> dict[str, tuple[str, ...]]:
    state = EndpointState("contoso", "mx", result)
    return {name: labels for name, labels, _ in endpoint_samples(state)}


def test_unreadable_dates_are_not_exported_as_the_epoch(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    samples = _samples(judged(store, broken_chain("month-13", "leaf", ca, leaf)))
    assert "tlsprobe_cert_not_after_timestamp_seconds" not in samples
    assert "tlsprobe_chain_earliest_not_after_timestamp_seconds" not in samples
    assert "tlsprobe_cert_info" in samples  # the fingerprint still identifies it


def test_a_huge_subject_is_clipped_in_the_info_labels(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    samples = _samples(judged(store, broken_chain("huge-subject", "leaf", ca, leaf)))
    assert max(len(value) for value in samples["tlsprobe_cert_info"]) <= 256


def test_json_gives_null_for_dates_that_cannot_be_read(
    ca: Hierarchy, leaf: Issued, store: TrustStore
) -> None:
    """`--json` and /probe?debug=true said 1970-01-01T00:00:00Z: a date no certificate has,
    which a consumer would take for a long-expired one."""
    doc = report.to_json(judged(store, broken_chain("month-13", "leaf", ca, leaf)))
    served = doc["chain"][0]
    assert served["not_after"] is None  # month 13 is in notAfter; notBefore still reads
    assert served["not_before"].endswith("Z")
    assert doc["chain"][1]["not_after"].endswith("Z")  # the readable intermediate keeps its date
    assert "1970" not in json.dumps(doc)


def test_the_outcome_log_says_unreadable_not_1970(
    ca: Hierarchy,
    leaf: Issued,
    store: TrustStore,
    ca_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = {
        "state_dir": str(tmp_path),
        "defaults": {"ca_file": str(ca_file)},
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.test"],
                "targets": [{"name": "mx", "host": HOST}],
            }
        },
    }
    config = parse_config(data, base_dir=tmp_path)
    scheduler = Scheduler(config, results=LatestResults())
    result = judged(store, broken_chain("month-13", "leaf", ca, leaf))
    with caplog.at_level(logging.INFO, logger="tlsprobe.exporter.scheduler"):
        scheduler.publish(config.targets[0], result)
    (fields,) = [r.__dict__["fields"] for r in caplog.records]
    assert fields["not_after"] == UNREADABLE

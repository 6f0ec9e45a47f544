"""Fuzz the judge with mutated certificates: a verdict, never an exception.

Random bytes rarely get past the first length byte, so the mutations work on the structure of
real certificates (a leaf and its intermediate from the test PKI): hypothesis walks the TLV
tree to a node and changes it (a byte, the value, the tag, a child dropped, duplicated or moved),
optionally re-signs the result with the issuer's key so the signature is not the only fault,
and sometimes truncates the DER. Evaluation runs without the prober's last-resort guard, so an
exception anywhere in parsing, evaluation or reporting fails the test. The example count is
bounded and derandomized so the test is fast and repeatable in CI.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import der as D
from tests.support.pki import Hierarchy, PrivateKey, make_intermediate, make_root
from tlsprobe import report
from tlsprobe.model import CHECK_NAMES, Capture, Endpoint, Policy, Status, TlsInfo
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509 import facts as certs
from tlsprobe.probe.x509.evaluate import TrustStore, Verdict, evaluate_der

NOW = datetime(2026, 6, 1, tzinfo=UTC)
HOST = "mail.contoso.test"
TLS = TlsInfo("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
TAGS = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1E, 0x30, 0x31]
EXAMPLES = 200


@functools.cache
def pki() -> tuple[Hierarchy, bytes, TrustStore]:
    year = timedelta(days=365)
    root = make_root("Fuzz Root CA", not_before=NOW - year, not_after=NOW + 10 * year)
    ca = Hierarchy(root, make_intermediate(root, "Fuzz Intermediate CA", not_before=NOW - year))
    leaf = ca.leaf((HOST, "*.contoso.test"), not_before=NOW - year / 12, not_after=NOW + year / 4)
    return ca, leaf.der, TrustStore.from_pem(ca.ca_pem, source="fuzz root")


def pick(data: st.DataObject, root: D.Node) -> D.Node:
    """A node of the tree: descend while there are children and hypothesis says so."""
    node = root
    while node.children:
        descend: bool = data.draw(st.booleans(), label="descend")
        if not descend:
            break
        node = node.children[data.draw(st.integers(0, len(node.children) - 1), label="child")]
    return node


def mutate(data: st.DataObject, node: D.Node) -> None:
    operation = data.draw(
        st.sampled_from(["flip", "value", "tag", "drop", "duplicate", "move"]), label="op"
    )
    if operation == "flip" and node.value:
        index = data.draw(st.integers(0, len(node.value) - 1))
        changed = bytearray(node.value)
        changed[index] ^= data.draw(st.integers(1, 255))
        node.value = bytes(changed)
    elif operation == "value" and not node.constructed:
        node.value = data.draw(st.binary(max_size=48), label="value")
    elif operation == "tag":
        tag = data.draw(st.sampled_from(TAGS), label="tag")
        if bool(tag & 0x20) == node.constructed:  # keep the tree encodable
            node.tag = tag
    elif node.children:
        index = data.draw(st.integers(0, len(node.children) - 1))
        child = node.children[index]
        if operation == "drop":
            del node.children[index]
        elif operation == "duplicate":
            node.children.insert(index, D.parse(D.encode(child)))
        else:
            node.children.append(node.children.pop(index))


def mutated(data: st.DataObject, good: bytes, issuer: PrivateKey) -> bytes:
    cert = D.Certificate(good)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        mutate(data, pick(data, cert.tbs if data.draw(st.booleans()) else cert.root))
    try:
        der = cert.resign(issuer if data.draw(st.booleans(), label="resign") else None)
    except (IndexError, ValueError):
        der = D.encode(cert.root)  # the mutation broke the shape resign relies on
    if data.draw(st.booleans(), label="truncate"):
        der = der[: data.draw(st.integers(0, len(der)), label="length")]
    return der


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_certificates_always_get_a_verdict(data: st.DataObject) -> None:
    ca, leaf, trust = pki()
    if data.draw(st.booleans(), label="mutate the leaf"):
        chain = (mutated(data, leaf, ca.intermediate.key), ca.intermediate.der)
    else:
        chain = (leaf, mutated(data, ca.intermediate.der, ca.root.key))

    facts = [certs.facts_from_der(der) for der in chain]
    verdict = evaluate_der(chain, host=HOST, tls=TLS, policy=POLICY, trust=trust, now=NOW)

    assert isinstance(verdict, Verdict)
    assert {c.name for c in verdict.checks} <= set(CHECK_NAMES)
    assert all(isinstance(c.status, Status) for c in verdict.checks)
    if any(p.critical for f in facts for p in f.problems):
        assert not verdict.o365_ready
    result = judge(
        Endpoint(HOST), Capture("192.0.2.1", chain, TLS), POLICY, trust, now=NOW, started_at=0
    )
    assert result.checks == verdict.checks  # no last-resort verdict was needed
    report.human(result, NOW)
    report.to_json(result)

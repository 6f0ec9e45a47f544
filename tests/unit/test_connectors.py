"""Each direction judged by the connector that governs it, against a fixed clock.

The relay of issue 23, as an operator configured it: certificate `www.contoso.test` served on
`relay.contoso.test`, connector `*.contoso.test`. As a relay nobody dials by name its host-name
mismatch is information; as an MX (or an outbound connector's smart host) it is critical. An
outbound connector's `TlsSettings` decide what the server side must show.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import FIXED_NOW as NOW
from tests.support.pki import Hierarchy, Issued, make_hierarchy
from tlsprobe import report
from tlsprobe.exporter.config import TargetConfig, load_config
from tlsprobe.model import (
    Capture,
    CheckName,
    Endpoint,
    OutboundRule,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
    TlsSettings,
)
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509.evaluate import TrustStore, Verdict, evaluate

TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
RELAY = "relay.contoso.test"
CONFIG = """\
tenants:
  contoso:
    accepted_domains: [contoso.test]
    certificate_domain: "*.contoso.test"
    inbound_connector: From contoso relay
    targets:
      - {name: relay, host: relay.contoso.test}
      - {name: mail, mx: contoso.test}
      - {name: strict, host: relay.contoso.test, hostname_check: required}
      - {name: lax, mx: contoso.test, hostname_check: informational}
"""


@pytest.fixture(scope="module")
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="connectors root")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TargetConfig]:
    path: Path = tmp_path_factory.mktemp("connectors") / "tlsprobe.yml"
    path.write_text(CONFIG)
    return {t.name: t for t in load_config(path).targets}


def leaf_of(ca: Hierarchy, names: tuple[str, ...]) -> Issued:
    """A leaf valid from ten days before the fixed clock to eighty after it."""
    return ca.leaf(names, not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=80))


def judged(
    ca: Hierarchy, store: TrustStore, policy: Policy, names: tuple[str, ...] = ("www.contoso.test",)
) -> Verdict:
    leaf = leaf_of(ca, names)
    return evaluate(ca.chain(leaf), host=RELAY, tls=TLS13, policy=policy, trust=store, now=NOW)


def status(verdict: Verdict, name: CheckName) -> Status:
    return next(c.status for c in verdict.checks if c.name == name)


def test_a_relay_nobody_dials_is_ready_while_an_mx_with_the_same_certificate_is_not(
    ca: Hierarchy, store: TrustStore, targets: dict[str, TargetConfig]
) -> None:
    relay = judged(ca, store, targets["relay"].policy)
    hostname = next(c for c in relay.checks if c.name == CheckName.HOSTNAME)
    assert hostname.status is Status.UNKNOWN
    assert "informational: judged as a relay" in hostname.message
    # what tlsprobe knows, not a claim about DNS it never looked up (an MX given to check with
    # --certificate-domain is a relay too until --hostname-check required says otherwise)
    assert "did not look up whether an MX points at it" in hostname.message
    assert "nobody dials" not in hostname.message
    assert max(c.status for c in relay.checks if c.status is not Status.UNKNOWN) is Status.OK
    assert relay.o365_ready

    mx = judged(ca, store, targets["mail"].policy)
    assert status(mx, CheckName.HOSTNAME) is Status.CRITICAL
    assert not mx.o365_ready
    # The weight is the operator's to set either way.
    assert (
        status(judged(ca, store, targets["strict"].policy), CheckName.HOSTNAME) is Status.CRITICAL
    )
    assert status(judged(ca, store, targets["lax"].policy), CheckName.HOSTNAME) is Status.UNKNOWN


def test_top_level_targets_and_the_cli_without_a_connector_keep_the_hostname_required(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - host: mx.example.test\n")
    (target,) = load_config(path).targets
    assert target.policy.hostname_required


OUTBOUND = {
    "encryption": OutboundRule("To relay", TlsSettings.ENCRYPTION_ONLY),
    "certificate": OutboundRule("To relay", TlsSettings.CERTIFICATE_VALIDATION),
    "domain": OutboundRule("To relay", TlsSettings.DOMAIN_VALIDATION, "*.contoso.test"),
    "other-domain": OutboundRule("To relay", TlsSettings.DOMAIN_VALIDATION, "fabrikam.test"),
    "smart-host": OutboundRule("To relay", TlsSettings.DOMAIN_VALIDATION),
}


@pytest.mark.parametrize(
    ("rule", "names", "trusted", "expected"),
    [
        ("encryption", ("anything.example",), False, Status.OK),
        ("certificate", ("anything.example",), True, Status.OK),
        ("certificate", ("anything.example",), False, Status.CRITICAL),
        ("domain", ("www.contoso.test",), True, Status.OK),
        ("domain", ("www.contoso.test",), False, Status.CRITICAL),
        ("other-domain", ("www.contoso.test",), True, Status.CRITICAL),
        ("smart-host", ("www.contoso.test",), True, Status.CRITICAL),
        ("smart-host", ("*.contoso.test",), True, Status.OK),
        ("smart-host", (RELAY,), True, Status.OK),
    ],
)
def test_the_outbound_connector_judges_by_its_tls_settings(
    ca: Hierarchy,
    store: TrustStore,
    rule: str,
    names: tuple[str, ...],
    trusted: bool,
    expected: Status,
) -> None:
    policy = Policy("*.contoso.test", ("contoso.test",), outbound=OUTBOUND[rule])
    # An unknown CA stands for an untrusted chain.
    issuer = ca if trusted else make_hierarchy("Unknown")
    verdict = judged(issuer, store, policy, names)
    check = next(c for c in verdict.checks if c.name == CheckName.OUTBOUND_CONNECTOR)
    assert check.status is expected, check.message
    assert check.message.startswith(f"outbound connector 'To relay' ({OUTBOUND[rule].rule})")
    assert verdict.o365_ready is (expected is Status.OK)


def test_encryption_only_is_ready_beside_a_red_chain_and_outputs_name_the_connector(
    ca: Hierarchy, store: TrustStore
) -> None:
    rule = OutboundRule("To contoso on-prem", TlsSettings.ENCRYPTION_ONLY)
    policy = Policy("*.contoso.test", ("contoso.test",), outbound=rule)
    leaf = leaf_of(make_hierarchy("Self"), ("www.contoso.test",))
    result = judge(
        Endpoint(RELAY),
        Capture("127.0.0.1", (leaf.der,), TLS13),
        policy,
        store,
        started_at=NOW.timestamp(),
        now=NOW,
    )
    assert result.status is Status.CRITICAL  # chain_trusted still reports the chain
    assert result.o365_ready
    assert result.readiness == (
        "ready for the outbound connector 'To contoso on-prem' (TlsSettings EncryptionOnly)"
    )
    doc = report.to_json(result)
    assert doc["o365_connector"] == {
        "direction": "outbound",
        "name": "To contoso on-prem",
        "rule": "TlsSettings EncryptionOnly",
    }
    assert doc["o365_failing"] == []


def test_not_ready_names_the_inbound_connector_and_the_failing_rule(
    ca: Hierarchy, store: TrustStore
) -> None:
    policy = Policy("*.fabrikam.test", ("fabrikam.test",), inbound_connector="From relay")
    leaf = leaf_of(ca, (RELAY,))
    result = judge(
        Endpoint(RELAY),
        Capture("127.0.0.1", tuple(c.public_bytes(Encoding.DER) for c in ca.chain(leaf)), TLS13),
        policy,
        store,
        started_at=NOW.timestamp(),
        now=NOW,
    )
    assert result.o365_failing == (CheckName.CERTIFICATE_DOMAIN,)
    assert result.readiness == (
        "NOT ready for the inbound connector 'From relay' (TlsSenderCertificateName "
        "*.fabrikam.test): certificate_domain fails"
    )
    assert "Office 365    NOT ready for the inbound connector 'From relay'" in report.human(
        result, NOW
    )


@pytest.mark.parametrize(
    ("argv", "required"),
    [
        (["--certificate-domain", "*.contoso.test"], False),  # a relay
        (["--accepted-domain", "contoso.test"], False),
        (["--certificate-domain", "*.contoso.test", "--hostname-check", "required"], True),
        ([], True),  # judged by no connector: any server, an MX
        (["--hostname-check", "informational"], False),
    ],
)
def test_tlsprobe_check_weighs_the_hostname_as_the_exporter_does(
    argv: list[str], required: bool
) -> None:
    from tlsprobe.cli.main import build_check, make_parser

    args = make_parser().parse_args(["check", RELAY, "--ehlo-name", "probe.test", *argv])
    _, policy, _ = build_check(args)
    assert policy.hostname_required is required


def test_readiness_without_a_connector_reads_as_a_sentence() -> None:
    """No connector known (a probe that failed before judging, as `tlsprobe check` of a name
    that does not resolve): "a certificate-based connector", never "the a ..."."""
    error = ProbeError(Reason.DNS, "cannot resolve")
    result = ProbeResult.failed(Endpoint(RELAY), error, started_at=NOW.timestamp())
    assert result.connector is None
    assert result.readiness.startswith("NOT ready for a certificate-based connector: "), (
        result.readiness
    )

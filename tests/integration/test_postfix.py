"""The probe and `tlsprobe check` against a real Postfix on loopback (started by .ci/postfix.sh).

The server is configured by `.ci/postfix.sh`, which prints the two environment variables read
here: TLSPROBE_TEST_POSTFIX (`127.0.0.1:10025`) and TLSPROBE_TEST_POSTFIX_CA (its test root).
Without them these tests skip, unless TLSPROBE_REQUIRE_POSTFIX=1 says this run must have them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gates import Gate, unavailable
from tlsprobe.model import Endpoint, Mode, Policy, Status
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.x509.evaluate import TrustStore

pytestmark = pytest.mark.postfix

HOST = "mail.tlsprobe.test"
POLICY = Policy(certificate_domain="*.tlsprobe.test", accepted_domains=("tlsprobe.test",))
TIMEOUT = 3.0


@dataclass(frozen=True)
class Postfix:
    address: str
    port: int
    ca_file: Path


@pytest.fixture(scope="module")
def postfix() -> Postfix:
    service = os.environ.get("TLSPROBE_TEST_POSTFIX")
    ca_file = os.environ.get("TLSPROBE_TEST_POSTFIX_CA")
    if not service or not ca_file:
        unavailable(
            Gate.POSTFIX,
            "TLSPROBE_TEST_POSTFIX / TLSPROBE_TEST_POSTFIX_CA unset (run .ci/postfix.sh)",
        )
    address, _, port = service.rpartition(":")
    return Postfix(address.strip("[]"), int(port), Path(ca_file))


def endpoint(postfix: Postfix) -> Endpoint:
    return Endpoint(
        host=HOST,
        port=postfix.port,
        address=postfix.address,
        sni=HOST,
        mode=Mode.STARTTLS,
        ehlo_name="probe.tlsprobe.test",
    )


async def test_probe_sees_leaf_and_intermediate(postfix: Postfix) -> None:
    trust = TrustStore.from_pem_file(postfix.ca_file)
    result = await probe_endpoint(endpoint(postfix), POLICY, trust, timeout=TIMEOUT)
    assert result.error is None, result.error
    assert result.status is Status.OK, [c for c in result.checks if c.status is not Status.OK]
    assert result.o365_ready
    assert result.tls is not None
    assert result.tls.version in {"TLSv1.2", "TLSv1.3"}
    leaf, intermediate = result.chain
    assert leaf.dns_names == (HOST,)
    assert not leaf.is_ca
    assert intermediate.is_ca
    assert leaf.issuer == intermediate.subject
    assert any(line.startswith("S: 220 ") and HOST in line for line in result.transcript)


async def test_probe_with_another_trust_store_is_untrusted(
    postfix: Postfix, trust: TrustStore
) -> None:
    # `trust` holds the root of the loopback tests, not Postfix's: the chain must not verify.
    result = await probe_endpoint(endpoint(postfix), POLICY, trust, timeout=TIMEOUT)
    chain_trusted = result.check("chain_trusted")
    assert chain_trusted is not None
    assert chain_trusted.status is Status.CRITICAL
    assert len(result.chain) == 2


def run_check(postfix: Postfix, certificate_domain: str) -> tuple[int, dict[str, object]]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlsprobe",
            "check",
            f"{HOST}:{postfix.port}",
            "--address",
            postfix.address,
            "--ca-file",
            str(postfix.ca_file),
            "--certificate-domain",
            certificate_domain,
            "--accepted-domain",
            "tlsprobe.test",
            "--ehlo-name",
            "probe.tlsprobe.test",
            "--timeout",
            str(TIMEOUT),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return completed.returncode, json.loads(completed.stdout)


def test_cli_ok_for_the_connector_domain(postfix: Postfix) -> None:
    code, report = run_check(postfix, "*.tlsprobe.test")
    assert code == 0, report
    assert report["status"] == "ok"
    assert report["o365_ready"] is True
    chain = report["chain"]
    assert isinstance(chain, list)
    assert len(chain) == 2
    assert chain[0]["dns_names"] == [HOST]
    tls = report["tls"]
    assert isinstance(tls, dict)
    assert tls["version"] in {"TLSv1.2", "TLSv1.3"}


def test_cli_critical_for_a_mismatching_connector_domain(postfix: Postfix) -> None:
    code, report = run_check(postfix, "*.fabrikam.test")
    assert code == 2, report
    assert report["status"] == "critical"
    assert report["o365_ready"] is False
    checks = report["checks"]
    assert isinstance(checks, list)
    statuses = {check["name"]: check["status"] for check in checks}
    assert statuses["certificate_domain"] == "critical"
    assert statuses["chain_trusted"] == "ok"
    assert isinstance(report["chain"], list)
    assert len(report["chain"]) == 2

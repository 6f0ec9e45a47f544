"""The probe against real loopback SMTP servers: hostile ones, broken ones and healthy ones.

Each test starts a scripted server (tests/support/servers.py) presenting certificates made for the
test (tests/support/pki.py) and runs the real probe over a real socket. Hostile servers must end in
the verdict the README's "Reliability and security" section gives them, within the probe's timeout
plus one second; broken certificates must be judged critical with the whole chain still reported;
the `tlsprobe check` command is run as a subprocess for its exit codes and JSON.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.expected import REPORT_CHAIN_KEYS, SERVER_CHECKS
from tests.support.gates import Gate, unavailable
from tests.support.pki import (
    Hierarchy,
    Issued,
    KeyKind,
    make_hierarchy,
    make_intermediate,
    make_leaf,
)
from tests.support.servers import (
    Behaviour,
    ServerTls,
    SmtpTestServer,
    check_argv,
    ipv6_loopback_available,
    unused_port,
)
from tlsprobe.model import Endpoint, Mode, Policy, ProbeResult, Reason, Status
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.x509.evaluate import TrustStore

HOST = "mail.contoso.test"
EHLO = "probe.test"
TIMEOUT = 2.0
SHORT_TIMEOUT = 0.5
"""For servers that never answer: the verdict is the same, and the test waits less."""
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))


def endpoint(
    port: int,
    *,
    address: str = "127.0.0.1",
    mode: Mode = Mode.STARTTLS,
    sni: str | None = HOST,
) -> Endpoint:
    return Endpoint(host=HOST, port=port, address=address, sni=sni, mode=mode, ehlo_name=EHLO)


async def timed_probe(
    target: Endpoint, trust: TrustStore, policy: Policy = POLICY, timeout: float = TIMEOUT
) -> tuple[ProbeResult, float]:
    start = time.monotonic()
    result = await probe_endpoint(target, policy, trust, timeout=timeout)
    return result, time.monotonic() - start


async def probe(
    server: SmtpTestServer, trust: TrustStore, timeout: float = TIMEOUT, **options: Any
) -> ProbeResult:
    result, elapsed = await timed_probe(endpoint(server.port, **options), trust, timeout=timeout)
    assert elapsed < timeout + 1.0
    return result


def fingerprints(result: ProbeResult) -> list[str]:
    return [facts.sha256 for facts in result.chain]


def sent(*certs: Issued) -> list[str]:
    return [issued.sha256 for issued in certs]


def check_status(result: ProbeResult, name: str) -> Status:
    check = result.check(name)
    assert check is not None, f"no {name} check in {[c.name for c in result.checks]}"
    return check.status


def serving(chain: Sequence[Issued], **options: Any) -> SmtpTestServer:
    """A server sending `chain` (leaf first) in that order; `tls=` ServerTls options."""
    tls = ServerTls([c.cert for c in chain], chain[0].key, **options.pop("tls", {}))
    return SmtpTestServer(tls, **options)


@pytest.fixture(scope="module")
def good_leaf(pki: Hierarchy) -> Issued:
    return pki.leaf((HOST, "contoso.test"))


# -- hostile servers ---------------------------------------------------------------------------

HOSTILE = [
    (Behaviour.SILENT, Status.UNKNOWN, Reason.TIMEOUT),
    (Behaviour.DRIP, Status.UNKNOWN, Reason.TIMEOUT),
    (Behaviour.GREETING_421, Status.UNKNOWN, Reason.THROTTLED),
    (Behaviour.STARTTLS_454, Status.CRITICAL, Reason.STARTTLS_REJECTED),
    (Behaviour.NO_STARTTLS, Status.CRITICAL, Reason.NO_STARTTLS),
    (Behaviour.INJECT_AFTER_220, Status.CRITICAL, Reason.PROTOCOL),
    (Behaviour.LONG_LINE, Status.CRITICAL, Reason.PROTOCOL),
    (Behaviour.CLOSE_AFTER_220, Status.CRITICAL, Reason.TLS_HANDSHAKE),
    (Behaviour.CLOSE_IN_HANDSHAKE, Status.CRITICAL, Reason.TLS_HANDSHAKE),
    (Behaviour.GARBAGE_HANDSHAKE, Status.CRITICAL, Reason.TLS_HANDSHAKE),
]


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"), HOSTILE, ids=[b.value for b, _, _ in HOSTILE]
)
async def test_hostile_server_verdict_within_timeout(
    behaviour: Behaviour,
    status: Status,
    reason: Reason,
    pki: Hierarchy,
    good_leaf: Issued,
    trust: TrustStore,
) -> None:
    timeout = SHORT_TIMEOUT if reason is Reason.TIMEOUT else TIMEOUT
    async with serving([good_leaf, pki.intermediate], behaviour=behaviour) as server:
        result = await probe(server, trust, timeout=timeout)
    assert (result.status, result.error and result.error.kind) == (status, reason), result.error
    assert result.chain == ()
    assert not result.o365_ready
    assert not result.success


async def test_response_injection_never_reaches_the_handshake(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf], behaviour=Behaviour.INJECT_AFTER_220) as server:
        result = await probe(server, trust)
    assert "STARTTLS" in [c.upper() for c in server.commands]
    assert not server.after_starttls.startswith(b"\x16"), "TLS started over injected bytes"
    assert result.error is not None
    assert "inject" in result.error.message


async def test_starttls_refused_is_reported_as_a_failed_starttls_check(
    good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf], behaviour=Behaviour.STARTTLS_454) as server:
        result = await probe(server, trust)
    assert check_status(result, "starttls") is Status.CRITICAL


async def test_connection_refused_is_unknown(trust: TrustStore) -> None:
    result = await probe_refused(trust)
    assert result.status is Status.UNKNOWN
    assert result.error is not None
    assert result.error.kind is Reason.REFUSED


async def probe_refused(trust: TrustStore) -> ProbeResult:
    result, elapsed = await timed_probe(endpoint(unused_port()), trust)
    assert elapsed < 1.0, "a refused connection must not wait for the timeout"
    return result


async def test_accept_then_close_is_not_healthy(good_leaf: Issued, trust: TrustStore) -> None:
    async with serving([good_leaf], behaviour=Behaviour.ACCEPT_CLOSE) as server:
        result = await probe(server, trust)
    # No documented case names this: the endpoint is reachable but speaks no SMTP, which
    # is an SMTP protocol failure of the endpoint (critical), not a reachability problem.
    assert result.error is not None
    assert result.error.kind is Reason.PROTOCOL
    assert result.status is Status.CRITICAL
    assert result.chain == ()


async def test_silent_server_stops_on_time_with_a_shorter_timeout(
    good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf], behaviour=Behaviour.SILENT) as server:
        start = time.monotonic()
        result = await probe_endpoint(endpoint(server.port), POLICY, trust, timeout=0.5)
        elapsed = time.monotonic() - start
    assert result.error is not None
    assert result.error.kind is Reason.TIMEOUT
    assert 0.4 < elapsed < 1.5
    # An implicit-TLS probe gets no hint about implicit TLS.
    async with serving([good_leaf], behaviour=Behaviour.SILENT) as server:
        implicit = await probe_endpoint(
            endpoint(server.port, mode=Mode.IMPLICIT), POLICY, trust, timeout=0.3
        )
    assert implicit.error is not None and "implicit" not in implicit.error.message


# -- healthy and broken certificates -----------------------------------------------------------


async def test_healthy_chain_is_ok_and_o365_ready(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert result.error is None
    assert result.status is Status.OK, [c for c in result.checks if c.status is not Status.OK]
    assert result.o365_ready
    assert result.success
    assert fingerprints(result) == sent(good_leaf, pki.intermediate)
    assert result.tls is not None
    assert result.tls.version in {"TLSv1.2", "TLSv1.3"}
    assert {c.name for c in result.checks} >= set(SERVER_CHECKS)
    assert server.server_names == [HOST]
    assert server.handshakes == 1
    assert server.commands[:2] == [f"EHLO {EHLO}", "STARTTLS"]


async def test_no_sni_sends_no_server_name(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf, pki.intermediate]) as server:
        result = await probe(server, trust, sni=None)
    assert result.status is Status.OK
    assert server.server_names == [None]


async def test_expired_leaf_is_critical_and_still_reported(
    pki: Hierarchy, trust: TrustStore
) -> None:
    now = datetime.now(UTC)
    leaf = pki.leaf(
        (HOST,), not_before=now - timedelta(days=100), not_after=now - timedelta(days=2)
    )
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert result.status is Status.CRITICAL
    assert check_status(result, "not_expired") is Status.CRITICAL
    assert not result.o365_ready
    assert fingerprints(result) == sent(leaf, pki.intermediate)
    assert result.chain[0].not_after < now


async def test_not_yet_valid_leaf_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    now = datetime.now(UTC)
    leaf = pki.leaf((HOST,), not_before=now + timedelta(days=2), days=90)
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "not_expired") is Status.CRITICAL
    assert fingerprints(result) == sent(leaf, pki.intermediate)


@pytest.mark.parametrize(("days_left", "status"), [(10, Status.WARNING), (3, Status.CRITICAL)])
async def test_expiry_thresholds(
    days_left: int, status: Status, pki: Hierarchy, trust: TrustStore
) -> None:
    now = datetime.now(UTC)
    leaf = pki.leaf(
        (HOST,), not_before=now - timedelta(days=80), not_after=now + timedelta(days=days_left)
    )
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "not_expired") is status
    assert result.status is status


async def test_self_signed_leaf_is_untrusted(trust: TrustStore) -> None:
    leaf = make_leaf(None, (HOST,))
    async with serving([leaf]) as server:
        result = await probe(server, trust)
    assert result.status is Status.CRITICAL
    assert check_status(result, "chain_trusted") is Status.CRITICAL
    assert not result.o365_ready
    assert fingerprints(result) == sent(leaf)
    assert result.chain[0].self_issued


async def test_private_root_is_untrusted(trust: TrustStore) -> None:
    private = make_hierarchy("Private Untrusted")
    leaf = private.leaf((HOST,))
    async with serving([leaf, private.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "chain_trusted") is Status.CRITICAL
    assert result.status is Status.CRITICAL
    assert fingerprints(result) == sent(leaf, private.intermediate)


async def test_private_root_sent_along_is_still_untrusted(trust: TrustStore) -> None:
    private = make_hierarchy("Private Untrusted")
    leaf = private.leaf((HOST,))
    async with serving([leaf, private.intermediate, private.root]) as server:
        result = await probe(server, trust)
    assert check_status(result, "chain_trusted") is Status.CRITICAL
    assert len(result.chain) == 3


async def test_missing_intermediate_is_named(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf]) as server:
        result = await probe(server, trust)
    chain_check = result.check("chain_trusted")
    assert chain_check is not None
    assert chain_check.status is Status.CRITICAL
    assert "intermediate" in chain_check.message.lower()
    assert not result.o365_ready
    assert fingerprints(result) == sent(good_leaf)


async def test_expired_intermediate_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    now = datetime.now(UTC)
    stale = make_intermediate(
        pki.root,
        "Contoso Test Stale Intermediate CA",
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    leaf = make_leaf(stale, (HOST,), not_before=now - timedelta(days=30))
    async with serving([leaf, stale]) as server:
        result = await probe(server, trust)
    assert result.status is Status.CRITICAL
    assert check_status(result, "not_expired") is Status.CRITICAL
    assert not result.o365_ready
    assert fingerprints(result) == sent(leaf, stale)


async def test_wrong_name_fails_the_connector(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf(("mail.fabrikam.test",))
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "certificate_domain") is Status.CRITICAL
    assert check_status(result, "hostname") is not Status.OK
    assert check_status(result, "chain_trusted") is Status.OK
    assert result.status is Status.CRITICAL
    assert result.chain[0].dns_names == ("mail.fabrikam.test",)


async def test_cn_only_certificate_warns_on_hostname(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf((), common_name=HOST)
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "hostname") is Status.WARNING
    assert result.chain[0].dns_names == ()


async def test_sha1_signature_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf((HOST,), signature_hash="sha1")
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "signature_algorithm") is Status.CRITICAL
    assert result.status is Status.CRITICAL
    assert result.chain[0].signature_hash == "sha1"
    assert fingerprints(result) == sent(leaf, pki.intermediate)


async def test_rsa_1024_key_is_critical(pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf((HOST,), key=KeyKind.RSA1024)
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "key_strength") is Status.CRITICAL
    assert result.chain[0].key == "RSA 1024"
    assert fingerprints(result) == sent(leaf, pki.intermediate)


@pytest.mark.parametrize("kind", [KeyKind.EC_P256, KeyKind.EC_P384])
async def test_ec_keys_are_fine(kind: KeyKind, pki: Hierarchy, trust: TrustStore) -> None:
    leaf = pki.leaf((HOST,), key=kind)
    async with serving([leaf, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert result.status is Status.OK
    assert result.chain[0].key_type == "EC"
    assert check_status(result, "key_strength") is Status.OK


async def test_tls_10_only_server_is_critical_with_chain(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    tls10 = {"minimum_version": ssl.TLSVersion.TLSv1, "maximum_version": ssl.TLSVersion.TLSv1}
    async with serving([good_leaf, pki.intermediate], tls=tls10) as server:
        result = await probe(server, trust)
    assert result.tls is not None
    assert result.tls.version == "TLSv1"
    assert check_status(result, "tls_version") is Status.CRITICAL
    assert result.status is Status.CRITICAL
    assert not result.o365_ready
    assert fingerprints(result) == sent(good_leaf, pki.intermediate)


async def test_tls_12_is_accepted(pki: Hierarchy, good_leaf: Issued, trust: TrustStore) -> None:
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    async with serving([good_leaf, pki.intermediate], tls=tls12) as server:
        result = await probe(server, trust)
    assert result.tls is not None
    assert result.tls.version == "TLSv1.2"
    assert result.status is Status.OK


async def test_ipv6_loopback(pki: Hierarchy, good_leaf: Issued, trust: TrustStore) -> None:
    if not ipv6_loopback_available():
        unavailable(Gate.IPV6, "::1 cannot be bound here")
    async with serving([good_leaf, pki.intermediate], host="::1") as server:
        result = await probe(server, trust, address="::1")
    assert result.status is Status.OK
    assert result.address == "::1"
    assert fingerprints(result) == sent(good_leaf, pki.intermediate)


async def test_implicit_tls(pki: Hierarchy, good_leaf: Issued, trust: TrustStore) -> None:
    async with serving([good_leaf, pki.intermediate], implicit=True) as server:
        result = await probe(server, trust, mode=Mode.IMPLICIT)
    assert result.status is Status.OK
    assert result.o365_ready
    assert check_status(result, "starttls") is Status.OK
    assert fingerprints(result) == sent(good_leaf, pki.intermediate)
    assert "STARTTLS" not in server.commands
    assert server.server_names == [HOST]


async def test_starttls_probe_of_implicit_port_fails(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf, pki.intermediate], implicit=True) as server:
        result = await probe_endpoint(endpoint(server.port), POLICY, trust, timeout=0.5)
    # The server waits for a ClientHello and the probe for a greeting: nothing is learnt, but
    # the verdict says what the silence most likely means.
    assert result.error is not None
    assert result.error.kind is Reason.TIMEOUT
    assert result.chain == ()
    assert "may expect implicit TLS (target `mode: implicit`" in result.error.message


@dataclass(frozen=True)
class DemandsClientCertificate(ServerTls):
    """A server that fails the handshake after sending its own certificate: it requires a
    client certificate the probe does not have (TLS 1.2: the failure comes inside the
    handshake, after the server's Certificate message)."""

    def context(self, server_names: list[str | None]) -> ssl.SSLContext:
        ctx = super().context(server_names)
        ctx.verify_mode = ssl.CERT_REQUIRED
        last = self.chain[-1]
        assert isinstance(last, x509.Certificate)
        ctx.load_verify_locations(cadata=last.public_bytes(Encoding.PEM).decode())
        return ctx


async def test_chain_is_reported_when_the_server_fails_the_handshake_after_sending_it(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    tls = DemandsClientCertificate(
        [good_leaf.cert, pki.intermediate.cert],
        good_leaf.key,
        maximum_version=ssl.TLSVersion.TLSv1_2,
    )
    async with SmtpTestServer(tls) as server:
        result = await probe(server, trust)
    assert result.error is not None
    assert result.error.kind is Reason.TLS_HANDSHAKE
    assert result.status is Status.CRITICAL
    assert not result.success
    # What the server sent before failing, as `openssl s_client` would show it.
    assert fingerprints(result) == sent(good_leaf, pki.intermediate)


async def test_chain_out_of_order_with_root_is_trusted_and_shown_as_sent(
    pki: Hierarchy, good_leaf: Issued, trust: TrustStore
) -> None:
    async with serving([good_leaf, pki.root, pki.intermediate]) as server:
        result = await probe(server, trust)
    assert check_status(result, "chain_trusted") is Status.OK
    assert result.status is Status.OK
    assert fingerprints(result) == sent(good_leaf, pki.root, pki.intermediate)


# -- the command line, as a subprocess ---------------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tlsprobe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def cli_args(port: int, ca_file: Path, *extra: str) -> list[str]:
    connector = ["--certificate-domain", "*.contoso.test", "--accepted-domain", "contoso.test"]
    return [*check_argv(HOST, port, ca_file, EHLO, TIMEOUT), *connector, *extra]


async def test_cli_json_for_a_healthy_server(
    pki: Hierarchy, good_leaf: Issued, ca_file: Path
) -> None:
    async with serving([good_leaf, pki.intermediate]) as server:
        code, out, err = await run_cli(*cli_args(server.port, ca_file, "--json"))
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "ok"
    assert report["error"] is None
    assert report["o365_ready"] is True
    assert report["tls"]["version"] in {"TLSv1.2", "TLSv1.3"}
    assert report["tls"]["cipher"]
    assert [c["sha256"] for c in report["chain"]] == sent(good_leaf, pki.intermediate)
    assert set(report["chain"][0]) >= REPORT_CHAIN_KEYS
    assert report["chain"][0]["dns_names"] == [HOST, "contoso.test"]
    assert {c["name"]: c["status"] for c in report["checks"]}["chain_trusted"] == "ok"
    assert all(set(c) >= {"name", "status", "message"} for c in report["checks"])
    assert isinstance(report["target"], dict)
    assert isinstance(report["phases"], dict)
    assert report["phases"]["total"] > 0


async def test_cli_exit_code_warning(pki: Hierarchy, ca_file: Path) -> None:
    now = datetime.now(UTC)
    leaf = pki.leaf((HOST,), not_before=now - timedelta(days=60), not_after=now + timedelta(10))
    async with serving([leaf, pki.intermediate]) as server:
        code, out, err = await run_cli(*cli_args(server.port, ca_file))
    assert code == 1, out + err


async def test_cli_exit_code_critical_for_missing_intermediate(
    good_leaf: Issued, ca_file: Path
) -> None:
    async with serving([good_leaf]) as server:
        code, out, err = await run_cli(*cli_args(server.port, ca_file, "--json"))
    assert code == 2, err
    report = json.loads(out)
    assert report["status"] == "critical"
    assert report["o365_ready"] is False
    assert len(report["chain"]) == 1


async def test_cli_exit_code_unknown_for_refused(ca_file: Path) -> None:
    code, out, err = await run_cli(*cli_args(unused_port(), ca_file, "--json"))
    assert code == 3, err
    report = json.loads(out)
    assert report["status"] == "unknown"
    assert report["error"]["kind"] == "refused"
    assert report["chain"] == []


async def test_cli_exit_code_critical_without_starttls(good_leaf: Issued, ca_file: Path) -> None:
    async with serving([good_leaf], behaviour=Behaviour.NO_STARTTLS) as server:
        code, out, err = await run_cli(*cli_args(server.port, ca_file, "--json"))
    assert code == 2, err
    assert json.loads(out)["error"]["kind"] == "no_starttls"

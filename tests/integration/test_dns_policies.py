"""DANE and MTA-STS against real components: NSD serving a zone signed at test time, Unbound
validating it on loopback, loopback SMTP servers presenting test certificates, and a real
HTTPS policy server on port 443 of a loopback address that the zone's `mta-sts.*` A records
name (the policy host is resolved through the same validating resolver as everything else).
Every case the README documents gives its verdict here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dns.asyncresolver
import pytest
from cryptography import x509

from tests.support import dnslab
from tests.support.gates import Gate, unavailable
from tests.support.pki import Hierarchy, Issued, KeyKind, make_hierarchy, make_leaf
from tests.support.policyserver import PolicyServer, Response, random_address
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tlsprobe.cli.main import main as cli_main
from tlsprobe.model import DnssecStatus, Endpoint, Policy, ProbeResult, Status, TlsaMatch
from tlsprobe.probe import policies
from tlsprobe.probe.dns import dnssec, mtasts
from tlsprobe.probe.dns.dane import association
from tlsprobe.probe.x509.evaluate import TrustStore

Z = "dane.test"
CASES = (
    "ok",
    "rotated",
    "single",
    "ta",
    "renewed311",
    "renewed301",
    "pkix",
    "malformed",
    "bogus",
    "none",
    "loop",
)


def tlsa(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> str:
    data = association(cert, selector, mtype)
    assert data is not None
    return f"{usage} {selector} {mtype} {data.hex()}"


class Lab:
    def __init__(self, pki: Hierarchy, dns: dnslab.DnsLab) -> None:
        self.dns = dns
        self.ports = {case: unused_port() for case in (*CASES, "child")}
        self.current = {case: pki.leaf([f"{case}.{Z}"]) for case in CASES}
        self.current["child"] = pki.leaf([f"mx.insecure.{Z}"])
        self.next_key = pki.leaf([f"ok.{Z}"], key=KeyKind.EC_P256)
        self.intermediate = pki.intermediate.cert
        self.root = pki.root.cert
        self.sts_address = random_address()
        """Where the policy server listens (port 443) and `mta-sts.*` points."""

    def host(self, case: str) -> str:
        return f"mx.insecure.{Z}" if case == "child" else f"{case}.{Z}"

    def records(self) -> list[str]:
        c = self.current
        owner = {case: f"_{self.ports[case]}._tcp.{case}" for case in CASES}
        lines = [f"{case} A 127.0.0.1" for case in CASES]
        lines += [
            f"{owner['ok']} TLSA {tlsa(3, 1, 1, c['ok'].cert)}",
            f"{owner['ok']} TLSA {tlsa(3, 1, 1, self.next_key.cert)}",
            f"{owner['rotated']} TLSA {tlsa(3, 1, 1, c['rotated'].cert)}",
            f"{owner['rotated']} TLSA {tlsa(3, 1, 1, self.next_key.cert)}",
            f"{owner['single']} TLSA {tlsa(3, 1, 1, c['single'].cert)}",
            f"{owner['ta']} TLSA {tlsa(2, 1, 1, self.intermediate)}",
            f"{owner['ta']} TLSA {tlsa(3, 1, 1, c['ta'].cert)}",
            f"{owner['renewed311']} TLSA {tlsa(3, 1, 1, c['renewed311'].cert)}",
            f"{owner['renewed311']} TLSA {tlsa(2, 1, 1, self.intermediate)}",
            f"{owner['renewed301']} TLSA {tlsa(3, 0, 1, c['renewed301'].cert)}",
            f"{owner['pkix']} TLSA {tlsa(1, 1, 1, c['pkix'].cert)}",
            f"{owner['pkix']} TLSA {tlsa(0, 1, 1, self.root)}",
            f"{owner['malformed']} TLSA 3 1 7 {'ab' * 20}",
            f"{owner['bogus']} TLSA {tlsa(3, 1, 1, c['bogus'].cert)}",
            f"{owner['loop']} CNAME loop2",
            f"loop2 CNAME {owner['loop']}",
            "@ MX 10 ok",
            *sts_records(),
            *(f"mta-sts.{d} A {self.sts_address}" for d in STS_DOMAINS),
        ]
        return lines

    def child_records(self) -> list[str]:
        return [
            "mx A 127.0.0.1",
            f"_{self.ports['child']}._tcp.mx TLSA {tlsa(3, 1, 1, self.current['child'].cert)}",
        ]

    def publish(self, extra: list[str] | None = None) -> None:
        self.dns.publish(
            [*self.records(), *(extra or [])],
            child=self.child_records(),
            corrupt=[f"_{self.ports['bogus']}._tcp.bogus"],
            malformed={
                f"_{self.ports['malformed']}._tcp.malformed": bytes([3, 1, 1]) + b"\xab" * 20
            },
        )

    def resolver(self) -> dns.asyncresolver.Resolver:
        return dnssec.make_validating_resolver(["127.0.0.1"], port=self.dns.port, timeout=5.0)


STS_DOMAINS = ("enforce", "testing", "big", "redirect", "badcert")


def sts_records(policy_id: str = "1") -> list[str]:
    # `nohost` announces a policy but publishes no mta-sts host.
    return [f'_mta-sts.{d} TXT "v=STSv1; id={policy_id};"' for d in (*STS_DOMAINS, "nohost")] + [
        f'_smtp._tls.enforce TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{Z}"'
    ]


@pytest.fixture(scope="module")
def lab(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not dnslab.available():
        unavailable(Gate.DNSLAB, "nsd and unbound are not installed (Debian: nsd, unbound)")
    dns = dnslab.DnsLab(tmp_path_factory.mktemp("dnslab"))
    state = Lab(pki, dns)
    state.publish()
    with dns:
        yield state


async def probe(
    lab: Lab,
    case: str,
    trust: TrustStore,
    served: Issued | None = None,
    *,
    sts: mtasts.DomainPolicy | None = None,
    chain: tuple[x509.Certificate, ...] | None = None,
) -> ProbeResult:
    leaf = served or lab.current[case]
    sent = chain or (leaf.cert, lab.intermediate)
    server = SmtpTestServer(ServerTls(sent, leaf.key), port=lab.ports[case])
    async with server:
        endpoint = Endpoint(lab.host(case), port=lab.ports[case], address="127.0.0.1")
        context = policies.DaneContext(lab.resolver(), next_hop=Z, mx_status=DnssecStatus.SECURE)
        return await policies.probe_with_policies(
            endpoint, Policy(), trust, timeout=10.0, dane_context=context, sts=sts
        )


def dane_status(result: ProbeResult) -> tuple[Status | None, tuple[TlsaMatch, ...]]:
    check = result.check("dane")
    # Sorted: the order of records in an answer means nothing.
    matches = tuple(sorted(v.match for v in result.dane.records)) if result.dane else ()
    return (check.status if check else None), matches


async def test_3_1_1_current_and_next_is_ok(lab: Lab, trust: TrustStore) -> None:
    result = await probe(lab, "ok", trust)
    assert result.dane is not None and result.dane.status is DnssecStatus.SECURE
    assert dane_status(result) == (
        Status.OK,
        tuple(sorted((TlsaMatch.MATCHED, TlsaMatch.NEXT_KEY))),
    )


async def test_rotated_key_without_tlsa_update_is_critical(
    lab: Lab, pki: Hierarchy, trust: TrustStore
) -> None:
    before = await probe(lab, "rotated", trust)
    assert dane_status(before)[0] is Status.OK
    # A renewal under a key neither published record covers.
    fresh = make_leaf(pki.intermediate, [f"rotated.{Z}"], key=KeyKind.EC_P384)
    after = await probe(lab, "rotated", trust, served=fresh)
    status, matches = dane_status(after)
    assert status is Status.CRITICAL and matches == (TlsaMatch.NO_MATCH, TlsaMatch.NO_MATCH)
    assert after.status is Status.CRITICAL
    check = after.check("dane")
    spki = association(fresh.cert, 1, 1)
    assert check is not None and spki is not None and spki.hex() in check.message


async def test_a_single_key_warns_about_rollover(lab: Lab, trust: TrustStore) -> None:
    assert dane_status(await probe(lab, "single", trust)) == (Status.WARNING, (TlsaMatch.MATCHED,))


async def test_2_1_1_on_the_intermediate(lab: Lab, trust: TrustStore) -> None:
    result = await probe(lab, "ta", trust)
    assert dane_status(result) == (Status.OK, (TlsaMatch.MATCHED, TlsaMatch.MATCHED))
    # Without the intermediate in the chain sent, DANE-TA cannot match (RFC 7672 3.1.2).
    alone = await probe(lab, "ta", trust, chain=(lab.current["ta"].cert,))
    assert dane_status(alone)[1] == tuple(sorted((TlsaMatch.MATCHED, TlsaMatch.NO_MATCH)))
    assert alone.dane is not None
    note = next(v.note for v in alone.dane.records if v.match is TlsaMatch.NO_MATCH)
    assert "no certificate the server sent" in note


async def test_renewal_with_the_same_key(lab: Lab, pki: Hierarchy, trust: TrustStore) -> None:
    """3 1 1 pins the key and survives; 3 0 1 pins the certificate and breaks (RFC 7671 5.1)."""
    renewed = pki.leaf(["renewed311.dane.test"], days=200)
    result = await probe(lab, "renewed311", trust, served=renewed)
    assert dane_status(result) == (Status.OK, (TlsaMatch.MATCHED, TlsaMatch.MATCHED))
    renewed = pki.leaf(["renewed301.dane.test"], days=200)
    result = await probe(lab, "renewed301", trust, served=renewed)
    assert dane_status(result) == (Status.CRITICAL, (TlsaMatch.NO_MATCH,))


async def test_only_pkix_usages_and_malformed_records(lab: Lab, trust: TrustStore) -> None:
    pkix = await probe(lab, "pkix", trust)
    assert dane_status(pkix) == (Status.WARNING, (TlsaMatch.UNUSABLE,) * 2)
    malformed = await probe(lab, "malformed", trust)
    # A digest of the wrong length and an unknown matching type: both unusable, both shown.
    assert dane_status(malformed) == (Status.WARNING, (TlsaMatch.UNUSABLE,) * 2), malformed.check(
        "dane"
    )
    assert malformed.dane is not None and malformed.dane.status is DnssecStatus.SECURE
    notes = sorted(v.note for v in malformed.dane.records)
    assert notes[0].startswith("malformed") and "unknown matching type" in notes[1]


async def test_bogus_signature_is_critical_with_the_extended_error(
    lab: Lab, trust: TrustStore
) -> None:
    result = await probe(lab, "bogus", trust)
    assert result.dane is not None and result.dane.status is DnssecStatus.BOGUS
    assert result.dane.applicable  # validating senders defer: DANE decides, it applies
    check = result.check("dane")
    assert check is not None and check.status is Status.CRITICAL
    assert "EDE 6" in check.message and "defer every message" in check.message
    # Validating senders defer all mail to this MX (RFC 7672 2.1.1): the endpoint is down.
    assert result.status is Status.CRITICAL


async def test_cli_reports_a_bogus_answer_as_critical_in_text_and_json(
    lab: Lab, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, data = await run_check(lab, "bogus", ca_file, capsys)
    assert code == 2, text
    assert text.startswith("TLSPROBE CRITICAL") and "bogus" in text.splitlines()[0]
    assert "not applicable" not in text
    assert data["status"] == "critical"
    assert data["dane"]["dnssec"] == "bogus" and data["dane"]["applicable"] is True
    assert {c["name"]: c["status"] for c in data["checks"]}["dane"] == "critical"


async def test_a_cname_loop_at_the_tlsa_owner_is_a_named_failed_lookup(
    lab: Lab, trust: TrustStore
) -> None:
    """Unbound answers a loop with a bare SERVFAIL: not bogus (it fails with checking disabled
    too), and never "not applicable"."""
    result = await probe(lab, "loop", trust)
    owner = f"_{lab.ports['loop']}._tcp.loop.{Z}"
    assert result.dane is not None and result.dane.status is DnssecStatus.FAILED
    assert result.dane.applicable is False and result.dane.detail == (
        f"CNAME loop at {owner}: {owner} -> loop2.{Z} -> {owner}"
    )
    check = result.check("dane")
    assert check is not None and check.status is Status.UNKNOWN
    assert "CNAME loop" in check.message
    assert result.status is Status.UNKNOWN


async def test_insecure_delegation_is_a_warning(lab: Lab, trust: TrustStore) -> None:
    result = await probe(lab, "child", trust)
    assert result.dane is not None and result.dane.status is DnssecStatus.INSECURE
    assert dane_status(result)[0] is Status.WARNING


async def test_no_tlsa_is_not_applicable(lab: Lab, trust: TrustStore) -> None:
    result = await probe(lab, "none", trust)
    assert result.check("dane") is None
    assert result.dane is not None and not result.dane.applicable
    assert result.dane.status is DnssecStatus.SECURE  # a secure denial of existence


async def test_mx_status_comes_from_the_resolver(lab: Lab) -> None:
    assert await policies.mx_status(lab.resolver(), Z) is DnssecStatus.SECURE
    assert await policies.mx_status(lab.resolver(), f"insecure.{Z}") is DnssecStatus.INSECURE


# --- MTA-STS ---------------------------------------------------------------------------------

ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: ok.dane.test\r\nmax_age: 86400\r\n"


@pytest.fixture
async def sts_server(lab: Lab, pki: Hierarchy, ca_file: Path) -> AsyncIterator[PolicyServer]:
    server = PolicyServer(pki, [f"{d}.{Z}" for d in STS_DOMAINS], ca_file, lab.sts_address)
    server.responses = {
        f"mta-sts.enforce.{Z}": Response(ENFORCE),
        f"mta-sts.testing.{Z}": Response(ENFORCE.replace(b"enforce", b"testing")),
        f"mta-sts.big.{Z}": Response(ENFORCE + b"#" * (mtasts.MAX_POLICY_BYTES + 10)),
        f"mta-sts.redirect.{Z}": Response(status=301, location="https://elsewhere.test/x"),
    }
    async with server:
        yield server


async def domain(lab: Lab, server: PolicyServer, name: str) -> mtasts.DomainPolicy:
    return await policies.domain_policy(
        f"{name}.{Z}", lab.resolver(), server.settings(), timeout=5.0
    )


async def test_enforce_policy_ok_and_mx_outside_the_patterns(
    lab: Lab, sts_server: PolicyServer, trust: TrustStore
) -> None:
    sts = await domain(lab, sts_server, "enforce")
    assert sts.policy is not None and sts.policy.mode is mtasts.StsMode.ENFORCE, sts.error
    assert sts.policy_id == "1" and sts.tlsrpt_rua == (f"mailto:tlsrpt@{Z}",)
    ok = await probe(lab, "ok", trust, sts=sts)
    ok_check = ok.check("mta_sts")
    assert ok_check is not None and ok_check.status is Status.OK
    outside = await probe(lab, "single", trust, sts=sts)
    check = outside.check("mta_sts")
    assert check is not None and check.status is Status.CRITICAL
    assert "matches no mx pattern" in check.message


async def test_testing_policy_is_a_warning(
    lab: Lab, sts_server: PolicyServer, trust: TrustStore
) -> None:
    sts = await domain(lab, sts_server, "testing")
    result = await probe(lab, "single", trust, sts=sts)
    check = result.check("mta_sts")
    assert check is not None and check.status is Status.WARNING


@pytest.mark.parametrize(("name", "words"), [("big", "larger than"), ("redirect", "redirect")])
async def test_oversize_and_redirected_policies_are_refused(
    lab: Lab, sts_server: PolicyServer, name: str, words: str
) -> None:
    sts = await domain(lab, sts_server, name)
    assert sts.policy is None and sts.policy_id == "1"
    assert words in sts.error
    assert "elsewhere" not in "".join(sts_server.requests)


async def test_a_policy_host_that_does_not_resolve_is_a_fetch_failure(
    lab: Lab, sts_server: PolicyServer
) -> None:
    sts = await domain(lab, sts_server, "nohost")
    assert sts.policy is None and sts.policy_id == "1"
    assert sts.error.startswith(f"policy host mta-sts.nohost.{Z}: "), sts.error
    assert sts_server.requests == []


async def test_untrusted_policy_server_is_refused(lab: Lab, pki: Hierarchy, tmp_path: Path) -> None:
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(make_hierarchy("Other").ca_pem)
    server = PolicyServer(pki, [f"badcert.{Z}"], other_ca, lab.sts_address)
    server.responses = {f"mta-sts.badcert.{Z}": Response(ENFORCE)}
    async with server:
        sts = await domain(lab, server, "badcert")
    assert sts.policy is None and "certificate" in sts.error


async def test_txt_id_change_without_policy_change_is_a_finding(
    lab: Lab, sts_server: PolicyServer
) -> None:
    before = await domain(lab, sts_server, "enforce")
    records = [r for r in lab.records() if not r.startswith("_mta-sts.")]
    lab.dns.publish(
        [*records, *[r for r in sts_records("2") if r.startswith("_mta-sts.")]],
        child=lab.child_records(),
        corrupt=[f"_{lab.ports['bogus']}._tcp.bogus"],
    )
    try:
        after = await domain(lab, sts_server, "enforce")
    finally:
        lab.publish()
    assert after.policy_id == "2"
    assert "but the policy did not" in mtasts.compare(before, after)


# --- tlsprobe check --dane --mta-sts ------------------------------------------------------------


async def run_check(
    lab: Lab, case: str, ca_file: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, dict[str, Any]]:
    """`tlsprobe check --dane` of a case's server, as text then as JSON (same exit code)."""
    leaf = lab.current[case]
    server = SmtpTestServer(
        ServerTls((leaf.cert, lab.intermediate), leaf.key), port=lab.ports[case]
    )
    common = [
        "check",
        f"{lab.host(case)}:{lab.ports[case]}",
        "--address=127.0.0.1",
        f"--ca-file={ca_file}",
        "--dane",
        f"--resolver=127.0.0.1:{lab.dns.port}",
        *extra,
    ]
    async with server:
        code = await asyncio.to_thread(cli_main, common)
        text = capsys.readouterr().out
        json_code = await asyncio.to_thread(cli_main, [*common, "--json"])
        data = json.loads(capsys.readouterr().out)
    assert code == json_code, text
    return code, text, data


async def test_cli_prints_the_records_and_which_one_matched(
    lab: Lab, sts_server: PolicyServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, data = await run_check(
        lab, "ok", ca_file, capsys, f"--mta-sts=enforce.{Z}", "--timeout=10"
    )
    leaf = lab.current["ok"]
    assert code == 0, text
    published = tlsa(3, 1, 1, leaf.cert)
    assert f"matched     {published}" in text
    assert "next_key" in text and "secure" in text
    assert f"MTA-STS       enforce.{Z} id 1: mode enforce" in text
    assert f"mailto:tlsrpt@{Z}" in text
    assert {r["match"] for r in data["dane"]["records"]} == {"matched", "next_key"}
    assert data["dane"]["dnssec"] == "secure"
    assert data["mta_sts"]["mode"] == "enforce"
    assert {c["name"]: c["status"] for c in data["checks"]}["dane"] == "ok"
    assert {c["name"]: c["status"] for c in data["checks"]}["mta_sts"] == "ok"


async def test_cli_exit_code_is_critical_when_the_key_rotated(
    lab: Lab, pki: Hierarchy, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = make_leaf(pki.intermediate, [f"rotated.{Z}"], key=KeyKind.EC_P384)
    server = SmtpTestServer(
        ServerTls((fresh.cert, lab.intermediate), fresh.key), port=lab.ports["rotated"]
    )
    async with server:
        code = await asyncio.to_thread(
            cli_main,
            [
                "check",
                f"rotated.{Z}:{lab.ports['rotated']}",
                "--address=127.0.0.1",
                f"--ca-file={ca_file}",
                "--dane",
                f"--resolver=127.0.0.1:{lab.dns.port}",
            ],
        )
    out = capsys.readouterr().out
    assert code == 2, out
    assert "CRITICAL" in out and "no TLSA record" in out

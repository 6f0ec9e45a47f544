"""Reports and the command line, without sockets.

Results are built by `tlsprobe.probe.prober.judge` from hand-made `Capture` values (the transport is
never involved) against a fixed clock. The JSON document is held to its documented contract (README,
"JSON output"), the human report to what an administrator needs at 3 a.m., and every command-line
usage error to the Nagios convention: exit code 3 and a single line on stderr.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from tests.support.expected import REPORT_CHAIN_KEYS
from tests.support.nagios import parse_first_line
from tests.support.pki import (
    FIXED_INTERMEDIATE_CN,
    FIXED_ROOT_CN,
    Hierarchy,
    Issued,
    make_leaf,
)
from tests.support.pki import FIXED_NOW as NOW
from tlsprobe import report
from tlsprobe.cli import main as cli
from tlsprobe.model import (
    Capture,
    CheckName,
    Endpoint,
    Mode,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    Status,
    TlsInfo,
)
from tlsprobe.probe import prober as probe
from tlsprobe.probe.transport import starttls as transport
from tlsprobe.probe.x509.evaluate import SYMPTOMS, TrustStore, expiry_thresholds

HOST = "mail.contoso.test"
TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
PHASES = MappingProxyType({"connect": 0.0012345678, "handshake": 0.25, "total": 0.5})

DESIGN_TOP_KEYS = {"target", "status", "error", "tls", "chain", "checks", "o365_ready", "phases"}
DESIGN_CHAIN_KEYS = REPORT_CHAIN_KEYS
DESIGN_CHECK_KEYS = {"name", "status", "message"}


@pytest.fixture(scope="module")
def store(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="report root")


@pytest.fixture(scope="module")
def good_leaf(ca: Hierarchy) -> Issued:
    return leaf(ca, ends=60)


def leaf(ca: Hierarchy, *, ends: float) -> Issued:
    return make_leaf(
        ca.intermediate,
        (HOST, "autodiscover.contoso.test"),
        not_before=NOW - timedelta(days=30),
        not_after=NOW + timedelta(days=ends),
    )


def judged(
    store: TrustStore,
    chain: Sequence[bytes] = (),
    *,
    error: ProbeError | None = None,
    endpoint: Endpoint | None = None,
    tls: TlsInfo | None = TLS13,
) -> ProbeResult:
    capture = Capture(
        address="192.0.2.25",
        chain_der=tuple(chain),
        tls=None if error else tls,
        error=error,
        phases=PHASES,
    )
    return probe.judge(endpoint or Endpoint(HOST), capture, POLICY, store, started_at=0, now=NOW)


@pytest.fixture(scope="module")
def good(ca: Hierarchy, store: TrustStore, good_leaf: Issued) -> ProbeResult:
    return judged(store, (good_leaf.der, ca.intermediate.der))


@pytest.fixture(scope="module")
def expired(ca: Hierarchy, store: TrustStore) -> ProbeResult:
    return judged(store, (leaf(ca, ends=-1).der, ca.intermediate.der, ca.root.der))


# --- judge ---------------------------------------------------------------------------------


def test_judge_a_good_capture(good: ProbeResult, good_leaf: Issued) -> None:
    assert good.status is Status.OK
    assert good.success
    assert good.error is None
    assert good.o365_ready is True
    assert good.leaf is not None
    assert good.leaf.sha256 == good_leaf.sha256
    assert good.address == "192.0.2.25"
    assert dict(good.phases) == dict(PHASES)


def test_judge_an_expired_chain_still_reports_it_in_full(expired: ProbeResult) -> None:
    assert expired.status is Status.CRITICAL
    assert len(expired.chain) == 3
    assert expired.o365_ready is False


def test_implicit_tls_needs_no_starttls(
    ca: Hierarchy, store: TrustStore, good_leaf: Issued
) -> None:
    endpoint = Endpoint(HOST, port=465, mode=Mode.IMPLICIT)
    result = judged(store, (good_leaf.der, ca.intermediate.der), endpoint=endpoint)
    starttls = result.check("starttls")
    assert starttls is not None
    assert starttls.status is Status.OK
    assert "implicit TLS" in starttls.message


@pytest.mark.parametrize(
    ("reason", "status", "starttls_check"),
    [
        (Reason.NO_STARTTLS, Status.CRITICAL, True),
        (Reason.STARTTLS_REJECTED, Status.CRITICAL, True),
        (Reason.TLS_HANDSHAKE, Status.CRITICAL, False),
        (Reason.PROTOCOL, Status.CRITICAL, False),
        (Reason.REFUSED, Status.UNKNOWN, False),
        (Reason.TIMEOUT, Status.UNKNOWN, False),
        (Reason.DNS, Status.UNKNOWN, False),
        (Reason.THROTTLED, Status.UNKNOWN, False),
    ],
)
def test_error_results(
    store: TrustStore, reason: Reason, status: Status, starttls_check: bool
) -> None:
    result = judged(store, error=ProbeError(reason, "the server said no"))
    doc = report.to_json(result)
    assert result.status is status
    assert doc["status"] == status.label
    assert doc["error"] == {"kind": reason.value, "message": "the server said no"}
    assert doc["chain"] == []
    assert doc["tls"] is None
    assert doc["o365_ready"] is False
    if not starttls_check:
        assert doc["checks"] == []
    else:
        [check] = doc["checks"]
        assert (check["name"], check["status"]) == ("starttls", "critical")
        assert check["message"] == "the server said no"  # the client's own words, once


def test_unparseable_certificate_is_a_critical_verdict_not_an_error(store: TrustStore) -> None:
    result = judged(store, (b"\x30\x03not",))
    assert result.status is Status.CRITICAL
    assert result.error is None  # a verdict on what was sent, reported with its fingerprint
    assert result.chain[0].sha256 == hashlib.sha256(b"\x30\x03not").hexdigest()
    finding = result.check("certificate_format")
    assert finding is not None and finding.status is Status.CRITICAL
    assert "not strict DER" in finding.message


def test_no_chain_without_error_is_a_handshake_failure(store: TrustStore) -> None:
    result = judged(store, ())
    assert result.status is Status.CRITICAL
    assert result.error is not None
    assert result.error.kind is Reason.TLS_HANDSHAKE


# --- JSON ----------------------------------------------------------------------------------


def test_json_carries_the_design_fields(good: ProbeResult) -> None:
    doc = json.loads(json.dumps(report.to_json(good)))
    assert doc.keys() >= DESIGN_TOP_KEYS
    assert doc["status"] == "ok"
    assert doc["error"] is None
    assert doc["tls"] == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
    assert doc["o365_ready"] is True
    assert doc["phases"] == {"connect": 0.001235, "handshake": 0.25, "total": 0.5}
    assert doc["target"]["host"] == HOST
    assert doc["target"]["port"] == 25
    assert doc["target"]["address"] == "192.0.2.25"


def test_json_chain_is_leaf_first(good: ProbeResult, good_leaf: Issued) -> None:
    chain = report.to_json(good)["chain"]
    assert len(chain) == 2
    assert all(item.keys() >= DESIGN_CHAIN_KEYS for item in chain)
    first = chain[0]
    assert first["subject"] == f"CN={HOST},O=tlsprobe test server"
    assert first["issuer"] == f"CN={FIXED_INTERMEDIATE_CN},O=tlsprobe tests"
    assert first["serial"] == f"{good_leaf.cert.serial_number:X}"
    assert first["not_before"] == "2026-05-02T00:00:00Z"
    assert first["not_after"] == "2026-07-31T00:00:00Z"
    assert first["sha256"] == good_leaf.sha256
    assert first["dns_names"] == [HOST, "autodiscover.contoso.test"]
    assert first["key"] == "RSA 2048"
    assert first["signature_algorithm"] == "sha256WithRSAEncryption"
    assert chain[1]["subject"] == f"CN={FIXED_INTERMEDIATE_CN},O=tlsprobe tests"


def test_json_checks(good: ProbeResult, expired: ProbeResult) -> None:
    checks = report.to_json(good)["checks"]
    assert all(c.keys() >= DESIGN_CHECK_KEYS for c in checks)
    assert [c["name"] for c in checks][:4] == [
        "starttls",
        "tls_version",
        "chain_trusted",
        "not_expired",
    ]
    assert {c["status"] for c in checks} == {"ok"}
    failing = {c["name"]: c for c in report.to_json(expired)["checks"]}
    assert failing["not_expired"]["status"] == "critical"
    assert "expired 1 day ago" in failing["not_expired"]["message"]


def _exact_key_sets(result: ProbeResult) -> dict[str, set[str]]:
    doc = report.to_json(result)
    return {
        "top": set(doc),
        "chain": set().union(*(item.keys() for item in doc["chain"])),
        "checks": set().union(*(c.keys() for c in doc["checks"])),
    }


# Fields added to the original JSON contract since, documented in the README ("JSON output").
EXTENSIONS = {
    "top": {"started_at", "o365_connector", "o365_failing"},
    "chain": {"common_names", "is_ca", "self_issued", "exchange_name"},
    "checks": {"exchange_online"},
}


@pytest.mark.parametrize(
    ("level", "design"),
    [("top", DESIGN_TOP_KEYS), ("chain", DESIGN_CHAIN_KEYS), ("checks", DESIGN_CHECK_KEYS)],
)
def test_json_keys_are_the_design_keys_plus_documented_extensions(
    expired: ProbeResult, level: str, design: set[str]
) -> None:
    assert _exact_key_sets(expired)[level] == design | EXTENSIONS[level]


# --- human report --------------------------------------------------------------------------


def test_human_report_of_a_good_result(good: ProbeResult, good_leaf: Issued) -> None:
    text = report.human(good, NOW)
    lines = text.splitlines()
    assert lines[0].startswith(f"TLSPROBE OK - {HOST}:25: certificate OK | days_left=60.0")
    assert "names (SAN) mail.contoso.test, autodiscover.contoso.test" in text
    assert "(60 days left)" in text
    assert good_leaf.sha256 in text
    assert (
        f"Set-SendConnector -TlsCertificateName '<I>CN={FIXED_INTERMEDIATE_CN}, O=tlsprobe tests"
        f"<S>CN={HOST}, O=tlsprobe test server'"
    ) in text
    assert "Office 365    ready" in text
    assert "Exchange Online:" not in text


def test_perfdata_carries_the_applied_thresholds_and_the_bounds(good: ProbeResult) -> None:
    policy = Policy(warn_days=30.5, crit_days=10)
    assert good.leaf is not None
    # What not_expired applies (the configured days here; lifetime-aware ones once they land).
    warn, crit = expiry_thresholds(policy, good.leaf)
    line = report.summary_line(good, NOW, policy=policy, timeout=30)
    assert line.endswith(f"| days_left=60.0;{warn:g};{crit:g};; total=0.500s;;;0;30")
    bare = report.summary_line(good, NOW)
    assert bare.endswith("| days_left=60.0;;;; total=0.500s;;;0;")
    # Configured days are fixed thresholds; the 90-day leaf's lifetime-aware ones differ.
    fixed = Policy(warn_days=30.5, crit_days=10, fixed_expiry_days=True)
    assert "| days_left=60.0;30.5;10;; total=" in report.summary_line(good, NOW, policy=fixed)
    assert (warn, crit) == (27.0, 10.0)
    figures = parse_first_line(line).perfdata
    assert figures["days_left"].value == 60.0
    assert (float(figures["days_left"].warn), float(figures["days_left"].crit)) == (warn, crit)
    assert (figures["total"].uom, figures["total"].minimum, figures["total"].maximum) == (
        "s",
        0.0,
        30.0,
    )


def test_perfdata_thresholds_are_those_not_expired_applies(good: ProbeResult) -> None:
    # One function gives both, so lifetime-aware thresholds reach the perfdata unchanged.
    assert good.leaf is not None
    policy = Policy(warn_days=45, crit_days=12.25)
    warn, crit = expiry_thresholds(policy, good.leaf)
    figure = parse_first_line(report.summary_line(good, NOW, policy=policy)).perfdata["days_left"]
    assert (float(figure.warn), float(figure.crit)) == (warn, crit)


def test_perfdata_without_a_certificate_has_only_the_total(store: TrustStore) -> None:
    failed = judged(store, error=ProbeError(Reason.REFUSED, "connection refused"))
    figures = parse_first_line(report.summary_line(failed, NOW, policy=POLICY, timeout=5))
    assert list(figures.perfdata) == ["total"]
    assert figures.state == failed.status.name


def test_human_report_shows_the_chain_as_sent(expired: ProbeResult) -> None:
    lines = report.human(expired, NOW).splitlines()
    start = lines.index("Chain as sent")
    assert lines[start + 1].split() == ["0", "leaf", f"CN={HOST},O=tlsprobe", "test", "server"]
    # Subjects wrap at their spaces: the first word of each CA's name starts its line.
    intermediate, root = (f"CN={cn.split()[0]}" for cn in (FIXED_INTERMEDIATE_CN, FIXED_ROOT_CN))
    assert lines[start + 3].split()[:3] == ["1", "intermediate", intermediate]
    assert lines[start + 5].split()[:3] == ["2", "root", root]
    assert lines[start + 7] == "  (root sent along: harmless)"


def test_human_report_says_when_the_root_was_not_sent(good: ProbeResult) -> None:
    assert "(root not sent: normal)" in report.human(good, NOW)


def test_human_report_gives_the_exchange_symptom_under_failing_checks(
    expired: ProbeResult,
) -> None:
    lines = report.human(expired, NOW).splitlines()
    assert lines[0].startswith("TLSPROBE CRITICAL - ")
    assert (
        "Office 365    NOT ready for the inbound connector (TlsSenderCertificateName "
        "*.contoso.test): chain_trusted, not_expired fails"
    ) in lines
    failing = next(
        i for i, line in enumerate(lines) if line.split()[:2] == ["CRITICAL", "not_expired"]
    )
    assert lines[failing + 1].strip() == f"Exchange Online: {SYMPTOMS[CheckName.NOT_EXPIRED]}"
    ok_line = next(i for i, line in enumerate(lines) if line.split()[:2] == ["OK", "hostname"])
    assert not lines[ok_line + 1].strip().startswith("Exchange Online:")


def test_human_report_of_an_error(store: TrustStore) -> None:
    result = judged(store, error=ProbeError(Reason.NO_STARTTLS, "EHLO lacks STARTTLS"))
    text = report.human(result, NOW)
    assert text.startswith(f"TLSPROBE CRITICAL - {HOST}:25: no_starttls: EHLO lacks STARTTLS")
    assert "no TLS session" in text
    assert "Chain as sent" not in text
    assert f"Exchange Online: {SYMPTOMS[CheckName.STARTTLS]}" in text


# --- command line --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A usage error must stop the CLI before any lookup or connection."""

    async def must_not_probe(*args: Any, **kwargs: Any) -> ProbeResult:
        raise AssertionError("the CLI probed despite a usage error")

    def must_not_resolve() -> str:
        raise AssertionError("the CLI looked up this host's name despite a usage error")

    monkeypatch.setattr(probe, "probe_endpoint", must_not_probe)
    # The CLI imports the transport when it builds the check, so this is the name it calls.
    monkeypatch.setattr(transport, "default_ehlo_name", must_not_resolve)
    yield


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else -1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        pytest.param(["127.0.0.1:99999"], "port", id="port-too-big"),
        pytest.param(["127.0.0.1:smtp"], "port", id="port-not-a-number"),
        pytest.param(["127.0.0.1:0"], "port", id="port-0"),
        pytest.param(["[::1"], "[::1", id="unclosed-ipv6"),
        pytest.param(["127.0.0.1", "--address", "mail.contoso.test"], "--address", id="address"),
        pytest.param(
            ["127.0.0.1", "--certificate-domain", "mail.*.contoso.com"],
            "--certificate-domain",
            id="embedded-wildcard",
        ),
        pytest.param(["127.0.0.1", "--ca-file", "/nonexistent/ca.pem"], "--ca-file", id="ca-file"),
        pytest.param(
            ["127.0.0.1", "--crit-days", "30", "--warn-days", "10"], "--crit-days", id="crit>warn"
        ),
        pytest.param(["127.0.0.1", "--timeout", "0"], "--timeout", id="timeout-0"),
        pytest.param(["127.0.0.1", "--timeout", "inf"], "--timeout", id="timeout-inf"),
        pytest.param(["127.0.0.1", "--timeout", "1e300"], "--timeout", id="timeout-1e300"),
        pytest.param(["127.0.0.1", "--timeout", "nan"], "--timeout", id="timeout-nan"),
        pytest.param(["127.0.0.1", "--timeout", "-5"], "--timeout", id="timeout-negative"),
        pytest.param(["127.0.0.1", "--timeout", "3601"], "--timeout", id="timeout-over-an-hour"),
        pytest.param(["127.0.0.1", "--warn-days", "inf"], "--warn-days", id="warn-days-inf"),
        pytest.param(["127.0.0.1", "--warn-days", "1e300"], "--warn-days", id="warn-days-huge"),
        pytest.param(["127.0.0.1", "--crit-days", "nan"], "--crit-days", id="crit-days-nan"),
        pytest.param(["127.0.0.1", "--crit-days", "-1"], "--crit-days", id="crit-days-negative"),
        pytest.param(["127.0.0.1", "--bogus"], "--bogus", id="unknown-flag"),
        pytest.param(["127.0.0.1", "--warn-days", "soon"], "--warn-days", id="not-a-number"),
        pytest.param(["127.0.0.1", "--mode", "plain"], "--mode", id="bad-mode"),
    ],
)
def test_usage_errors_exit_3_with_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["check", *argv], capsys)
    assert code == 3
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert words in err
    assert "Traceback" not in err


def test_ehlo_name_with_a_space(ca_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "127.0.0.1", "--ca-file", str(ca_file), "--ehlo-name", "bad name"]
    code, out, err = run_cli(argv, capsys)
    assert (code, out) == (3, "")
    assert len(err.splitlines()) == 1, err
    assert "--ehlo-name" in err


def test_ca_file_without_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    code, _, err = run_cli(["check", "127.0.0.1", "--ca-file", str(empty)], capsys)
    assert code == 3
    assert len(err.splitlines()) == 1, err
    assert str(empty) in err


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"]])
def test_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 0
    assert err == ""
    assert "usage: tlsprobe" in out


def test_check_help_lists_the_design_options(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(["check", "--help"], capsys)
    options = "HOST[:PORT] --address --mode --sni --no-sni --ca-file --certificate-domain "
    options += "--accepted-domain --warn-days --crit-days --ehlo-name --timeout --json"
    assert [option for option in options.split() if option not in out] == []

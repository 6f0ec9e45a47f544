"""`exporter.forecast` and `tlsprobe forecast`: what fails now or within N days, by date.

Results are judged from certificates made here (an expiring leaf, an intermediate that expires
before its leaf, an expired leaf, a refused connection, a healthy endpoint, a sender) against
the real clock; the command reads them from a results file written as the exporter writes it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest

from tests.support.pki import Hierarchy, Issued, make_intermediate, make_leaf
from tlsprobe.cli import main as cli
from tlsprobe.exporter import forecast
from tlsprobe.exporter.config.send import SenderConfig
from tlsprobe.exporter.lastresults import ResultStore
from tlsprobe.exporter.state import EndpointState, SenderState
from tlsprobe.model import (
    Capture,
    CheckName,
    Endpoint,
    Policy,
    ProbeError,
    ProbeResult,
    Reason,
    TlsInfo,
)
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509.evaluate import SYMPTOMS, TrustStore

NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
PHASES = MappingProxyType({"total": 0.05})


def result(
    trust: TrustStore,
    host: str,
    chain: Sequence[Issued],
    *,
    error: ProbeError | None = None,
    address: str = "127.0.0.1",
) -> ProbeResult:
    ep = Endpoint(host=host, address=address, target=host.split(".", maxsplit=1)[0])
    capture = Capture(
        address=address,
        chain_der=tuple(c.der for c in chain),
        tls=None if error else TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        error=error,
        phases=PHASES,
    )
    return judge(ep, capture, POLICY, trust, started_at=NOW.timestamp() - 60, now=NOW)


def leaf(issuer: Issued, host: str, days: float) -> Issued:
    """A leaf for `host` that expires `days` from now (negative: expired)."""
    return make_leaf(
        issuer, (host,), not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=days)
    )


@pytest.fixture(scope="module")
def results(pki: Hierarchy, trust: TrustStore) -> dict[str, ProbeResult]:
    short_ca = make_intermediate(
        pki.root,
        "Short Lived Intermediate",
        not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=5),
    )
    ca = pki.intermediate
    refused = ProbeError(Reason.REFUSED, "connection refused")
    return {
        # 8 of 38 days left: past the lifetime-aware warning (9.7), not yet critical (6.3).
        "soon": result(trust, "soon.contoso.test", [leaf(ca, "soon.contoso.test", 8), ca]),
        "ca": result(trust, "ca.contoso.test", [leaf(short_ca, "ca.contoso.test", 60), short_ca]),
        "expired": result(
            trust, "expired.contoso.test", [leaf(ca, "expired.contoso.test", -2), ca]
        ),
        "down": result(trust, "down.contoso.test", [], error=refused),
        "fine": result(trust, "fine.contoso.test", [leaf(ca, "fine.contoso.test", 80), ca]),
    }


def items(results: dict[str, ProbeResult]) -> list[forecast.Watched]:
    return [forecast.Watched("contoso", name, "endpoint", r) for name, r in results.items()]


def test_entries_are_what_breaks_in_date_order(results: dict[str, ProbeResult]) -> None:
    entries = forecast.forecast(items(results), NOW, 30)
    summary = [(e.name, e.now, e.what.split(":")[0]) for e in entries]
    # What fails now first (probed a minute ago), then by date; the healthy one not at all.
    assert summary == [
        ("down", True, "refused"),
        ("expired", True, "not_expired"),
        (
            "ca",
            False,
            "intermediate 'CN=Short Lived Intermediate,O=tlsprobe tests' expires before the leaf",
        ),
        ("soon", False, "leaf expires; its renewal is overdue (not_expired at warning)"),
    ]
    later = [(e.name, e.what) for e in entries if not e.now]
    assert later == [
        (
            "ca",
            "intermediate 'CN=Short Lived Intermediate,O=tlsprobe tests' expires before the leaf",
        ),
        ("soon", "leaf expires; its renewal is overdue (not_expired at warning)"),
    ]
    assert [e.when for e in entries] == sorted(e.when for e in entries)
    assert "fine" not in {e.name for e in entries}
    soon = next(e for e in entries if e.name == "soon")
    assert soon.when == NOW + timedelta(days=8)
    assert round(soon.days_left(NOW)) == 8
    assert soon.symptom == SYMPTOMS[CheckName.NOT_EXPIRED]
    assert soon.fix.startswith("renew the certificate")
    assert soon.where == "soon.contoso.test:25 (127.0.0.1)"
    ca = next(e for e in entries if e.name == "ca")
    assert "(the leaf is valid until" in ca.fix
    down = next(e for e in entries if e.name == "down")
    assert (down.symptom, down.fix) == ("", "make the server reachable and offer STARTTLS")
    expired = next(e for e in entries if e.name == "expired")
    assert expired.symptom == SYMPTOMS[CheckName.NOT_EXPIRED]


def test_a_server_without_starttls_gets_the_exchange_symptom(trust: TrustStore) -> None:
    plain = result(trust, "legacy.contoso.test", [], error=ProbeError(Reason.NO_STARTTLS, "no"))
    [entry] = forecast.forecast([forecast.Watched("contoso", "legacy", "endpoint", plain)], NOW)
    assert entry.now and entry.symptom == SYMPTOMS[CheckName.STARTTLS]


def test_the_horizon_decides_what_is_listed(results: dict[str, ProbeResult]) -> None:
    assert "fine" in {e.name for e in forecast.forecast(items(results), NOW, 90)}
    at_zero = forecast.forecast(items(results), NOW, 0)
    assert all(e.now for e in at_zero) and len(at_zero) >= 2


def test_json_and_csv_carry_the_same_rows(results: dict[str, ProbeResult]) -> None:
    entries = forecast.forecast(items(results), NOW, 30)
    rows = json.loads(forecast.to_json(entries, NOW))
    assert [r["name"] for r in rows] == [e.name for e in entries]
    assert list(rows[0]) == list(forecast.FIELDS)
    from_csv = list(csv.DictReader(io.StringIO(forecast.to_csv(entries, NOW))))
    assert [{k: str(v) for k, v in r.items()} for r in rows] == from_csv
    text = forecast.to_text(entries, NOW, 30)
    assert "Exchange Online: " + SYMPTOMS[CheckName.NOT_EXPIRED] in text
    assert forecast.to_text([], NOW, 30) == "Nothing fails now or within 30 days.\n"


def test_published_states_are_watched_as_endpoints_and_senders(
    results: dict[str, ProbeResult],
) -> None:
    states = [EndpointState("contoso", "soon", results["soon"])]
    relay = SenderConfig("contoso", "relay1", ("127.0.0.1/32",), POLICY)
    quiet = SenderConfig("contoso", "relay2", ("127.0.0.2/32",), POLICY)
    senders = [SenderState(relay, result=results["expired"]), SenderState(quiet)]
    watched = list(forecast.watched(states, senders))
    assert [(w.tenant, w.name, w.kind) for w in watched] == [
        ("contoso", "soon", "endpoint"),
        ("contoso", "relay1", "sender"),
    ]
    [entry] = forecast.forecast(watched[1:], NOW, 30)
    assert (entry.kind, entry.where) == ("sender", "expired.contoso.test from 127.0.0.1")


def test_forecast_command_reads_the_exporters_last_results(
    tmp_path: Path, results: dict[str, ProbeResult], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tlsprobe.yml"
    targets = "".join(f"      - {{name: {n}, host: {n}.contoso.test}}\n" for n in results)
    config.write_text(
        f"state_dir: {tmp_path}\nreceiver: {{}}\ntenants:\n  contoso:\n"
        "    accepted_domains: [contoso.test]\n"
        "    senders: [{name: relay1, peers: [127.0.0.1]}]\n"
        f"    targets:\n{targets}"
    )
    store = ResultStore(tmp_path / "results.sqlite3")
    for name, r in results.items():
        store.put(("contoso", name, r.endpoint.host, "127.0.0.1", "25"), r)
    # A row of a target no longer configured is left out; a configured sender's is kept.
    store.put(("contoso", "gone", "gone.contoso.test", "127.0.0.1", "25"), results["expired"])
    store.put(("contoso", "sender:relay1", "relay1", "", ""), results["soon"])
    store.put(("contoso", "sender:relay9", "relay9", "", ""), results["soon"])
    store.close()
    assert cli.main(["forecast", "--config", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["name"], r["kind"]) for r in rows} == {
        ("down", "endpoint"),
        ("expired", "endpoint"),
        ("ca", "endpoint"),
        ("soon", "endpoint"),
        ("relay1", "sender"),
    }
    assert [r["when"] for r in rows] == sorted(r["when"] for r in rows)
    assert cli.main(["forecast", "--config", str(config), "--days", "90"]) == 0
    assert "fine.contoso.test:25" in capsys.readouterr().out
    # The demo's way: every row of a state directory, the unconfigured ones too.
    assert cli.main(["forecast", "--state-dir", str(tmp_path), "--format", "csv"]) == 0
    names = {row["name"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert {"gone", "relay9", "relay1", "soon"} <= names


def test_forecast_command_without_results_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tlsprobe.yml"
    config.write_text(f"state_dir: {tmp_path}\ntargets:\n  - host: mail.example.com\n")
    assert cli.main(["forecast", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cannot read last results" in err and len(err.splitlines()) == 1


def test_check_does_not_import_the_forecast() -> None:
    # `tlsprobe check` builds its own subcommand only; the whole parser (--help) registers
    # forecast without importing it.
    code = (
        "import sys; from tlsprobe.cli import main; main.make_parser(['check', 'mx.test']); "
        "print(sorted(m for m in sys.modules if 'forecast' in m or m.endswith('commands'))); "
        "main.make_parser(); print(sorted(m for m in sys.modules if 'forecast' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout


def test_the_columns_are_the_entry_fields_and_days_left() -> None:
    # as_rows reads FIELDS[2:] off the entry and computes the first two.
    assert forecast.FIELDS[:2] == ("when", "days_left")
    names = {f.name for f in dataclasses.fields(forecast.Entry)}
    assert set(forecast.FIELDS[2:]) | {"when"} == names


def test_the_forecast_command_imports_no_config_parser_or_send_side() -> None:
    # `--state-dir` reads only the results file; the parser and the send side are most of the
    # start-up time at 10,000 endpoints, so they load only with `--config`.
    code = (
        "import sys, tlsprobe.cli.forecast\n"
        "print(sorted(m for m in sys.modules if m.startswith(('tlsprobe.exporter.config', "
        "'tlsprobe.exporter.senders', 'tlsprobe.probe.send', 'yaml'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

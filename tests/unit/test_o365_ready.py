"""`o365_ready` never says yes next to a critical verdict (issue: a 1024-bit key showed "ready").

One function, `tlsprobe.model.o365_ready`, owns the rule: every Exchange Online connector rule
holds and no check at all is critical; a warning elsewhere does not clear it. The results, the
JSON, the human report, `/metrics` and the status page all read it through
`ProbeResult.o365_ready`, so the cases below go through each of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest

from tests.support.expected import SERVER_CHECKS
from tests.support.pki import Hierarchy, Issued, KeyKind
from tlsprobe import report
from tlsprobe.exporter.exposition.metrics import render_endpoint
from tlsprobe.exporter.pages.status import StatusPage
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import (
    O365_RULES,
    Capture,
    Check,
    CheckName,
    Endpoint,
    Policy,
    ProbeResult,
    Status,
    TlsInfo,
    o365_ready,
)
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
ENDPOINT = Endpoint(host="mail.contoso.test", address="127.0.0.1", target="relay")

EVERY_CHECK = (
    *SERVER_CHECKS,
    "expected_certificate",
    "a_check_added_later",
)
"""Every check a result can carry today, and one that does not exist yet: the rule must not
need to know a check's name to let its critical status clear readiness."""


def all_ok() -> list[Check]:
    # cast: "a_check_added_later" stands for a CheckName member that does not exist yet.
    return [Check(cast(CheckName, name), Status.OK, "fine") for name in EVERY_CHECK]


def with_status(name: str, status: Status) -> list[Check]:
    return [Check(c.name, status, "changed") if c.name == name else c for c in all_ok()]


def judged(trust: TrustStore, chain: Sequence[Issued]) -> ProbeResult:
    capture = Capture(
        address=ENDPOINT.address,
        chain_der=tuple(c.der for c in chain),
        tls=TLS,
        error=None,
        phases={"total": 0.01},
    )
    return judge(ENDPOINT, capture, POLICY, trust, started_at=NOW.timestamp(), now=NOW)


def outputs_say_ready(result: ProbeResult) -> dict[str, bool]:
    """What each output a user reads says about readiness."""
    state = EndpointState("contoso", "relay", result, drift=None, interval=300.0)
    metrics = b"".join(render_endpoint(state).values()).decode()
    ready_lines = [ln for ln in metrics.splitlines() if ln.startswith("tlsprobe_o365_ready{")]
    assert len(ready_lines) == 1, metrics
    page = StatusPage().render(lambda: [state], NOW.timestamp(), started_at=0.0).decode()
    return {
        "result": result.o365_ready,
        "json": report.to_json(result)["o365_ready"],
        "human": "Office 365    ready" in report.human(result, NOW),
        "metrics": float(ready_lines[0].rsplit(" ", 1)[1]) == 1.0,
        "status page": "<td>yes</td>" in page,
    }


# --- the rule, check by check --------------------------------------------------------------


def test_all_checks_ok_is_ready() -> None:
    assert o365_ready(all_ok()) is True


@pytest.mark.parametrize("name", EVERY_CHECK)
def test_any_critical_check_clears_ready(name: str) -> None:
    assert o365_ready(with_status(name, Status.CRITICAL)) is False


@pytest.mark.parametrize("name", [n for n in EVERY_CHECK if n not in O365_RULES])
def test_a_warning_outside_the_connector_rules_keeps_ready(name: str) -> None:
    assert o365_ready(with_status(name, Status.WARNING)) is True


def test_expiry_warning_keeps_ready_because_the_certificate_is_still_valid() -> None:
    assert o365_ready(with_status("not_expired", Status.WARNING)) is True


@pytest.mark.parametrize("name", [n for n in O365_RULES if n != "not_expired"])
@pytest.mark.parametrize("status", [Status.WARNING, Status.UNKNOWN])
def test_a_connector_rule_short_of_ok_clears_ready(name: str, status: Status) -> None:
    assert o365_ready(with_status(name, status)) is False


@pytest.mark.parametrize("name", O365_RULES)
def test_a_connector_rule_that_was_not_evaluated_clears_ready(name: str) -> None:
    assert o365_ready([c for c in all_ok() if c.name != name]) is False


def test_no_checks_is_not_ready() -> None:
    assert o365_ready([]) is False


# --- real chains, every output ----------------------------------------------------------------


def test_good_chain_is_ready_everywhere(pki: Hierarchy, trust: TrustStore) -> None:
    result = judged(trust, [pki.leaf(("mail.contoso.test",)), pki.intermediate])
    assert result.status is Status.OK
    assert set(outputs_say_ready(result).values()) == {True}


@pytest.mark.parametrize(
    ("leaf_options", "critical_check"),
    [
        pytest.param({"key": KeyKind.RSA1024}, "key_strength", id="rsa-1024"),
        pytest.param({"signature_hash": "sha1"}, "signature_algorithm", id="sha1-signature"),
    ],
)
def test_weak_certificate_that_meets_every_connector_rule_is_not_ready_anywhere(
    pki: Hierarchy, trust: TrustStore, leaf_options: dict[str, object], critical_check: str
) -> None:
    leaf = pki.leaf(("mail.contoso.test",), **leaf_options)  # type: ignore[arg-type]
    result = judged(trust, [leaf, pki.intermediate])
    statuses = {c.name: c.status for c in result.checks}
    assert statuses[CheckName(critical_check)] is Status.CRITICAL
    if critical_check == "key_strength":
        # The case of the issue: every connector rule holds, one other check is critical.
        # (A SHA-1 leaf also fails chain_trusted: the path builder refuses SHA-1 signatures.)
        assert all(statuses[name] is Status.OK for name in O365_RULES), statuses
    assert result.status is Status.CRITICAL
    assert outputs_say_ready(result) == dict.fromkeys(
        ("result", "json", "human", "metrics", "status page"), False
    )

"""The human report says each thing once, and names the server's own way to install a certificate.

Messages are composed in one place each: the SMTP client's failure text is the starttls check's
message (it was prefixed with the same words), and an Exchange Online symptom follows an
`Exchange Online:` label without naming Exchange Online again. The install line follows the
banner: Exchange's `Set-SendConnector`, Postfix's `smtp_tls_chain_files`, Exim's
`tls_certificate`, or all of them when the banner names no server.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.support.pki import FIXED_NOW as NOW
from tests.support.pki import Hierarchy, KeyKind, make_leaf, make_root
from tlsprobe import report
from tlsprobe.model import Capture, Endpoint, Policy, ProbeError, Reason, TlsInfo
from tlsprobe.probe.prober import judge
from tlsprobe.probe.software import MailServer, identify
from tlsprobe.probe.x509.evaluate import SYMPTOMS, TrustStore

HOST = "mail.contoso.test"
POLICY = Policy(certificate_domain="*.fabrikam.test", accepted_domains=("fabrikam.test",))
TLS10 = TlsInfo("TLSv1", "ECDHE-RSA-AES128-SHA")


def repeated_phrases(text: str, words: int = 4) -> list[str]:
    """Runs of `words` words that occur twice within one line."""
    found = []
    for line in text.splitlines():
        tokens = re.findall(r"[\w.-]+", line)
        runs = [" ".join(tokens[i : i + words]) for i in range(len(tokens) - words + 1)]
        found += sorted({run for run in runs if runs.count(run) > 1})
    return found


@pytest.fixture(scope="module")
def trust(ca: Hierarchy) -> TrustStore:
    return TrustStore.from_pem(ca.ca_pem, source="text root")


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        (Reason.NO_STARTTLS, "server does not offer STARTTLS (EHLO: 250-mx.contoso.test 250 SIZE)"),
        (Reason.STARTTLS_REJECTED, "STARTTLS refused: 454 4.7.0 TLS not available"),
    ],
)
def test_a_starttls_failure_is_said_once(reason: Reason, message: str, trust: TrustStore) -> None:
    capture = Capture("192.0.2.25", error=ProbeError(reason, message))
    result = judge(Endpoint(HOST), capture, POLICY, trust, started_at=0, now=NOW)
    [check] = result.checks
    assert check.message == message
    text = report.human(result, NOW)
    assert repeated_phrases(text) == []
    assert text.count(message) == 2  # the summary line and the check, each once


def test_a_chain_failing_every_check_repeats_nothing(ca: Hierarchy) -> None:
    leaf = make_leaf(
        ca.intermediate,
        ("other.example",),
        key=KeyKind.RSA1024,
        signature_hash="sha1",
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(days=2),
    )
    trust = TrustStore.from_pem(make_root("Someone Else Root CA").cert_pem, source="other root")
    capture = Capture("192.0.2.25", (leaf.der,), TLS10)
    result = judge(Endpoint(HOST), capture, POLICY, trust, started_at=0, now=NOW)
    text = report.human(result, NOW)

    assert "Exchange Online: Exchange Online" not in text
    assert repeated_phrases(text) == []
    assert text.count("Exchange Online:") >= 5


def test_no_symptom_names_exchange_online_at_its_start() -> None:
    assert [s for s in SYMPTOMS.values() if s.lower().startswith("exchange online")] == []


# --- the install line follows the banner ----------------------------------------------------

BANNERS = {
    MailServer.EXCHANGE: (
        "S: 220 mail.contoso.test Microsoft ESMTP MAIL Service ready at Mon, 1 Jun 2026",
        "C: EHLO probe.test",
        "S: 250-mail.contoso.test Hello [192.0.2.1]",
        "S: 250-STARTTLS",
        "S: 250 X-ANONYMOUSTLS",
    ),
    MailServer.POSTFIX: ("S: 220 mail.contoso.test ESMTP Postfix (Debian/GNU)",),
    MailServer.EXIM: ("S: 220 mail.contoso.test ESMTP Exim 4.97 Mon, 01 Jun 2026 10:00:00 +0000",),
    MailServer.UNKNOWN: ("S: 220 mail.contoso.test ESMTP ready",),
}


@pytest.mark.parametrize("server", list(MailServer))
def test_the_banner_names_the_server(server: MailServer) -> None:
    assert identify(BANNERS[server]) is server


def test_a_client_line_naming_a_server_is_not_the_server() -> None:
    assert identify(("C: EHLO postfix.example", "S: 220 ready")) is MailServer.UNKNOWN


@pytest.mark.parametrize(
    ("server", "present", "absent"),
    [
        (MailServer.EXCHANGE, ["Set-SendConnector -TlsCertificateName"], ["Postfix", "Exim"]),
        (MailServer.POSTFIX, ["smtp_tls_chain_files", "smtpd_tls_chain_files"], ["Set-Send"]),
        (MailServer.EXIM, ["tls_certificate"], ["Set-SendConnector", "smtp_tls_chain_files"]),
        (
            MailServer.UNKNOWN,
            ["Set-SendConnector", "smtp_tls_chain_files", "tls_certificate"],
            [],
        ),
    ],
)
def test_the_install_line_fits_the_server(
    ca: Hierarchy, trust: TrustStore, server: MailServer, present: list[str], absent: list[str]
) -> None:
    leaf = ca.leaf((HOST,), not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(90))
    capture = Capture(
        "192.0.2.25",
        (leaf.der, ca.intermediate.der),
        TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        transcript=BANNERS[server],
    )
    text = report.human(judge(Endpoint(HOST), capture, POLICY, trust, started_at=0, now=NOW), NOW)
    assert [p for p in present if p not in text] == []
    assert [a for a in absent if a in text] == []

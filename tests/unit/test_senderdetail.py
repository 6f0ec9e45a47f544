"""The senders on the status page and a sender's detail view (`/sender?tenant=&sender=`).

A failing canary makes a sender critical on the page and it counts in the header (before, the
sender stayed orange from its EKU warning and out of the counts); the detail view shows the
checks, the chain as presented, the leaf per address, the history and the canaries, escaped
and bounded. Pure rendering, no sockets (the route is in tests/exporter/test_send_side.py).
"""

from __future__ import annotations

import html
from dataclasses import replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Hierarchy
from tlsprobe.exporter import links
from tlsprobe.exporter.config.send import CanaryConfig, SenderConfig
from tlsprobe.exporter.history.store import Drift, TimelineEntry
from tlsprobe.exporter.history.timeline import changes, spans
from tlsprobe.exporter.pages.sender_detail import sender_html
from tlsprobe.exporter.pages.senders import senders_section
from tlsprobe.exporter.pages.status import STATUS_COLOURS, StatusPage
from tlsprobe.exporter.senders import CANARY_HISTORY
from tlsprobe.exporter.state import CanaryState, SenderState
from tlsprobe.model import CanaryReason, Policy, Status, TlsInfo
from tlsprobe.probe.send import canary
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
CANARY = CanaryConfig(canary.Relay("127.0.0.1", recipient="c@x.test"), interval=60, deadline=30)
MISSING = CanaryState(False, NOW.timestamp(), None, CanaryReason.MISSING, "<b>late</b>", 0.0)
ARRIVED = CanaryState(True, NOW.timestamp(), 1.5, last_success_at=NOW.timestamp())


def eku_warning(pki: Hierarchy, trust: TrustStore, name: str = "relay-1") -> SenderState:
    """A sender whose leaf lacks clientAuth (a warning) and whose canary is configured."""
    leaf = pki.leaf(("relay.contoso.test",), client_auth=False)
    chain = tuple(c.public_bytes(Encoding.DER) for c in pki.chain(leaf))
    session = Session("127.0.0.5", 2525, NOW.timestamp(), helo="r", tls=TLS, chain_der=chain)
    result = judge_session(session, Policy(), trust, now=NOW, name=name)
    assert result.status is Status.WARNING
    sender = SenderConfig("contoso", name, ("127.0.0.0/24",), Policy(), canary=CANARY)
    drift = Drift(leaf.sha256, NOW.timestamp(), 0)
    return SenderState(sender, result, drift, 1, addresses=(("127.0.0.5", leaf.sha256),))


def test_a_failing_canary_makes_the_sender_critical_and_counted(
    pki: Hierarchy, trust: TrustStore
) -> None:
    failing = replace(eku_warning(pki, trust), canary=MISSING)
    healthy = replace(eku_warning(pki, trust, "relay-2"), canary=ARRIVED)
    section = senders_section([healthy, failing], NOW.timestamp(), STATUS_COLOURS)
    assert section.statuses == (Status.CRITICAL, Status.WARNING)  # worst first
    rows = section.html.split("<tr>")[2:]
    assert "relay-1" in rows[0] and "CRITICAL" in rows[0] and "<b>canary</b>: missing" in rows[0]
    assert "&lt;b&gt;late" in rows[0] and "<b>late" not in rows[0]
    assert "relay-2" in rows[1] and "WARNING" in rows[1]
    assert f'href="{html.escape(links.sender_path("contoso", "relay-1"))}"' in rows[0]
    page = StatusPage().render(list, NOW.timestamp(), 0.0, sections=lambda: [section]).decode()
    assert "Exchange Online sees them: 1 warning, 1 critical." in page
    assert page.index("<h2>Senders") < page.index("</body>")
    assert "What does not: a clean renewal" in section.html


def test_the_sender_view_shows_checks_chain_addresses_history_and_canaries(
    pki: Hierarchy, trust: TrustStore
) -> None:
    state = eku_warning(pki, trust, name="relay-<1>")
    old = pki.leaf(("relay.contoso.test",))
    assert state.result is not None and state.drift is not None
    new = state.drift.fingerprint
    served = [
        TimelineEntry(*key, old.sha256, "CN=old", "CN=CA", ("relay.contoso.test",), 2e9, 1.0, 5.0)
        for key in [("contoso", "sender:relay-<1>", "relay-<1>", "", 2525)]
    ]
    served.append(replace(served[0], fingerprint=new, subject="CN=new", first_seen=6.0))
    events = [(served[0].key, 6.0, old.sha256, new)]
    outcomes = tuple(
        replace(MISSING if i % 2 else ARRIVED, at=NOW.timestamp() + i)
        for i in range(CANARY_HISTORY)
    )
    state = replace(state, canary=outcomes[-1], canaries=outcomes)
    page = sender_html(state, spans(served, events), changes(events), NOW.timestamp(), 0.0)
    assert "relay-&lt;1&gt;" in page and "relay-<1>" not in page
    assert "CRITICAL" in page and "Canary failing" in page
    assert "client_auth_eku" in page and "clientAuth" in page
    assert "In the order the relay sent it" in page
    assert f"<td>127.0.0.5</td><td><code>{new[:16]}</code> (the newest)" in page
    assert old.sha256[:16] in page and "Certificate history" in page
    assert page.count("<td>arrived</td>") + page.count("<td><b>failed</b></td>") == CANARY_HISTORY


def test_a_sender_without_a_session_has_a_view_too(pki: Hierarchy, trust: TrustStore) -> None:
    sender = SenderConfig("contoso", "relay-9", ("127.0.0.9/32",), Policy())
    page = sender_html(SenderState(sender), [], [], NOW.timestamp(), 0.0)
    assert "No session from this sender yet" in page and "UNKNOWN" in page
    assert "No canary configured" in page


def test_the_sender_view_names_the_inbound_connector_and_its_failing_rules(
    pki: Hierarchy, trust: TrustStore
) -> None:
    """Its readiness is the inbound connector's, named as the senders table and the endpoint
    view name theirs (exo): before, the view said only "ready: no"."""
    policy = replace(
        Policy(), certificate_domain="*.fabrikam.test", inbound_connector="From <relay>"
    )
    leaf = pki.leaf(("relay.contoso.test",))
    chain = tuple(c.public_bytes(Encoding.DER) for c in pki.chain(leaf))
    session = Session("127.0.0.5", 2525, NOW.timestamp(), helo="r", tls=TLS, chain_der=chain)
    result = judge_session(session, policy, trust, now=NOW, name="relay-1")
    sender = SenderConfig("contoso", "relay-1", ("127.0.0.0/24",), policy)
    page = sender_html(SenderState(sender, result), [], [], NOW.timestamp(), 0.0)
    assert (
        "Exchange Online NOT ready for the inbound connector &#x27;From &lt;relay&gt;&#x27;"
        " (TlsSenderCertificateName *.fabrikam.test): certificate_domain, accepted_domain"
        " fails" in page
    )

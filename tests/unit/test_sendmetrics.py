"""The send side's series: every family of SEND_SIDE_METRICS is emitted from sender states,
with label values from the configuration and closed enums only. No sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from tests.support.pki import Hierarchy
from tlsprobe.exporter.config.send import CanaryConfig, SenderConfig
from tlsprobe.exporter.exposition.metrics import SEND_SIDE_METRICS, TextRenderer
from tlsprobe.exporter.exposition.send import receiver_samples, sender_samples
from tlsprobe.exporter.history.store import Drift, StoredCert
from tlsprobe.exporter.pages.senders import senders_section
from tlsprobe.exporter.state import CanaryState, SenderState
from tlsprobe.model import CanaryReason, Policy, ProbeError, Reason, Status, TlsInfo
from tlsprobe.probe.change import classify, leaf_record
from tlsprobe.probe.send import canary
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.smtp.reply import MESSAGE_CHARS
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
CANARY = CanaryConfig(canary.Relay("127.0.0.1", recipient="c@x.test"), interval=60, deadline=30)


def sender(name: str) -> SenderConfig:
    return SenderConfig(
        "contoso", name, ("127.0.0.1/32",), Policy(), canary=CANARY, session_expected_within=150
    )


def states(pki: Hierarchy, trust: TrustStore) -> list[SenderState]:
    leaf = pki.leaf(("relay.contoso.test",))
    good = Session("127.0.0.1", 2525, NOW.timestamp(), helo="r", tls=TLS, chain_der=(leaf.der,))
    plain = Session("127.0.0.1", 2525, NOW.timestamp(), error=ProbeError(Reason.PROTOCOL, "x"))
    ok = judge_session(good, Policy(), trust, now=NOW, name="relay-1")
    assert ok.leaf is not None
    leaf_facts = ok.leaf
    failed = judge_session(plain, Policy(), trust, now=NOW, name="relay-2")
    arrived = CanaryState(True, NOW.timestamp(), 1.5, last_success_at=NOW.timestamp())
    missing = CanaryState(False, NOW.timestamp(), None, CanaryReason.MISSING, "late", 0.0)
    return [
        SenderState(
            sender("relay-1"),
            ok,
            Drift(
                leaf.sha256,
                1.0,
                2,
                StoredCert("ab" * 32, "CN=old", "CN=CA", ("r.test",), 2.0),
                classify(None, leaf_record(leaf_facts, ok.checks)),
            ),
            3,
            arrived,
        ),
        SenderState(sender("relay-2"), failed, None, 1, missing, ((CanaryReason.MISSING, 4),)),
    ]


def test_every_send_side_family_is_emitted(pki: Hierarchy, trust: TrustStore) -> None:
    extra = [s for state in states(pki, trust) for s in sender_samples(state)]
    extra += list(
        receiver_samples(unknown_peers=2, refused=1, evicted=1, active=0, limit=20, senders=2)
    )
    text = TextRenderer().render([], extra).decode()
    emitted = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert emitted == {m.sample_name for m in SEND_SIDE_METRICS}


def test_sender_labels_are_tenant_and_sender(pki: Hierarchy, trust: TrustStore) -> None:
    text = TextRenderer().render([], sender_samples(states(pki, trust)[1])).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["tenant"] == "contoso" and sample.labels["sender"] == "relay-2"
    assert (
        'tlsprobe_canary_failure_info{tenant="contoso",sender="relay-2",reason="missing"} 1.0'
        in text
    )


def test_the_status_page_shows_a_huge_canary_refusal_bounded() -> None:
    """A relay's 160 MB 550 became a 160 MB status page on every request: a canary state
    holds one clipped line, whoever built it (an outcome, or a row read back from disk)."""
    refusal = "relay refused: 550 " + "x" * 1_000_000
    failed = CanaryState(False, NOW.timestamp(), None, CanaryReason.SUBMIT_REFUSED, refusal)
    colours = dict.fromkeys(Status, "#fff")
    state = SenderState(sender("relay-1"), canary=failed)
    page = senders_section([state], NOW.timestamp(), colours).html
    assert len(failed.message) <= MESSAGE_CHARS
    assert "relay refused: 550 xxx" in page and len(page) < 5000

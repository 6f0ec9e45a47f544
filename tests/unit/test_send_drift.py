"""The drift of a sender's client certificate (`exporter.senders.SendSide`): a sibling
intermediate of the same CA is a renewal unless the sender's `server_target` is a server whose
connector names the issuer (Exchange). Sessions are made here and handed to the send side as
the receiver would; no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pki import Hierarchy, make_intermediate
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.config.send import ReceiverConfig, SenderConfig, SendSideConfig
from tlsprobe.exporter.history.store import HistoryStore, history_path
from tlsprobe.exporter.senders import SendSide
from tlsprobe.exporter.state import state_for
from tlsprobe.model import (
    ChangeClass,
    ChangeReason,
    Endpoint,
    Policy,
    ProbeResult,
    Status,
    TlsInfo,
)
from tlsprobe.probe.send.sender import Session
from tlsprobe.probe.x509.evaluate import TrustStore

TLS13 = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
PEER = "127.0.0.2"


@pytest.mark.parametrize(
    ("server_target", "expected"),
    [
        pytest.param(None, ChangeClass.RENEWAL, id="no-server-target"),
        pytest.param("postfix-relay", ChangeClass.RENEWAL, id="postfix"),
        pytest.param("exchange-relay", ChangeClass.RISKY, id="exchange"),
    ],
)
def test_a_senders_sibling_intermediate_is_judged_by_its_server_target(
    tmp_path: Path,
    pki: Hierarchy,
    trust: TrustStore,
    server_target: str | None,
    expected: ChangeClass,
) -> None:
    sender = SenderConfig(
        "contoso", "relay-1", (f"{PEER}/32",), Policy(), server_target=server_target
    )
    history = HistoryStore(history_path(tmp_path / "state"))
    side = SendSide(
        SendSideConfig(ReceiverConfig(), (sender,)),
        history=history,
        trust_for=lambda _: trust,
        server_leaf=lambda tenant, target: None,
        issuer_bound=lambda tenant, target: (tenant, target) == ("contoso", "exchange-relay"),
    )
    for days, name in ((60, "R10"), (90, "R11")):
        intermediate = make_intermediate(pki.root, name)
        leaf = Hierarchy(pki.root, intermediate).leaf(("relay.contoso.test",), days=days)
        side.on_session(Session(PEER, 2525, 0.0, tls=TLS13, chain_der=(leaf.der, intermediate.der)))
    history.close()
    (state,) = side.snapshot()
    assert state.drift is not None and state.drift.change is not None
    change = state.drift.change
    assert change.change is expected
    renewed = expected is ChangeClass.RENEWAL
    reason = ChangeReason.INTERMEDIATE_ROTATED if renewed else ChangeReason.ISSUER_CHANGED
    assert change.reasons == (reason,)


def test_the_server_targets_banner_decides_for_its_senders(tmp_path: Path) -> None:
    """What `serve` hands the send side: a target whose server said Exchange binds the issuer;
    an `issuer_bound: false` target does not, whatever its banner."""
    exporter = Exporter(
        parse_config(
            {
                "targets": [
                    {"name": "exchange-relay", "host": "ex.contoso.test"},
                    {"name": "unbound", "host": "ex2.contoso.test", "issuer_bound": False},
                    {"name": "postfix-relay", "host": "pf.contoso.test"},
                ]
            },
            base_dir=tmp_path,
        )
    )
    banners = {
        "exchange-relay": "S: 220 ex.contoso.test Microsoft ESMTP MAIL Service ready",
        "unbound": "S: 220 ex2.contoso.test Microsoft ESMTP MAIL Service ready",
        "postfix-relay": "S: 220 pf.contoso.test ESMTP Postfix",
    }
    for target in exporter.config.targets:
        endpoint = Endpoint(target.host or "", target=target.name)
        result = ProbeResult(
            endpoint, None, 0.0, Status.OK, None, TLS13, (), (), {}, (banners[target.name],)
        )
        exporter.results.put(state_for(target, result))
    bound = {name: exporter.issuer_bound("", name) for name in banners}
    assert bound == {"exchange-relay": True, "unbound": False, "postfix-relay": False}
    assert not exporter.issuer_bound("", "not-configured")

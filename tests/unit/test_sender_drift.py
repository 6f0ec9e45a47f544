"""One drift history and one monotonic change counter per sender, across all its addresses.

A sender is a relay: one node, or a pool behind several addresses, or a `peers:` network. The
send side is judged per session, whichever address it comes from, so the history must be the
sender's: a certificate is a change when none of the sender's addresses presents it, and never
again when sessions alternate between nodes that present different ones (before, the counter
was kept per peer address and published per sender, so it read 0,1,0,1 with two nodes and
`increase()` paged again with nothing changed). Sessions are handed to `SendSide.on_session`
directly, with a real history database; no sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Hierarchy, Issued
from tlsprobe.exporter.config.send import ReceiverConfig, SenderConfig, SendSideConfig
from tlsprobe.exporter.exposition.send import sender_samples
from tlsprobe.exporter.history.store import HistoryStore
from tlsprobe.exporter.presented import MAX_ADDRESSES, WINDOW
from tlsprobe.exporter.senders import SendSide
from tlsprobe.model import ChangeClass, ChangeReason, Policy, TlsInfo
from tlsprobe.probe.send.sender import Session
from tlsprobe.probe.x509.evaluate import TrustStore

TLS = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256")
NOW = datetime.now(UTC).timestamp()


def side(
    history: HistoryStore, trust: TrustStore, peers: str = "127.0.0.0/20", target: str | None = None
) -> SendSide:
    relay = SenderConfig("contoso", "relay-1", (peers,), Policy(), server_target=target)
    config = SendSideConfig(ReceiverConfig(), (relay,))
    return SendSide(config, history=history, trust_for=lambda _: trust, server_leaf=lambda *_: None)


def send(send_side: SendSide, peer: str, leaf: Issued, pki: Hierarchy, at: float) -> int:
    """One session; the sender's published change counter after it."""
    chain = tuple(c.public_bytes(Encoding.DER) for c in pki.chain(leaf))
    send_side.on_session(Session(peer, 2525, at, helo="relay", tls=TLS, chain_der=chain))
    [state] = send_side.snapshot()
    assert state.drift is not None
    return state.drift.changes_total


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryStore]:
    store = HistoryStore(tmp_path / "history.sqlite3")
    yield store
    store.close()


def test_the_change_counter_is_the_senders_and_never_goes_back(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    old, new = pki.leaf(("relay.contoso.test",)), pki.leaf(("relay.contoso.test",))
    relays = side(history, trust)
    seen = [
        send(relays, "127.0.0.1", old, pki, NOW),
        send(relays, "127.0.0.2", old, pki, NOW + 1),
        send(relays, "127.0.0.1", new, pki, NOW + 2),  # node 1 renewed: a change
        send(relays, "127.0.0.2", old, pki, NOW + 3),  # node 2 not yet: nothing new
        send(relays, "127.0.0.1", new, pki, NOW + 4),
        send(relays, "127.0.0.2", new, pki, NOW + 5),  # node 2 catches up: not a second change
    ]
    assert seen == [0, 0, 1, 1, 1, 1]
    [state] = relays.snapshot()
    assert state.drift is not None and state.drift.fingerprint == new.sha256
    assert state.drift.previous is not None and state.drift.previous.fingerprint == old.sha256


def test_a_new_certificate_from_a_new_address_of_the_network_is_a_change(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    first, other = pki.leaf(("relay.contoso.test",)), pki.leaf(("relay.contoso.test",))
    relays = side(history, trust)
    assert send(relays, "127.0.0.1", first, pki, NOW) == 0
    assert send(relays, "127.0.0.9", other, pki, NOW + 1) == 1
    assert send(relays, "127.0.0.10", first, pki, NOW + 2) == 1  # still presented by .1


def test_a_rollback_no_address_presents_any_more_is_a_change(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    old, new = pki.leaf(("relay.contoso.test",)), pki.leaf(("relay.contoso.test",))
    relays = side(history, trust)
    send(relays, "127.0.0.1", old, pki, NOW)
    send(relays, "127.0.0.1", new, pki, NOW + 1)
    assert send(relays, "127.0.0.1", old, pki, NOW + 2) == 2


def test_one_history_row_for_a_sender_of_many_addresses(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    """3,000 addresses of a `peers:` network gave 3,001 history rows before; it is one, and
    the addresses the sender remembers are bounded."""
    leaf = pki.leaf(("relay.contoso.test",))
    relays = side(history, trust)
    count = MAX_ADDRESSES + 200
    for index in range(count):
        send(relays, f"127.0.{index // 250}.{index % 250 + 1}", leaf, pki, NOW + index)
    endpoints = {entry.key for entry in history.timeline("relay-1")}
    assert len(endpoints) == 1
    assert len(relays.presented("contoso", "relay-1")) == MAX_ADDRESSES


def test_a_restart_remembers_what_the_sender_presented(
    tmp_path: Path, trust: TrustStore, pki: Hierarchy
) -> None:
    """After a restart, a node presenting the certificate it presented before is not a change,
    even when another node's certificate is the sender's newest."""
    old, new = pki.leaf(("relay.contoso.test",)), pki.leaf(("relay.contoso.test",))
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path, flush_interval=0)
    relays = side(store, trust)
    send(relays, "127.0.0.1", old, pki, NOW)
    send(relays, "127.0.0.2", new, pki, NOW + 1)
    send(relays, "127.0.0.1", old, pki, NOW + 2)
    store.close()
    store = HistoryStore(path)
    try:
        relays = side(store, trust)
        assert send(relays, "127.0.0.1", old, pki, NOW + 3) == 1
        assert send(relays, "127.0.0.2", new, pki, NOW + 4) == 1
        [state] = relays.snapshot()  # the class of the change is kept too
        assert state.drift is not None and state.drift.change is not None
    finally:
        store.close()


def test_each_change_of_a_sender_is_classified_against_its_newest_leaf(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    """The same classifier as the server side: a clean renewal (same names and CA, later
    expiry) is `renewal`; a renewal without clientAuth (the 2026 CA change) is risky,
    `eku_lost`, and its series names the new leaf and the relay's server target."""
    first = pki.leaf(("relay.contoso.test",), days=30)
    renewed = pki.leaf(("relay.contoso.test",), days=60)
    no_client_auth = pki.leaf(("relay.contoso.test",), days=90, client_auth=False)
    relays = side(history, trust, target="relay")
    send(relays, "127.0.0.1", first, pki, NOW)
    [state] = relays.snapshot()
    assert state.drift is not None and state.drift.change is None
    send(relays, "127.0.0.2", renewed, pki, NOW + 1)
    [state] = relays.snapshot()
    assert state.drift is not None and state.drift.change is not None
    assert state.drift.change.change is ChangeClass.RENEWAL
    send(relays, "127.0.0.1", no_client_auth, pki, NOW + 2)
    [state] = relays.snapshot()
    assert state.drift is not None and state.drift.change is not None
    assert state.drift.change.risky
    assert state.drift.change.reasons == (ChangeReason.EKU_LOST,)
    samples = {name: labels for name, labels, _ in sender_samples(state)}
    assert samples["tlsprobe_sender_cert_change_info"] == (
        "contoso",
        "relay-1",
        "relay",
        no_client_auth.sha256,
        "risky",
        "eku_lost",
        "clientAuth EKU dropped",
    )
    assert samples["tlsprobe_sender_cert_previous_info"][2] == renewed.sha256


async def test_a_reload_forgets_the_addresses_of_a_removed_sender(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    relays = side(history, trust)
    send(relays, "127.0.0.1", pki.leaf(("relay.contoso.test",)), pki, NOW)
    assert len(relays.presented("contoso", "relay-1")) == 1
    other = SenderConfig("contoso", "relay-2", ("127.0.1.0/24",), Policy())
    relays.apply(SendSideConfig(ReceiverConfig(), (other,)))
    assert list(relays._presented) == []  # bounded by the configured senders


def test_a_node_silent_for_a_day_no_longer_presents_its_leaf(
    history: HistoryStore, trust: TrustStore, pki: Hierarchy
) -> None:
    """The window: a leaf only a node that stopped sending a day ago presented is a change
    again when another node presents it (a rollback to it)."""
    old, new = pki.leaf(("relay.contoso.test",)), pki.leaf(("relay.contoso.test",))
    relays = side(history, trust)
    send(relays, "127.0.0.2", old, pki, NOW)  # node 2, then silent
    send(relays, "127.0.0.1", old, pki, NOW + 1)
    assert send(relays, "127.0.0.1", new, pki, NOW + 2) == 1
    assert send(relays, "127.0.0.1", old, pki, NOW + 3) == 1  # node 2 presents it (recently)
    assert send(relays, "127.0.0.1", new, pki, NOW + 4) == 1
    assert send(relays, "127.0.0.1", old, pki, NOW + WINDOW + 10) == 2

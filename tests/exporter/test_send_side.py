"""The send side inside `tlsprobe serve`: configuration, the receiver, sender metrics, the
status page, the drift history, unknown peers, and canaries through a real Postfix relay.

The sender tests deliver with a Python client presenting a test certificate (swaks --tls-cert
style); the canary tests use the second Postfix of .ci/postfix-relay.sh (marker `postfix`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import smtplib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import METRIC_NAME, ROOT, dashboard_queries
from tests.support.broken import MAKERS
from tests.support.exporter import command, in_process
from tests.support.pki import Hierarchy, Issued, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.smtpclients import check_named, relay_from_env, send_canary
from tests.support.wait import eventually
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import ConfigError, load_config, sendparse
from tlsprobe.exporter.exposition.metrics import METRIC_NAMES
from tlsprobe.model import Status

CANARY_RCPT = "canary@receiver.tlsprobe.test"
RELAY_RECEIVER_PORT = 10027
WAIT = 15.0


def config_data(
    tmp_path: Path, ca_file: Path, *, receiver_port: int, **sender: Any
) -> dict[str, Any]:
    relay_1 = {"name": "relay-1", "peers": ["127.0.0.1"], **sender}
    return {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}"},
        "defaults": {"interval": "1h", "timeout": "2s", "retries": 0, "ca_file": str(ca_file)},
        "receiver": {"listen": f"127.0.0.1:{receiver_port}", "recipients": [CANARY_RCPT]},
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.test"],
                "certificate_domain": "*.contoso.test",
                "targets": [
                    {
                        "name": "mx",
                        "host": "mx.contoso.test",
                        "address": "127.0.0.1",
                        "port": unused_port(),
                    }
                ],
                "senders": [relay_1],
            }
        },
    }


@contextlib.asynccontextmanager
async def running(tmp_path: Path, data: dict[str, Any]) -> AsyncIterator[Exporter]:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(data))
    async with in_process(path) as exporter:
        yield exporter


async def get(exporter: Exporter, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(exporter.url + path) as response:
        assert response.status == 200
        return await response.text()


async def sent(exporter: Exporter, port: int, certfile: Path, keyfile: Path) -> None:
    """One session from the sender relay-1 with this client certificate, judged."""
    await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile, rcpt=CANARY_RCPT)
    side = exporter.send_side
    assert side is not None
    await eventually(lambda: side.snapshot()[0].result is not None, "the sender's verdict")


DASHBOARD = ROOT / "grafana" / "dashboards" / "tlsprobe.json"


def values(text: str, name: str, **labels: str) -> list[float]:
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def client_files(tmp_path: Path, pki: Hierarchy, leaf: Issued) -> tuple[Path, Path]:
    return write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="relay")


def tlsprobe_history(name: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("history", name, "--state-dir", str(state_dir)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


# --- configuration -------------------------------------------------------------------------


def test_the_receiver_is_off_by_default_and_loopback_when_on(tmp_path: Path, ca_file: Path) -> None:
    data = config_data(tmp_path, ca_file, receiver_port=2525)
    data["receiver"] = {}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    send = load_config(path).send
    assert send is not None and send.receiver.listen_host == "127.0.0.1"
    assert send.senders[0].peers == ("127.0.0.1/32",)
    assert send.senders[0].policy.certificate_domain == "*.contoso.test"
    del data["receiver"]
    del data["tenants"]["contoso"]["senders"]
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).send is None


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"peers": ["not-an-ip"]}, "tenants.contoso.senders[0].peers[0]"),
        ({"peers": []}, "tenants.contoso.senders[0].peers"),
        ({"bogus": 1}, "tenants.contoso.senders[0]"),
        ({"canary": {"relay": "127.0.0.1:25"}}, "tenants.contoso.senders[0].canary"),
        (
            {"canary": {"relay": "127.0.0.1:25", "recipient": "x@y.test", "username": "u"}},
            "tenants.contoso.senders[0].canary",
        ),
    ],
)
def test_bad_sender_configuration_names_the_key(
    tmp_path: Path, ca_file: Path, change: dict[str, Any], key: str
) -> None:
    data = config_data(tmp_path, ca_file, receiver_port=2525, **change)
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == key, str(caught.value)


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ({}, None),
        ({"canary": {"relay": "127.0.0.1:25", "recipient": CANARY_RCPT}}, 2 * 300 + 120),
        ({"canary": {"relay": "127.0.0.1:25", "recipient": CANARY_RCPT, "interval": "1m"}}, 240),
        ({"session_expected_within": "2h"}, 7200),
    ],
)
def test_when_a_sender_is_expected_to_send_again(
    tmp_path: Path, ca_file: Path, sender: dict[str, Any], expected: float | None
) -> None:
    """TlsprobeSenderSilent's threshold: twice the canary interval plus its deadline unless
    set; none without a canary unless set."""
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, ca_file, receiver_port=2525, **sender)))
    send = load_config(path).send
    assert send is not None and send.senders[0].session_expected_within == expected


def test_senders_without_a_receiver_are_an_error(tmp_path: Path, ca_file: Path) -> None:
    data = config_data(tmp_path, ca_file, receiver_port=2525)
    del data["receiver"]
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == "receiver"


def test_a_canary_password_is_read_from_its_file_and_never_shown(
    tmp_path: Path, ca_file: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-canary-pass\n")
    canary = {
        "relay": "127.0.0.1:25",
        "recipient": "c@x.test",
        "username": "u",
        "password_file": "password",
    }
    data = config_data(tmp_path, ca_file, receiver_port=2525, canary=canary)
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    send = load_config(path).send
    assert send is not None and send.senders[0].canary is not None
    assert send.senders[0].canary.relay.password == "s3cr3t-canary-pass"
    assert "s3cr3t" not in repr(send)
    secret.write_text("one\ntwo\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "s3cr3t" not in str(caught.value) and "two" not in str(caught.value)


# --- serving -------------------------------------------------------------------------------


async def test_a_sender_session_becomes_metrics_a_status_row_and_history(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    leaf = pki.leaf(("relay.contoso.test",), client_auth=False)
    certfile, keyfile = client_files(tmp_path, pki, leaf)
    port = unused_port()
    async with running(tmp_path, config_data(tmp_path, ca_file, receiver_port=port)) as exporter:
        await sent(exporter, port, certfile, keyfile)
        text = await get(exporter, "/metrics")
        page = await get(exporter, "/")
        mine = await get(exporter, "/?tenant=contoso")
        other = await get(exporter, "/?tenant=fabrikam")  # a view of another tenant
        detail = await get(exporter, "/sender?tenant=contoso&sender=relay-1")
        unknown = exporter.url + "/sender?tenant=contoso&sender=nope"
        async with aiohttp.ClientSession() as http, http.get(unknown) as missing:
            assert missing.status == 404
    labels = {"tenant": "contoso", "sender": "relay-1"}
    assert leaf.sha256 in detail and "client_auth_eku" in detail and "Chain as sent" in detail
    assert "Certificate history" in detail and leaf.sha256[:16] in detail.split("history")[-1]
    assert values(text, "tlsprobe_sender_status", **labels) == [1.0]  # warning: no clientAuth
    assert values(text, "tlsprobe_sender_check_status", check="client_auth_eku", **labels) == [1.0]
    assert values(text, "tlsprobe_sender_o365_ready", **labels) == [1.0]
    assert values(text, "tlsprobe_sender_cert_info", fingerprint_sha256=leaf.sha256, **labels) == [
        1.0
    ]
    assert values(text, "tlsprobe_sender_sessions_total", **labels) == [1.0]
    assert "relay-1" in page and leaf.sha256[:16] in page and "client_auth_eku" in page
    assert "relay-1" in mine and "relay-1" not in other  # a tenant's view, its senders only
    assert "1 warning" in page.split("</p>")[0]  # the sender counts in the header
    history = await asyncio.to_thread(tlsprobe_history, "relay-1", tmp_path / "state")
    assert history.returncode == 0, history.stderr
    assert leaf.sha256[:16] in history.stdout and "sender:relay-1" in history.stdout


async def test_a_sender_verdict_survives_a_restart(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """A restart must not resolve a sender page: the last verdict is served again at start,
    before the relay sends again, and a sender removed from the configuration is forgotten."""
    leaf = pki.leaf(("relay.contoso.test",), client_auth=False)
    certfile, keyfile = client_files(tmp_path, pki, leaf)
    port = unused_port()
    data = config_data(tmp_path, ca_file, receiver_port=port)
    labels = {"tenant": "contoso", "sender": "relay-1"}
    async with running(tmp_path, data) as exporter:
        await sent(exporter, port, certfile, keyfile)
    async with running(tmp_path, data) as exporter:
        text = await get(exporter, "/metrics")
        page = await get(exporter, "/")
    assert values(text, "tlsprobe_sender_status", **labels) == [1.0]
    assert values(text, "tlsprobe_sender_o365_ready", **labels) == [1.0]
    assert values(text, "tlsprobe_sender_check_status", check="client_auth_eku", **labels) == [1.0]
    assert values(text, "tlsprobe_sender_cert_info", fingerprint_sha256=leaf.sha256, **labels) == [
        1.0
    ]
    assert leaf.sha256[:16] in page

    data["tenants"]["contoso"]["senders"][0]["name"] = "relay-2"
    async with running(tmp_path, data) as exporter:
        text = await get(exporter, "/metrics")
    assert values(text, "tlsprobe_sender_status", **labels) == []
    async with running(tmp_path, config_data(tmp_path, ca_file, receiver_port=port)) as exporter:
        text = await get(exporter, "/metrics")
    assert values(text, "tlsprobe_sender_status", **labels) == [], "a removed sender's row stays"


@pytest.mark.parametrize("kind", ["version-4", "utc-time-offset", "boolean-true-0x01"])
async def test_a_client_certificate_cryptography_refuses_replaces_the_old_ok(
    tmp_path: Path, ca_file: Path, pki: Hierarchy, kind: str
) -> None:
    """The receiver raised out of the session on such a leaf: nothing was recorded and the
    sender kept its OK. Now the session is judged like the server side judges the same bytes."""
    leaf = pki.leaf(("relay.contoso.test",))
    port = unused_port()
    labels = {"tenant": "contoso", "sender": "relay-1"}
    async with running(tmp_path, config_data(tmp_path, ca_file, receiver_port=port)) as exporter:
        side = exporter.send_side
        assert side is not None
        certfile, keyfile = client_files(tmp_path, pki, leaf)
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile)
        await eventually(lambda: side.snapshot()[0].sessions == 1, "the first session")
        assert values(await get(exporter, "/metrics"), "tlsprobe_sender_status", **labels) == [0]
        broken = MAKERS[kind](leaf.der, pki.intermediate.key)
        write_server_files(tmp_path, leaf.key, [broken, pki.intermediate.der], stem="relay")
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile)
        await eventually(lambda: side.snapshot()[0].sessions == 2, "the second session")
        text = await get(exporter, "/metrics")
    assert values(text, "tlsprobe_sender_status", **labels) == [2.0]
    assert values(text, "tlsprobe_sender_o365_ready", **labels) == [0.0]
    assert values(text, "tlsprobe_sender_check_status", check="certificate_format", **labels) == [
        2.0
    ]
    fingerprint = hashlib.sha256(broken).hexdigest()
    assert values(text, "tlsprobe_sender_cert_info", fingerprint_sha256=fingerprint, **labels)


async def test_a_configured_sender_gets_through_a_receiver_full_of_strangers(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """The configured relay got 421 on 34 of 34 tries while unknown addresses held every slot
    with silent connections: now its session takes an unknown peer's slot."""
    leaf = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = client_files(tmp_path, pki, leaf)
    port = unused_port()
    data = config_data(tmp_path, ca_file, receiver_port=port)
    data["receiver"] |= {"max_sessions": 2, "idle_eviction": "1h"}
    async with running(tmp_path, data) as exporter:
        side = exporter.send_side
        assert side is not None
        strangers = []
        for source in ("127.0.0.2", "127.0.0.3"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"220 ")
            strangers.append(writer)
        await asyncio.to_thread(send_canary, port, certfile=certfile, keyfile=keyfile)
        await eventually(lambda: side.snapshot()[0].result is not None, "the sender's verdict")
        text = await get(exporter, "/metrics")
        for writer in strangers:
            writer.close()
    labels = {"tenant": "contoso", "sender": "relay-1"}
    assert values(text, "tlsprobe_sender_status", **labels) == [0.0]
    assert values(text, "tlsprobe_receiver_evicted_sessions_total") == [1.0]
    assert values(text, "tlsprobe_receiver_session_limit") == [2.0]


@contextlib.asynccontextmanager
async def silent_relay() -> AsyncIterator[int]:
    """A relay that accepts the connection and never greets: a canary submission hangs."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_canary_failure_survives_a_restart(tmp_path: Path, ca_file: Path) -> None:
    """A restart must not resolve TlsprobeCanaryMissing or start its `for:` over: the last
    canary outcome is served again at start, until the first canary after it has its own."""
    relay = f"127.0.0.1:{unused_port()}"
    canary = {"relay": relay, "recipient": CANARY_RCPT, "interval": "1h", "deadline": "30s"}
    data = config_data(tmp_path, ca_file, receiver_port=unused_port(), canary=canary)
    labels = {"tenant": "contoso", "sender": "relay-1"}
    async with running(tmp_path, data) as exporter:
        side = exporter.send_side
        assert side is not None
        await eventually(lambda: side.snapshot()[0].canary is not None, "the canary's outcome")
        before = side.snapshot()[0].canary
    assert before is not None and before.reason is not None
    async with silent_relay() as port:
        data["tenants"]["contoso"]["senders"][0]["canary"]["relay"] = f"127.0.0.1:{port}"
        async with running(tmp_path, data) as exporter:
            restarted = exporter.send_side
            assert restarted is not None
            text = await get(exporter, "/metrics")
            restored = restarted.snapshot()[0].canary
    assert restored == before  # the first canary after the start is still submitting
    assert values(text, "tlsprobe_canary_success", **labels) == [0.0]
    reason = before.reason.value
    assert values(text, "tlsprobe_canary_failure_info", reason=reason, **labels) == [1.0]


async def test_unknown_peers_are_refused_at_rcpt_and_only_counted(
    tmp_path: Path, ca_file: Path
) -> None:
    port = unused_port()
    data = config_data(tmp_path, ca_file, receiver_port=port)
    data["tenants"]["contoso"]["senders"][0]["peers"] = ["127.0.0.2"]
    async with running(tmp_path, data) as exporter:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send_canary, port, rcpt=CANARY_RCPT)
        side = exporter.send_side
        assert side is not None
        await eventually(lambda: side.unknown_peer_sessions == 1, "the unknown peer counted")
        text = await get(exporter, "/metrics")
    assert values(text, "tlsprobe_receiver_unknown_peer_sessions_total") == [1.0]
    assert values(text, "tlsprobe_sender_status") == []  # no verdict for relay-1 yet


def test_every_send_side_series_is_in_the_metric_table() -> None:
    for name in (
        "tlsprobe_sender_status",
        "tlsprobe_canary_success",
        "tlsprobe_canary_failures_total",
        "tlsprobe_receiver_unknown_peer_sessions_total",
    ):
        assert name in METRIC_NAMES


# --- canaries through a real Postfix relay --------------------------------------------------


def canary_data(tmp_path: Path, case: str, deadline: str) -> dict[str, Any]:
    host, port, directory = relay_from_env()
    service = f"{host}:{port}"
    ca = str(directory / "certs" / "ca.pem")
    canary = {
        "relay": service,
        "recipient": f"canary@{case}.canary.tlsprobe.test",
        "mail_from": "probe@contoso.test",
        "interval": "1h",
        "deadline": deadline,
    }
    return config_data(tmp_path, Path(ca), receiver_port=RELAY_RECEIVER_PORT, canary=canary)


@pytest.mark.postfix
async def test_a_canary_through_postfix_arrives_and_is_timed(tmp_path: Path) -> None:
    async with running(tmp_path, canary_data(tmp_path, "good", "40s")) as exporter:
        side = exporter.send_side
        assert side is not None
        await eventually(lambda: side.snapshot()[0].canary is not None, "the canary", timeout=45)
        text = await get(exporter, "/metrics")
    labels = {"tenant": "contoso", "sender": "relay-1"}
    assert values(text, "tlsprobe_canary_success", **labels) == [1.0]
    [round_trip] = values(text, "tlsprobe_canary_round_trip_seconds", **labels)
    assert 0 < round_trip < 40
    assert values(text, "tlsprobe_sender_status", **labels) == [0.0]
    # The Prometheus e2e's canary never arrives: the dashboard's round-trip panel is proven here,
    # on the series this canary produced.
    (panel,) = [q for q in dashboard_queries(DASHBOARD) if q.panel == "Canary round trip"]
    assert set(METRIC_NAME.findall(panel.expr)) == {"tlsprobe_canary_round_trip_seconds"}
    assert 'tenant=~"$tenant"' in panel.expr


@pytest.mark.postfix
@pytest.mark.slow
async def test_a_canary_that_never_arrives_fails_at_its_deadline(tmp_path: Path) -> None:
    async with running(tmp_path, canary_data(tmp_path, "broken", "4s")) as exporter:
        side = exporter.send_side
        assert side is not None
        started = time.monotonic()
        await eventually(lambda: side.snapshot()[0].canary is not None, "the canary", timeout=20)
        waited = time.monotonic() - started
        text = await get(exporter, "/metrics")
    labels = {"tenant": "contoso", "sender": "relay-1"}
    assert values(text, "tlsprobe_canary_success", **labels) == [0.0]
    assert values(text, "tlsprobe_canary_failure_info", reason="missing", **labels) == [1.0]
    assert values(text, "tlsprobe_canary_failures_total", reason="missing", **labels) == [1.0]
    assert waited < 4 + 5


def test_the_example_configuration_covers_every_send_side_key() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "tlsprobe.example.yml"
    raw = yaml.safe_load(example.read_text())
    assert set(raw["receiver"]) == set(sendparse.RECEIVER_KEYS)
    [relay] = raw["tenants"]["contoso"]["senders"]
    assert set(relay) == set(sendparse.SENDER_KEYS)
    assert set(relay["canary"]) == set(sendparse.CANARY_KEYS)


async def test_same_as_server_compares_with_the_server_probe_of_the_target(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """The sender's `server_target` is probed as a server; its leaf differs from the one the
    sender presents as a client, so same_as_server warns and names both fingerprints."""
    served = pki.leaf(("relay.contoso.test",))
    presented = pki.leaf(("relay.contoso.test",))
    certfile, keyfile = client_files(tmp_path, pki, presented)
    port = unused_port()
    async with SmtpTestServer(ServerTls(pki.chain(served), served.key)) as server:
        data = config_data(tmp_path, ca_file, receiver_port=port, server_target="relay")
        data["tenants"]["contoso"]["targets"] = [
            {
                "name": "relay",
                "host": "relay.contoso.test",
                "address": "127.0.0.1",
                "port": server.port,
                # The first cycle starts within a tenth of the interval (at most 10 s): soon.
                "interval": "5s",
            }
        ]
        async with running(tmp_path, data) as exporter:
            await eventually(lambda: exporter.server_leaf("contoso", "relay"), "the server probe")
            await asyncio.to_thread(
                send_canary, port, certfile=certfile, keyfile=keyfile, rcpt=CANARY_RCPT
            )
            side = exporter.send_side
            assert side is not None
            await eventually(lambda: side.snapshot()[0].result is not None, "the verdict")
            result = side.snapshot()[0].result
    assert result is not None
    check = check_named(result, "same_as_server")
    assert check.status is Status.WARNING
    assert served.sha256 in check.message and presented.sha256 in check.message


async def test_a_sender_whose_certificate_another_tenants_connector_accepts_is_critical(
    tmp_path: Path, ca_file: Path, pki: Hierarchy
) -> None:
    """contoso's relay sends with a certificate that also names relay.fabrikam.test, which
    fabrikam's connector `*.fabrikam.test` accepts (MC1226222): the sender itself is critical,
    with a `cross_tenant` check naming fabrikam, in /metrics, the header and its detail view."""
    leaf = pki.leaf(("relay.contoso.test", "relay.fabrikam.test"))
    certfile, keyfile = client_files(tmp_path, pki, leaf)
    port = unused_port()
    data = config_data(tmp_path, ca_file, receiver_port=port)
    fabrikam_mx = {"name": "mx", "host": "mx.fabrikam.test", "address": "127.0.0.1"}
    data["tenants"]["fabrikam"] = {
        "accepted_domains": ["fabrikam.test"],
        "certificate_domain": "*.fabrikam.test",
        "targets": [{**fabrikam_mx, "port": unused_port()}],
    }
    async with running(tmp_path, data) as exporter:
        await sent(exporter, port, certfile, keyfile)
        text = await get(exporter, "/metrics")
        page = await get(exporter, "/?tenant=contoso")
        detail = await get(exporter, "/sender?tenant=contoso&sender=relay-1")
    labels = {"tenant": "contoso", "sender": "relay-1"}
    assert values(text, "tlsprobe_sender_status", **labels) == [2.0]
    assert values(text, "tlsprobe_sender_check_status", check="cross_tenant", **labels) == [2.0]
    assert values(text, "tlsprobe_sender_o365_ready", **labels) == [0.0]
    assert "1 critical" in page.split("</p>")[0]  # the sender counts in the header
    assert "cross_tenant" in detail and "tenant fabrikam" in detail
    assert "550 5.7.64 TenantAttribution" in detail

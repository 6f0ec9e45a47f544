"""End to end, the send side's pages counted as notifications: tlsprobe serve (its receiver) ->
Prometheus (the shipped rules) -> Alertmanager (the shipped routing) -> a webhook.

A relay (a Python client presenting a client certificate, swaks --tls-cert style) delivers to
tlsprobe's receiver; a real Prometheus scrapes the exporter every second and evaluates the
shipped rules with every `for:` cut to `ALERT_HOLD`; a real Alertmanager runs the shipped
routing with every receiver pointed at this test's webhook (tests/e2e/harness.py). What is
counted is what a pager would get: notifications (webhook posts) to the `pager` receiver.

1. a renewal of the relay's client certificate without the clientAuth EKU (the 2026 CA
   change) is exactly one page, and its warning goes to chat;
2. two more changes of the client certificate within a minute (far less than 30) are two more
   pages, one per new certificate (before, the change alert carried no fingerprint: the second
   change within 30 minutes paged nobody);
3. a clean renewal pages nobody (chat only);
4. a risky renewal of the relay on the server side and on the send side (the same new leaf
   served and presented) is exactly one page: Alertmanager groups the drift pages by tenant
   and new leaf (the shipped routing; its drift route keeps its long group_interval here, as
   that is what keeps a side joining later from paging the same event again).

They share the stack and run in order. Without Prometheus or Alertmanager the module skips, and
fails under TLSPROBE_REQUIRE_PROMETHEUS=1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    ALERTMANAGER_CONFIG,
    Daemons,
    LoopThread,
    Webhook,
    api,
    http_get,
    write_fast_alertmanager,
)
from tests.e2e.harness import query as prometheus_query
from tests.support.exporter import command
from tests.support.gates import prometheus_tool
from tests.support.pki import Hierarchy, Issued, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.smtpclients import send_canary
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

ALERT_HOLD = "2s"
SETTLE_SECONDS = 60.0
QUIET_SECONDS = 8.0
"""How long no further notification may come after the expected ones (Alertmanager's timers
are 1 s here, so a second notification would come within a few seconds)."""
TENANT = "contoso"
DOMAIN = "contoso.test"
SENDER = "relay-1"
RCPT = "canary@receiver.contoso.test"
CHANGED = "TlsprobeSenderCertificateChanged"


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    webhook: Webhook
    pki: Hierarchy
    tmp: Path
    receiver_port: int
    server: SmtpTestServer
    sent: int = 0

    def send(self, leaf: Issued) -> None:
        """One session of the relay presenting `leaf`; returns once Prometheus has seen it."""
        self.sent += 1
        certfile, keyfile = write_server_files(
            self.tmp, leaf.key, self.pki.chain(leaf), stem=f"relay{self.sent}"
        )
        send_canary(self.receiver_port, certfile=certfile, keyfile=keyfile, rcpt=RCPT)
        wanted = (
            f'tlsprobe_sender_cert_info{{sender="{SENDER}",fingerprint_sha256="{leaf.sha256}"}}'
        )
        poll(lambda: prometheus_query(self.prometheus, wanted), bool, timeout=SETTLE_SECONDS)

    def notifications(self, receiver: str) -> list[dict[str, Any]]:
        return [p for p in self.webhook.payloads() if p["receiver"] == receiver]

    def pages(self) -> list[dict[str, Any]]:
        return self.notifications("pager")


def exporter_config(stack_tmp: Path, ca_file: Path, port: int, server_port: int, rport: int) -> Any:
    return {
        "state_dir": str(stack_tmp / "state"),
        "web": {"listen": f"127.0.0.1:{port}", "external_url": f"http://127.0.0.1:{port}"},
        "defaults": {"interval": "3s", "timeout": "2s", "retries": 0, "ca_file": str(ca_file)},
        "receiver": {"listen": f"127.0.0.1:{rport}", "recipients": [RCPT]},
        "tenants": {
            TENANT: {
                "accepted_domains": [DOMAIN],
                "certificate_domain": f"*.{DOMAIN}",
                "targets": [
                    {
                        "name": "relay",
                        "host": f"relay.{DOMAIN}",
                        "address": "127.0.0.1",
                        "port": server_port,
                    }
                ],
                "senders": [{"name": SENDER, "peers": ["127.0.0.1"], "server_target": "relay"}],
            }
        },
    }


@pytest.fixture(scope="module")
def stack(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = prometheus_tool("prometheus")
    alertmanager = prometheus_tool("alertmanager")
    tmp = tmp_path_factory.mktemp("paging-sender")
    first = pki.leaf([f"relay.{DOMAIN}"])
    ca_file = tmp / "root.pem"
    ca_file.write_bytes(pki.ca_pem)
    with LoopThread() as loop, Webhook() as webhook:
        server = loop.run(
            SmtpTestServer(
                ServerTls(pki.chain(first), first.key), hostname=f"relay.{DOMAIN}"
            ).__aenter__()
        )
        try:
            with Daemons(tmp) as daemons:
                port, receiver_port = unused_port(), unused_port()
                config = tmp / "tlsprobe.yml"
                data = exporter_config(tmp, ca_file, port, server.port, receiver_port)
                config.write_text(yaml.safe_dump(data), encoding="utf-8")
                exporter = daemons.start(
                    "tlsprobe",
                    command("serve", "--config", str(config)),
                    f"http://127.0.0.1:{port}/-/ready",
                )
                manager = start_alertmanager(daemons, alertmanager, webhook.url)
                prom = daemons.prometheus(prometheus, exporter, manager, ALERT_HOLD)
                stack = Stack(prom, manager, webhook, pki, tmp, receiver_port, server)
                stack.send(first)  # the relay sends with the certificate it serves
                yield stack
        finally:
            loop.run(server.__aexit__(None, None, None))


def start_alertmanager(daemons: Daemons, binary: str, webhook: str) -> str:
    """The shipped routing with quick timers (harness), but the drift route's group_interval
    as shipped: a side that joins the event's group later must not page it again."""
    shipped = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    drift = next(r for r in shipped["route"]["routes"] if CHANGED in str(r["matchers"]))
    config = daemons.tmp / "alertmanager.shipped.yml"
    write_fast_alertmanager(ALERTMANAGER_CONFIG, config, webhook)
    fast = yaml.safe_load(config.read_text(encoding="utf-8"))
    route = next(r for r in fast["route"]["routes"] if CHANGED in str(r["matchers"]))
    route["group_interval"] = drift.get("group_interval", shipped["route"]["group_interval"])
    route["group_wait"] = "5s"
    config.write_text(yaml.safe_dump(fast, sort_keys=False), encoding="utf-8")
    port = unused_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={daemons.tmp / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return daemons.start("alertmanager", argv, f"http://127.0.0.1:{port}/-/ready")


def changed_alerts(payloads: list[dict[str, Any]]) -> set[str]:
    """The new fingerprints of the sender change alerts firing in these notifications."""
    return {
        alert["labels"]["fingerprint_sha256"]
        for payload in payloads
        for alert in payload["alerts"]
        if alert["labels"]["alertname"] == CHANGED and alert["status"] == "firing"
    }


def quiet(stack: Stack, pages: int) -> list[dict[str, Any]]:
    """The pages once `pages` have come and no other came for QUIET_SECONDS."""
    got = poll(stack.pages, lambda found: len(found) >= pages, timeout=SETTLE_SECONDS)
    time.sleep(QUIET_SECONDS)
    got = stack.pages()
    assert len(got) == pages, [
        [a["labels"]["alertname"] for a in p["alerts"] if a["status"] == "firing"] for p in got
    ]
    return got


def test_a_renewal_without_client_auth_is_one_page(stack: Stack) -> None:
    assert stack.pages() == [], "nothing pages while the relay is healthy"
    renewed = stack.pki.leaf([f"relay.{DOMAIN}"], days=120, client_auth=False)
    stack.send(renewed)
    (page,) = quiet(stack, 1)
    (alert,) = [a for a in page["alerts"] if a["labels"]["alertname"] == CHANGED]
    labels, annotations = alert["labels"], alert["annotations"]
    assert labels["fingerprint_sha256"] == renewed.sha256
    # eku_lost, and check_failing: it no longer sends with the certificate it serves.
    assert "eku_lost" in labels["reasons"].split(",") and labels["target"] == "relay"
    assert "clientAuth EKU dropped" in annotations["summary"]
    assert renewed.sha256 in annotations["description"]  # the new one named, and the old
    assert "Before, it presented" in annotations["description"]
    assert "/sender?tenant=contoso&sender=relay-1" in annotations["detail_url"]
    detail = api(stack.prometheus, "/api/v1/query", query="tlsprobe_sender_cert_change_info")
    assert detail["result"][0]["metric"]["change"] == "risky"

    def client_auth_warning() -> bool:
        return any(
            a["labels"]["alertname"] == "TlsprobeSenderClientAuthMissing"
            for p in stack.notifications("chat")
            for a in p["alerts"]
        )

    assert poll(client_auth_warning, bool, timeout=SETTLE_SECONDS), "the EKU warning goes to chat"


def test_two_changes_within_minutes_are_two_pages(stack: Stack) -> None:
    before = len(stack.pages())
    first = stack.pki.leaf([f"relay-b.{DOMAIN}"], client_auth=False)
    second = stack.pki.leaf([f"relay-c.{DOMAIN}"], client_auth=False)
    stack.send(first)
    poll(
        lambda: changed_alerts(stack.pages()),
        lambda fps: first.sha256 in fps,
        timeout=SETTLE_SECONDS,
    )
    stack.send(second)
    pages = quiet(stack, before + 2)[before:]
    assert changed_alerts(pages[:1]) >= {first.sha256}
    assert second.sha256 in changed_alerts(pages[1:])


def test_a_clean_renewal_pages_nobody(stack: Stack) -> None:
    before = len(stack.pages())
    renewed = stack.pki.leaf([f"relay-c.{DOMAIN}"], days=200, client_auth=False)
    stack.send(renewed)

    def renewal_in_chat() -> bool:
        return any(
            a["labels"]["alertname"] == "TlsprobeSenderCertificateRenewed"
            and a["labels"]["fingerprint_sha256"] == renewed.sha256
            for p in stack.notifications("chat")
            for a in p["alerts"]
        )

    assert poll(renewal_in_chat, bool, timeout=SETTLE_SECONDS), "the renewal goes to chat"
    time.sleep(QUIET_SECONDS)
    assert len(stack.pages()) == before


def test_a_risky_renewal_served_and_presented_is_one_page(stack: Stack) -> None:
    before = len(stack.pages())
    renewed = stack.pki.leaf([f"relay.{DOMAIN}", f"smtp.{DOMAIN}"], days=300)  # names added
    stack.server.present(ServerTls(stack.pki.chain(renewed), renewed.key))
    stack.send(renewed)

    def both_fire() -> bool:
        alerts = api(stack.prometheus, "/api/v1/alerts")["alerts"]
        return {
            a["labels"]["alertname"]
            for a in alerts
            if a["state"] == "firing" and a["labels"].get("fingerprint_sha256") == renewed.sha256
        } >= {"TlsprobeCertificateChanged", CHANGED}

    assert poll(both_fire, bool, timeout=SETTLE_SECONDS), "both sides' drift alerts fire"
    (page,) = quiet(stack, before + 1)[before:]
    assert page["groupLabels"]["fingerprint_sha256"] == renewed.sha256
    groups = json.loads(http_get(f"{stack.alertmanager}/api/v2/alerts/groups"))
    (event,) = [g for g in groups if g["labels"].get("fingerprint_sha256") == renewed.sha256]
    held = {a["labels"]["alertname"] for a in event["alerts"]}
    assert held == {"TlsprobeCertificateChanged", CHANGED}, "both sides, one group, one page"

"""What pages, counted at the pager: tlsprobe serve -> Prometheus -> Alertmanager -> a webhook.

A real `tlsprobe serve`, Prometheus and Alertmanager on loopback, with the shipped rules and
routing on a timeline scaled down `SCALE` times: one minute of the shipped timers (`for:`,
`keep_firing_for:`, Alertmanager's group_wait, group_interval and repeat_interval) is one
second here, so a 15-minute outage lasts 15 seconds and the whole module well under two
minutes. The rules' expressions are unchanged (a drift alert fires for the hour after a change,
longer than the test). Prometheus scrapes and evaluates every second, tlsprobe probes every
`PROBE_INTERVAL`. What is counted is notifications (webhook payloads per receiver), not alerts.

The tests run in order on one stack (`paging_stack`), as an on-call week would:
1. a clean renewal of a relay listening on two ports pages nobody (the chat hears of it), also
   when the CA issued it from its other intermediate (as Let's Encrypt picks R10 or R11);
2. a risky renewal of the same relay on both ports (its intermediate missing) is exactly one
   page, carrying the difference, the verdict with its cause and the advice that fits;
3. an exporter outage of `OUTAGE_MINUTES` scaled minutes while an expired certificate pages:
   no "resolved" and no second page, and the exporter's own page names it as frozen.

The send side's scenarios (the same change also on the send side is still one page, an EKU loss
on the send side, two sender changes within 30 minutes) belong here too: `running_stack` takes
a `configure` hook for the receiver and senders, and `PagingStack` counts notifications.
Without Prometheus or Alertmanager the module skips, and fails under
TLSPROBE_REQUIRE_PROMETHEUS=1.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Daemons, LoopThread, Webhook, api
from tests.e2e.harness import query as prometheus_query
from tests.support.exporter import command
from tests.support.gates import prometheus_tool
from tests.support.pki import Hierarchy, Issued, make_intermediate
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

SCALE = 60.0
"""Shipped timers divided by this: a minute is a second."""
PROBE_INTERVAL = "3s"
PROBE_TIMEOUT = "2s"
SETTLE_SECONDS = 45.0
"""Deadline for a condition to hold; polls end as soon as it does."""
QUIET_SECONDS = 4.0
"""How long nothing more may arrive: several group waits and evaluations at this scale."""
OUTAGE_MINUTES = 18
"""Scaled minutes the exporter is away: past keep_firing_for (10) and TlsprobeExporterDown's
`for:` (15)."""
TENANT = "contoso"
DOMAIN = "contoso.test"
RELAY_HOST = f"relay.{DOMAIN}"
PAIR = ("relay", "relay-587")
"""One relay listening on two ports: two targets of the same host (a target has one port)."""
EXPIRED = "old"


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    tls: ServerTls


def served(pki: Hierarchy, leaf: Issued, *, intermediate: bool = True) -> ServerTls:
    chain = pki.chain(leaf) if intermediate else (leaf.cert,)
    return ServerTls(chain, leaf.key)


def sibling(pki: Hierarchy) -> Hierarchy:
    """Another intermediate of the same root and organization (R10 beside R11)."""
    return Hierarchy(pki.root, make_intermediate(pki.root, "tlsprobe Test Sibling CA"))


def fingerprint(tls: ServerTls) -> str:
    return hashlib.sha256(tls.leaf_der).hexdigest()


def fleet(pki: Hierarchy) -> list[Target]:
    now = datetime.now(UTC)
    first = served(pki, pki.leaf([RELAY_HOST], not_before=now - timedelta(days=60)))
    expired = pki.leaf(
        [f"old.{DOMAIN}"], not_before=now - timedelta(days=90), not_after=now - timedelta(days=1)
    )
    return [
        Target(PAIR[0], RELAY_HOST, first),
        Target(PAIR[1], RELAY_HOST, first),
        Target(EXPIRED, f"old.{DOMAIN}", served(pki, expired)),
    ]


# --- the stack ------------------------------------------------------------------------------


@dataclass
class PagingStack:
    """The running stack and the notifications it delivered."""

    prometheus: str
    alertmanager: str
    webhook: Webhook
    servers: dict[str, SmtpTestServer]
    pki: Hierarchy
    daemons: PagingDaemons
    marks: dict[str, int] = field(default_factory=dict)

    def present(self, targets: tuple[str, ...], tls: ServerTls) -> None:
        for name in targets:
            self.servers[name].present(tls)

    def mark(self, name: str) -> None:
        """Remember how many notifications had arrived (`since(name)` counts from here)."""
        self.marks[name] = len(self.webhook.payloads())

    def notifications(
        self,
        *,
        since: str | None = None,
        receiver: str | None = None,
        status: str | None = None,
        alertname: str | None = None,
        targets: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Webhook payloads (one per notification) matching every filter given; a payload
        matches `alertname`/`targets` when one of its alerts does."""
        payloads = self.webhook.payloads()[self.marks[since] if since else 0 :]

        def wanted(alert: dict[str, Any]) -> bool:
            labels = alert["labels"]
            return (alertname is None or labels.get("alertname") == alertname) and (
                targets is None or labels.get("target") in targets
            )

        return [
            p
            for p in payloads
            if (receiver is None or p["receiver"] == receiver)
            and (status is None or p["status"] == status)
            and any(wanted(a) for a in p["alerts"])
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return prometheus_query(self.prometheus, expr)

    def firing(self, alertname: str) -> set[str]:
        """Targets (or instances) for which Prometheus holds `alertname` firing."""
        return {
            a["labels"].get("target") or a["labels"].get("instance", "")
            for a in api(self.prometheus, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        }


class PagingDaemons(Daemons):
    """tlsprobe serve for `targets` (plus whatever `configure` adds), Alertmanager and
    Prometheus with the shipped files scaled by `SCALE`."""

    def __init__(
        self,
        tmp: Path,
        pki: Hierarchy,
        targets: list[Target],
        servers: dict[str, SmtpTestServer],
        configure: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        super().__init__(tmp)
        self.pki, self.targets, self.servers, self.configure = pki, targets, servers, configure
        self.config = tmp / "tlsprobe.yml"
        self.exporter_port = unused_port()

    def exporter(self) -> str:
        ca_file = self.tmp / "root.pem"
        ca_file.write_bytes(self.pki.ca_pem)
        config: dict[str, Any] = {
            "state_dir": str(self.tmp / "state"),
            "web": {
                "listen": f"127.0.0.1:{self.exporter_port}",
                "external_url": f"http://127.0.0.1:{self.exporter_port}",
            },
            "defaults": {
                "interval": PROBE_INTERVAL,
                "timeout": PROBE_TIMEOUT,
                "retries": 1,
                "ca_file": str(ca_file),
                "ehlo_name": "probe.contoso.test",
            },
            "tenants": {
                TENANT: {
                    "accepted_domains": [DOMAIN],
                    "certificate_domain": f"*.{DOMAIN}",
                    "targets": [
                        {
                            "name": t.name,
                            "host": t.host,
                            "address": "127.0.0.1",
                            "port": self.servers[t.name].port,
                        }
                        for t in self.targets
                    ],
                }
            },
        }
        if self.configure is not None:
            self.configure(config)
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        return self.start_exporter()

    def start_exporter(self) -> str:
        argv = command("serve", "--config", str(self.config))
        ready = f"http://127.0.0.1:{self.exporter_port}/-/ready"
        return self.start(f"tlsprobe-{len(self.started)}", argv, ready)

    def stop_exporter(self) -> None:
        running = next(d for d in self.started if d.name.startswith("tlsprobe"))
        running.stop()
        self.started.remove(running)


@contextmanager
def running_stack(
    pki: Hierarchy,
    tmp: Path,
    targets: list[Target],
    configure: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[PagingStack]:
    """SMTP servers for `targets`, then the three daemons; everything stopped on exit."""
    prometheus_binary = prometheus_tool("prometheus")
    alertmanager_binary = prometheus_tool("alertmanager")
    with LoopThread() as loop, Webhook() as webhook:
        servers: dict[str, SmtpTestServer] = {}
        try:
            for target in targets:
                server = SmtpTestServer(target.tls, hostname=target.host)
                servers[target.name] = loop.run(server.__aenter__())
            daemons = PagingDaemons(tmp, pki, targets, servers, configure)
            with daemons:
                exporter = daemons.exporter()
                alertmanager = daemons.alertmanager(alertmanager_binary, webhook.url, SCALE)
                prometheus = daemons.prometheus(
                    prometheus_binary, exporter, alertmanager, hold="", scale=SCALE
                )
                yield PagingStack(prometheus, alertmanager, webhook, servers, pki, daemons)
        finally:
            for server in servers.values():
                loop.run(server.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def paging_stack(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagingStack]:
    with running_stack(pki, tmp_path_factory.mktemp("paging"), fleet(pki)) as stack:
        yield stack


def changes_seen(stack: PagingStack, targets: tuple[str, ...], count: int) -> bool:
    """Prometheus holds tlsprobe_cert_changes_total == count for every target."""
    selector = "|".join(targets)
    samples = stack.query(f'tlsprobe_cert_changes_total{{target=~"{selector}"}} == {count}')
    return {s["metric"]["target"] for s in samples} == set(targets)


# --- the scenarios, in order ----------------------------------------------------------------


def test_a_clean_renewal_on_two_ports_pages_nobody(paging_stack: PagingStack) -> None:
    stack = paging_stack
    assert poll(lambda: changes_seen(stack, PAIR, 0), bool, timeout=SETTLE_SECONDS)
    stack.mark("renewal")
    rotated = sibling(stack.pki)
    renewed = served(rotated, rotated.leaf([RELAY_HOST]))
    stack.present(PAIR, renewed)

    def told_to_chat() -> list[dict[str, Any]]:
        return stack.notifications(
            since="renewal", receiver="chat", alertname="TlsprobeCertificateRenewed", targets=PAIR
        )

    assert poll(told_to_chat, bool, timeout=SETTLE_SECONDS), stack.webhook.payloads()
    assert poll(
        lambda: stack.firing("TlsprobeCertificateRenewed") >= set(PAIR),
        bool,
        timeout=SETTLE_SECONDS,
    )
    time.sleep(QUIET_SECONDS)
    pages = stack.notifications(since="renewal", receiver="pager", targets=PAIR)
    assert pages == []
    classes = stack.query('tlsprobe_cert_change_info{target=~"relay|relay-587"}')
    assert {(s["metric"]["target"], s["metric"]["change"]) for s in classes} == {
        (PAIR[0], "renewal"),
        (PAIR[1], "renewal"),
    }
    assert {s["metric"]["reasons"] for s in classes} == {"intermediate_rotated"}
    (chat, *_) = told_to_chat()
    assert chat["alerts"][0]["labels"]["severity"] == "warning"
    assert fingerprint(renewed) == chat["groupLabels"]["fingerprint_sha256"]


def test_a_risky_renewal_on_two_ports_is_one_page(paging_stack: PagingStack) -> None:
    stack = paging_stack
    assert poll(lambda: changes_seen(stack, PAIR, 1), bool, timeout=SETTLE_SECONDS)
    stack.mark("risky")
    rotated = sibling(stack.pki)  # the issuer of the renewal it replaces
    risky = served(rotated, rotated.leaf([RELAY_HOST]), intermediate=False)
    stack.present(PAIR, risky)

    def pages() -> list[dict[str, Any]]:
        return stack.notifications(since="risky", receiver="pager", status="firing", targets=PAIR)

    assert poll(pages, bool, timeout=SETTLE_SECONDS), stack.webhook.payloads()
    # Both ports' drift alerts fire, and the check alert that would page the same news after
    # its (scaled) `for:` fires too: only then is "one page" a count of everything sent.
    assert poll(
        lambda: stack.firing("TlsprobeCertificateChanged") >= set(PAIR),
        bool,
        timeout=SETTLE_SECONDS,
    )
    assert poll(
        lambda: stack.firing("TlsprobeCertificateUntrusted") >= set(PAIR),
        bool,
        timeout=SETTLE_SECONDS,
    )
    time.sleep(QUIET_SECONDS)
    (page,) = pages()
    assert page["groupLabels"] == {"tenant": TENANT, "fingerprint_sha256": fingerprint(risky)}
    alert = page["alerts"][0]
    assert alert["labels"]["alertname"] == "TlsprobeCertificateChanged"
    assert alert["labels"]["severity"] == "page"
    summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
    assert summary.endswith(
        ": risky certificate change: intermediate missing; it FAILS chain_trusted"
        " (intermediate_missing)"
    ), summary
    assert "What changed: intermediate missing." in description
    assert "The old one was CN=" in description and "The new one is CN=" in description
    assert f"SHA-256 {fingerprint(risky)}" in description
    assert "install it with its intermediate" in description
    # No check failed on the certificate it replaces, so serving it again is offered.
    assert "Or serve the old certificate again meanwhile: no check failed on it." in description


def test_an_exporter_outage_with_an_expired_certificate_resolves_nothing(
    paging_stack: PagingStack,
) -> None:
    """18 scaled minutes without the exporter (keep_firing_for is 10): the expired
    certificate's page neither resolves nor pages again, and TlsprobeExporterDown names it."""
    stack = paging_stack
    expired = "TlsprobeCertificateExpired"
    assert poll(
        lambda: stack.notifications(receiver="pager", status="firing", alertname=expired),
        bool,
        timeout=SETTLE_SECONDS,
    ), stack.webhook.payloads()
    stack.mark("outage")
    stack.daemons.stop_exporter()
    time.sleep(OUTAGE_MINUTES * 60 / SCALE)
    down = stack.notifications(
        since="outage", receiver="pager", status="firing", alertname="TlsprobeExporterDown"
    )
    assert down, stack.webhook.payloads()[stack.marks["outage"] :]
    frozen = down[0]["alerts"][0]["annotations"]["description"]
    assert f"TlsprobeCertificateExpired ({TENANT}/{EXPIRED})" in frozen
    assert f"TlsprobeCertificateChanged ({TENANT}/{PAIR[0]})" in frozen
    stack.daemons.start_exporter()

    def scraped_again() -> list[dict[str, Any]]:
        return stack.query('up{job="tlsprobe"} == 1 and time() - timestamp(up) < 2')

    assert poll(scraped_again, bool, timeout=SETTLE_SECONDS)
    time.sleep(QUIET_SECONDS)
    assert EXPIRED in stack.firing("TlsprobeCertificateExpired")
    assert stack.notifications(since="outage", receiver="pager", alertname=expired) == []
    # The drift page of the relay pair was frozen too: no resolved, no second page.
    assert stack.notifications(since="outage", receiver="pager", targets=PAIR) == []

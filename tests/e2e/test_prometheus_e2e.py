"""End to end: tlsprobe serve -> Prometheus (the shipped rules) -> Alertmanager -> a webhook.

One fleet of loopback SMTP servers, each with one certificate problem (or none), is probed by
a real `tlsprobe serve`; a real Prometheus (the Debian package) scrapes it every second and
evaluates a copy of deploy/prometheus/tlsprobe.rules.yml in which every `for:` is cut to
`ALERT_HOLD` (the only change: the shipped holds of 5-30 minutes would make the test last half
an hour, and which alert fires does not depend on them); a real Alertmanager runs the shipped
routing and inhibition with every receiver pointed at a webhook this test serves.

The tests prove, in order (they share the fleet, and the last ones change it):
1. exactly the expected alerts fire for each endpoint, none for the healthy one and none about
   the exporter itself;
2. every query of the Grafana dashboard returns data;
3. every tlsprobe_* name in deploy/ and grafana/ is in the exporter's live /metrics (but the
   DNS policies dashboard's, which test_dane_e2e checks against its DNSSEC lab);
4. renewing the healthy endpoint's certificate cleanly reaches the chat, not the pager;
5. three rotations of another endpoint within a minute (a clean renewal, a rollback, a
   certificate that fails the connector rule): the renewal pages nobody, the two risky ones are
   two pages, each naming the old and the new certificate, the failing one saying so at once
   (its check alert's own page is inhibited), each linking to a detail view that answers;
6. restarting the exporter while those pages fire sends no `resolved`;
7. `tlsprobe history` shows the rollback.
8. the send side: a sender (a Python client presenting a client certificate to the receiver,
   swaks --tls-cert style) has its series, its canary (to a relay that is not there) fails, and
   swapping its client certificate for one under another name pages
   TlsprobeSenderCertificateChanged (before the restart).

Without Prometheus or Alertmanager the module skips, and fails under TLSPROBE_REQUIRE_PROMETHEUS=1.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    MAINTENANCE_SERIES,
    ROOT,
    Daemons,
    LoopThread,
    Webhook,
    api,
    dashboard_queries,
    expand_grafana,
    exposed_metrics,
    http_get,
    named_metrics,
)
from tests.e2e.harness import query as prometheus_query
from tests.support.exporter import command
from tests.support.gates import prometheus_tool
from tests.support.pki import Hierarchy, Issued, KeyKind, make_leaf, make_root, write_server_files
from tests.support.servers import Behaviour, ServerTls, SmtpTestServer, unused_port
from tests.support.smtpclients import send_canary
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = ROOT / "grafana" / "dashboards" / "tlsprobe.json"
DNS_POLICIES_DASHBOARD = ROOT / "grafana" / "dashboards" / "tlsprobe-dns-policies.json"
NEEDS_AN_ARRIVED_CANARY = frozenset({"Canary round trip"})
"""Panels of series only a canary that arrived has; this fleet's never does (see SENDER_ALERTS):
tests/exporter/test_send_side.py proves them on a canary through a real Postfix relay."""
ARRIVED_CANARY_SERIES = frozenset({"tlsprobe_canary_round_trip_seconds"})
RUNTIME_NAME = re.compile(r"\b(?:process|python)_[a-z0-9_]+")

ALERT_HOLD = "2s"
"""Every `for:` of the rules under test (see the module docstring)."""
PROBE_INTERVAL = "3s"
PROBE_TIMEOUT = "2s"
SETTLE_SECONDS = 60.0
"""Deadline for a condition to hold; polls end as soon as it does."""

TENANT = "contoso"
DOMAIN = "contoso.test"
CHANGES_OF_HEALTHY = 'tlsprobe_cert_changes_total{target="healthy"}'
PIN = "00" * 32
"""A SHA-256 fingerprint no certificate of the fleet has."""
SENDER = "relay-1"
SENDER_KEY = f"sender:{SENDER}"
SENDER_ALERTS = frozenset({"TlsprobeCanaryMissing/submit_unreachable", "TlsprobeSenderSilent"})
"""The sender presents a good client certificate; its canary's relay does not exist, so after
its one session it is silent past its session_expected_within (2 x 3 s + 2 s)."""
CANARY_RCPT = "canary@receiver.contoso.test"
CHANGES_OF_SENDER = f'tlsprobe_sender_cert_changes_total{{sender="{SENDER}"}}'


@dataclass(frozen=True)
class Endpoint:
    """One SMTP server of the fleet, how tlsprobe is told about it, and what must fire."""

    name: str
    host: str
    tls: ServerTls | None
    alerts: frozenset[str]
    """Expected firing alerts as `alertname` or `alertname/reason`."""
    behaviour: Behaviour = Behaviour.NORMAL
    settings: dict[str, Any] = field(default_factory=dict)
    """Extra target keys for the tlsprobe configuration."""


def fleet_plan(pki: Hierarchy) -> list[Endpoint]:
    now = datetime.now(UTC)

    def served(*names: str, **leaf: Any) -> ServerTls:
        issued = pki.leaf(names, **leaf)
        return ServerTls(pki.chain(issued), issued.key)

    private_root = make_root("Contoso Private Root CA")
    private_leaf = make_leaf(private_root, [f"private.{DOMAIN}"])
    weak_leaf = pki.leaf([f"weak.{DOMAIN}"], key=KeyKind.RSA1024)
    lone_leaf = pki.leaf([f"edge.{DOMAIN}"])
    expired = served(
        f"old.{DOMAIN}", not_before=now - timedelta(days=400), not_after=now - timedelta(days=3)
    )
    not_ready = "TlsprobeNotO365Ready"
    return [
        Endpoint("healthy", f"relay.{DOMAIN}", served(f"relay.{DOMAIN}"), frozenset()),
        # Rotated three times by the last tests (renewal, rollback, a wrong name).
        Endpoint(
            "rotating",
            f"rotate.{DOMAIN}",
            served(f"rotate.{DOMAIN}"),
            frozenset(),
            # Dialled by name (an MX, say): its host-name check is a real one.
            settings={"hostname_check": "required"},
        ),
        Endpoint(
            "expiring",
            f"relay2.{DOMAIN}",
            # A 90-day leaf whose renewal at 30 days left is 18 days overdue.
            served(
                f"relay2.{DOMAIN}",
                not_before=now - timedelta(days=78),
                not_after=now + timedelta(days=12),
            ),
            frozenset({"TlsprobeCertificateExpiringSoon"}),
        ),
        Endpoint(
            "expiring-critical",
            f"relay3.{DOMAIN}",
            served(
                f"relay3.{DOMAIN}",
                not_before=now - timedelta(days=87),
                not_after=now + timedelta(days=3),
            ),
            # Still valid, but a critical check is never "ready" (Alertmanager inhibits the
            # summary alert behind the specific one).
            frozenset({"TlsprobeCertificateExpiringCritical", not_ready}),
        ),
        Endpoint(
            "expired",
            f"old.{DOMAIN}",
            expired,
            frozenset(
                {
                    "TlsprobeCertificateExpired",
                    "TlsprobeCertificateUntrusted/leaf_expired",
                    not_ready,
                }
            ),
        ),
        Endpoint(
            "untrusted",
            f"private.{DOMAIN}",
            ServerTls((private_leaf.cert, private_root.cert), private_leaf.key),
            frozenset({"TlsprobeCertificateUntrusted/unknown_root", not_ready}),
        ),
        Endpoint(
            "missing-intermediate",
            f"edge.{DOMAIN}",
            ServerTls((lone_leaf.cert,), lone_leaf.key),
            frozenset({"TlsprobeCertificateUntrusted/intermediate_missing", not_ready}),
        ),
        Endpoint(
            "wrong-name",
            f"mail.{DOMAIN}",
            served("www.fabrikam.example"),
            frozenset({"TlsprobeHostnameMismatch", "TlsprobeCertificateDomainMismatch", not_ready}),
            # The MX of the domain: its host-name check is a real one.
            settings={"hostname_check": "required"},
        ),
        Endpoint(
            "not-accepted",
            "relay.fabrikam.test",
            served("relay.fabrikam.test"),
            frozenset({"TlsprobeAcceptedDomainMismatch", not_ready}),
            settings={"certificate_domain": "*.fabrikam.test"},
        ),
        Endpoint(
            "weak-key",
            f"weak.{DOMAIN}",
            ServerTls(pki.chain(weak_leaf), weak_leaf.key),
            frozenset({"TlsprobeWeakCertificate", not_ready}),
        ),
        Endpoint(
            "pinned",
            f"pinned.{DOMAIN}",
            served(f"pinned.{DOMAIN}"),
            frozenset({"TlsprobePinnedCertificateMismatch", not_ready}),
            settings={"expected_certificate": PIN},
        ),
        Endpoint(
            "no-starttls",
            f"legacy.{DOMAIN}",
            None,
            frozenset({"TlsprobeStarttlsUnavailable", "TlsprobeEndpointTlsBroken/no_starttls"}),
            behaviour=Behaviour.NO_STARTTLS,
        ),
        # 421 is transient: the exporter retries it, which tlsprobe_retries_total must show.
        Endpoint(
            "throttled",
            f"busy.{DOMAIN}",
            None,
            frozenset({"TlsprobeEndpointUnreachable/throttled"}),
            behaviour=Behaviour.GREETING_421,
        ),
    ]


# --- fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    exporter: str
    prometheus: str
    alertmanager: str
    webhook: Webhook
    endpoints: dict[str, Endpoint]
    servers: dict[str, SmtpTestServer]
    loop: LoopThread
    pki: Hierarchy
    daemons: StackDaemons


@pytest.fixture(scope="module")
def stack(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = prometheus_tool("prometheus")
    alertmanager = prometheus_tool("alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    plan = fleet_plan(pki)
    with LoopThread() as loop, Webhook() as webhook:
        servers = start_servers(loop, plan)
        try:
            daemons = StackDaemons(tmp, pki, plan, servers, webhook, prometheus, alertmanager)
            with daemons:
                urls = daemons.up()
                send_as_sender(pki, tmp, daemons.receiver_port, "first")
                endpoints = {e.name: e for e in plan}
                yield Stack(*urls, webhook, endpoints, servers, loop, pki, daemons)
        finally:
            for server in servers.values():
                loop.run(server.__aexit__(None, None, None))


def start_servers(loop: LoopThread, plan: list[Endpoint]) -> dict[str, SmtpTestServer]:
    servers: dict[str, SmtpTestServer] = {}
    for endpoint in plan:
        server = SmtpTestServer(endpoint.tls, behaviour=endpoint.behaviour, hostname=endpoint.host)
        servers[endpoint.name] = loop.run(server.__aenter__())
    return servers


class StackDaemons(Daemons):
    """tlsprobe serve, Alertmanager and Prometheus, configured for this fleet; stopped on exit."""

    def __init__(
        self,
        tmp: Path,
        pki: Hierarchy,
        plan: list[Endpoint],
        servers: dict[str, SmtpTestServer],
        webhook: Webhook,
        prometheus: str,
        alertmanager: str,
    ) -> None:
        super().__init__(tmp)
        self.pki, self.plan, self.servers = pki, plan, servers
        self.webhook, self.binaries = webhook, (prometheus, alertmanager)
        self.config = tmp / "tlsprobe.yml"
        self.exporter_ready = ""
        self.receiver_port = unused_port()

    def up(self) -> tuple[str, str, str]:
        """Start the three; their base URLs (exporter, Prometheus, Alertmanager)."""
        exporter = self.exporter()
        alertmanager = self.alertmanager(self.binaries[1], self.webhook.url)
        prometheus = self.prometheus(self.binaries[0], exporter, alertmanager, ALERT_HOLD)
        return exporter, prometheus, alertmanager

    def exporter(self) -> str:
        ca_file = self.tmp / "root.pem"
        ca_file.write_bytes(self.pki.ca_pem)
        port = unused_port()
        config = exporter_config(self.plan, self.servers, ca_file, self.tmp / "state", port)
        send = send_side_config(self.receiver_port)
        config["receiver"] = send["receiver"]
        config["tenants"][TENANT]["senders"] = send["tenants"][TENANT]["senders"]
        self.config = self.tmp / "tlsprobe.yml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.exporter_ready = f"http://127.0.0.1:{port}/-/ready"
        argv = command("serve", "--config", str(self.config))
        return self.start("tlsprobe", argv, self.exporter_ready)

    def restart_exporter(self) -> None:
        """SIGTERM the exporter and start it again on the same port and state directory."""
        old = next(d for d in self.started if d.name.startswith("tlsprobe"))
        old.stop()
        self.started.remove(old)
        argv = command("serve", "--config", str(self.config))
        self.start(f"tlsprobe-{len(self.started)}", argv, self.exporter_ready)


def exporter_config(
    plan: list[Endpoint],
    servers: dict[str, SmtpTestServer],
    ca_file: Path,
    state_dir: Path,
    port: int,
) -> dict[str, Any]:
    targets = [
        {
            "name": e.name,
            "host": e.host,
            "address": "127.0.0.1",
            "port": servers[e.name].port,
            **e.settings,
        }
        for e in plan
    ]
    return {
        "state_dir": str(state_dir),
        # The links in pages (detail_url) start with it; the test follows them.
        "web": {"listen": f"127.0.0.1:{port}", "external_url": f"http://127.0.0.1:{port}"},
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
                "targets": targets,
            }
        },
    }


def send_side_config(receiver_port: int) -> dict[str, Any]:
    """The receiver, and sender relay-1 on loopback whose canary goes to a relay that is not
    there (so it fails, and TlsprobeCanaryMissing must fire)."""
    canary = {
        "relay": f"127.0.0.1:{unused_port()}",
        "recipient": CANARY_RCPT,
        "interval": PROBE_INTERVAL,
        "deadline": PROBE_TIMEOUT,
    }
    sender = {"name": SENDER, "peers": ["127.0.0.0/8"], "canary": canary}
    return {
        "receiver": {"listen": f"127.0.0.1:{receiver_port}", "recipients": [CANARY_RCPT]},
        "tenants": {
            TENANT: {
                "accepted_domains": [DOMAIN],
                "certificate_domain": f"*.{DOMAIN}",
                "senders": [sender],
            }
        },
    }


def send_as_sender(
    pki: Hierarchy, tmp: Path, receiver_port: int, stem: str, name: str = f"relay.{DOMAIN}"
) -> Issued:
    """Deliver one message to the receiver presenting a fresh client certificate for `name`;
    returns it."""
    leaf = pki.leaf([name])
    certfile, keyfile = write_server_files(tmp, leaf.key, pki.chain(leaf), stem=stem)
    send_canary(receiver_port, certfile=certfile, keyfile=keyfile, rcpt=CANARY_RCPT)
    return leaf


@pytest.fixture(scope="module")
def renewal(stack: Stack) -> Issued:
    """Serve a renewed leaf (same name, same port) on the healthy endpoint; returns it.

    It waits until Prometheus holds the healthy endpoint's change counter at 0 first: a swap
    before the first probe would be no change at all. Module-scoped, so the renewal happens
    once, when the first test that needs it starts; the alert test comes before those in this
    file and sees the fleet unchanged.
    """
    before = poll(lambda: query(stack, CHANGES_OF_HEALTHY), bool, timeout=SETTLE_SECONDS)
    assert [sample["value"][1] for sample in before] == ["0"]
    renewed = stack.pki.leaf([f"relay.{DOMAIN}"])
    server = stack.servers["healthy"]
    server.present(ServerTls(stack.pki.chain(renewed), renewed.key))
    return renewed


# --- helpers ----------------------------------------------------------------------------------


def alerts_by_target(stack: Stack) -> dict[str, set[str]]:
    """Alerts Prometheus holds (pending ones marked), per target; "" for the exporter's own."""
    found: dict[str, set[str]] = {name: set() for name in stack.endpoints}
    for alert in api(stack.prometheus, "/api/v1/alerts")["alerts"]:
        labels = alert["labels"]
        key = labels["alertname"] + (f"/{labels['reason']}" if "reason" in labels else "")
        if alert["state"] != "firing":
            key += " (pending)"
        where = labels.get("target") or (f"sender:{labels['sender']}" if "sender" in labels else "")
        found.setdefault(where, set()).add(key)
    return found


def expected_alerts(stack: Stack) -> dict[str, set[str]]:
    expected = {name: set(endpoint.alerts) for name, endpoint in stack.endpoints.items()}
    return expected | {SENDER_KEY: set(SENDER_ALERTS)}


def query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    return prometheus_query(stack.prometheus, expr)


# --- tests ------------------------------------------------------------------------------------


def test_exactly_the_expected_alerts_fire_for_each_endpoint(stack: Stack) -> None:
    """Pending alerts count as wrong, so the comparison waits until nothing more is on its way.

    Alerts without a target label (the exporter's own: down, absent, reload failed, state not
    writable) are filed under "", which no endpoint is: none of them may fire either.
    """
    expected = expected_alerts(stack)
    seen = poll(
        lambda: alerts_by_target(stack), lambda found: found == expected, timeout=SETTLE_SECONDS
    )
    assert seen == expected


NAGIOS = ROOT / "deploy" / "nagios"


def test_every_metric_named_in_deploy_and_grafana_is_exported(
    stack: Stack, renewal: Issued, sender_swap: Issued
) -> None:
    """Names in rules, rule tests, docs, configs and dashboards, against a live scrape.

    The fleet includes a 421 endpoint so that tlsprobe_retries_total has a retry to count, and
    the renewals (the server's, the sender's) make previous certificates and changes to report;
    the poll waits for them. The DNS
    policies dashboard names series that only DANE and MTA-STS targets emit (per-domain policy
    metrics, TLSA record counts); test_dane_e2e checks it against its DNSSEC lab's live scrape.
    The cross-tenant series need two tenants sharing a relay certificate, which this fleet of one
    tenant has not: tests/exporter/test_exchange_online.py scrapes them from such a pair. The
    canary round trip needs a canary that arrived (NEEDS_AN_ARRIVED_CANARY). The maintenance
    series need an open window, which would hold this fleet's pages back: test_maintenance_e2e
    scrapes them in one. deploy/nagios holds no metric names: its Icinga 2 custom variables are
    called tlsprobe_* (vars.tlsprobe_address), the Icinga convention of naming a command's
    variables after it.
    """
    files = [
        path
        for top in ("deploy", "grafana")
        for path in sorted((ROOT / top).rglob("*"))
        if path.is_file() and path != DNS_POLICIES_DASHBOARD and NAGIOS not in path.parents
    ]
    named = named_metrics(files)
    assert sum(len(names) for names in named.values()) > 20

    def missing() -> dict[str, list[str]]:
        exposed = exposed_metrics(http_get(f"{stack.exporter}/metrics").decode())
        exposed |= {
            "tlsprobe_cross_tenant_attribution",
            *ARRIVED_CANARY_SERIES,
            *MAINTENANCE_SERIES,
        }
        return {file: sorted(names - exposed) for file, names in named.items() if names - exposed}

    assert poll(missing, lambda unknown: not unknown, timeout=SETTLE_SECONDS) == {}


def test_a_clean_renewal_reaches_the_chat_not_the_pager(stack: Stack, renewal: Issued) -> None:
    """A new leaf on the healthy endpoint (same name, same CA, later expiry) is a clean
    renewal: TlsprobeCertificateRenewed, a warning for the chat; nobody is paged."""

    def told() -> list[dict[str, Any]]:
        return [
            payload
            for payload in stack.webhook.payloads()
            if payload["status"] == "firing"
            and any(
                alert["labels"].get("alertname") == "TlsprobeCertificateRenewed"
                and alert["labels"].get("target") == "healthy"
                for alert in payload["alerts"]
            )
        ]

    notes = poll(told, bool, timeout=SETTLE_SECONDS)
    assert notes, f"no renewal notice; webhook got {stack.webhook.payloads()}"
    note = notes[0]
    assert note["receiver"] == "chat"
    (alert,) = note["alerts"]
    assert note["groupLabels"] == {"tenant": TENANT, "fingerprint_sha256": renewal.sha256}
    assert alert["labels"]["severity"] == "warning"
    assert (
        f"relay.{DOMAIN} at 127.0.0.1:{stack.servers['healthy'].port}"
        in (alert["annotations"]["summary"])
    )
    # The change counted is the renewal, classified so, and it is the only news.
    (identity,) = query(stack, 'tlsprobe_cert_info{target="healthy"}')
    assert identity["metric"]["fingerprint_sha256"] == renewal.sha256
    assert [sample["value"][1] for sample in query(stack, CHANGES_OF_HEALTHY)] == ["1"]
    (kind,) = query(stack, 'tlsprobe_cert_change_info{target="healthy"}')
    assert kind["metric"]["change"] == "renewal"
    assert alerts_by_target(stack)["healthy"] == {"TlsprobeCertificateRenewed"}
    assert not [
        p
        for p in pager_payloads(stack)
        if any(a["labels"].get("target") == "healthy" for a in p["alerts"])
    ]


def test_every_dashboard_query_returns_data(stack: Stack, renewal: Issued) -> None:
    """Each panel query, with the dashboard's "All" selection, returns at least one series.

    A stat panel's `or vector(0)` fallback is cut off first: in this fleet every count has
    something to count, so the fallback must not be what answers. One panel is left out, by
    name: the canary round trip (this fleet's canary never arrives: the Postfix test
    tests/exporter/test_send_side.py reads that panel's series off a canary that did).
    """
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) > 40
    checked = [q for q in queries if q.panel not in NEEDS_AN_ARRIVED_CANARY]
    assert len(checked) == len(queries) - 1
    # The exporter process panels read prometheus-client's process and GC collectors' series.
    assert sum(bool(RUNTIME_NAME.search(q.expr)) for q in checked) == 5

    def empty() -> list[str]:
        return [
            f"{q.panel}: {q.expr}"
            for q in checked
            if not query(stack, expand_grafana(q.expr).removesuffix(" or vector(0)"))
        ]

    assert poll(empty, lambda missing: not missing, timeout=SETTLE_SECONDS) == []


@pytest.fixture(scope="module")
def sender_swap(stack: Stack) -> Issued:
    """The relay presents a client certificate under another name (a risky change; a clean
    renewal would page nobody), after its first session was seen with no change; returns it."""
    before = poll(lambda: query(stack, CHANGES_OF_SENDER), bool, timeout=SETTLE_SECONDS)
    assert [sample["value"][1] for sample in before] == ["0"]
    return send_as_sender(
        stack.pki, stack.daemons.tmp, stack.daemons.receiver_port, "second", f"relay-b.{DOMAIN}"
    )


def test_swapped_sender_certificate_pages_through_alertmanager(
    stack: Stack, sender_swap: Issued
) -> None:
    """The sender's risky change reaches the webhook as a page."""
    swapped = sender_swap

    def sender_pages() -> list[dict[str, Any]]:
        return [
            payload
            for payload in stack.webhook.payloads()
            if payload["status"] == "firing"
            and any(
                alert["labels"].get("alertname") == "TlsprobeSenderCertificateChanged"
                for alert in payload["alerts"]
            )
        ]

    pages = poll(sender_pages, bool, timeout=SETTLE_SECONDS)
    assert pages, f"no sender drift page; webhook got {stack.webhook.payloads()}"
    assert pages[0]["receiver"] == "pager"
    (alert,) = [a for a in pages[0]["alerts"] if a["labels"]["alertname"].endswith("Changed")]
    assert alert["labels"]["sender"] == SENDER and alert["labels"]["tenant"] == TENANT
    (identity,) = query(stack, f'tlsprobe_sender_cert_info{{sender="{SENDER}"}}')
    assert identity["metric"]["fingerprint_sha256"] == swapped.sha256


# --- rotations, a restart, the history -----------------------------------------------------------


def pager_payloads(stack: Stack) -> list[dict[str, Any]]:
    return [p for p in stack.webhook.payloads() if p["receiver"] == "pager"]


def drift_alerts(stack: Stack, target: str) -> dict[str, dict[str, Any]]:
    """Firing drift alerts the pager received for `target`, by new fingerprint (first one)."""
    found: dict[str, dict[str, Any]] = {}
    for payload in pager_payloads(stack):
        for alert in payload["alerts"]:
            labels = alert["labels"]
            if (
                payload["status"] == "firing"
                and labels["alertname"] == "TlsprobeCertificateChanged"
                and labels.get("target") == target
            ):
                found.setdefault(labels["fingerprint_sha256"], alert)
    return found


def fingerprint(tls: ServerTls) -> str:
    return hashlib.sha256(tls.leaf_der).hexdigest()


def renewal_told(stack: Stack, target: str, new: str) -> bool:
    """The chat heard of a clean renewal of `target` to `new`."""
    return any(
        a["labels"].get("alertname") == "TlsprobeCertificateRenewed"
        and a["labels"].get("target") == target
        and a["labels"].get("fingerprint_sha256") == new
        for p in stack.webhook.payloads()
        if p["receiver"] == "chat"
        for a in p["alerts"]
    )


@pytest.fixture(scope="module")
def rotations(stack: Stack) -> list[tuple[str, str, float]]:
    """Rotate `rotating` three times, each once the previous change was told: a clean renewal
    (to the chat), a rollback and a certificate under another name (both risky: pages).

    Returns (old fingerprint, new fingerprint, seconds from the swap to the notification) per
    rotation.
    """
    changes = 'tlsprobe_cert_changes_total{target="rotating"}'
    before = poll(lambda: query(stack, changes), bool, timeout=SETTLE_SECONDS)
    assert [sample["value"][1] for sample in before] == ["0"]
    original = stack.endpoints["rotating"].tls
    assert original is not None
    renewed_leaf = stack.pki.leaf([f"rotate.{DOMAIN}"])
    wrong_leaf = stack.pki.leaf(["www.fabrikam.example"])
    sequence = [
        ServerTls(stack.pki.chain(renewed_leaf), renewed_leaf.key),
        original,  # the rollback
        ServerTls(stack.pki.chain(wrong_leaf), wrong_leaf.key),
    ]
    done = []
    old = fingerprint(original)
    for tls in sequence:
        new = fingerprint(tls)
        swapped = time.monotonic()
        stack.servers["rotating"].present(tls)
        if tls is sequence[0]:
            told = poll(
                lambda new=new: renewal_told(stack, "rotating", new),  # type: ignore[misc]
                bool,
                timeout=SETTLE_SECONDS,
            )
            assert told, f"no renewal notice for {new}; webhook got {stack.webhook.payloads()}"
        else:
            paged = poll(
                lambda new=new: drift_alerts(stack, "rotating").get(new),  # type: ignore[misc]
                bool,
                timeout=SETTLE_SECONDS,
            )
            assert paged, f"no page for {new}; pager got {pager_payloads(stack)}"
        done.append((old, new, time.monotonic() - swapped))
        old = new
    return done


def test_every_risky_rotation_pages_naming_old_and_new(
    stack: Stack, rotations: list[tuple[str, str, float]]
) -> None:
    pages = drift_alerts(stack, "rotating")
    risky = rotations[1:]  # the first was a clean renewal
    assert [new for _, new, _ in risky] == list(pages)  # two pages, in order
    for old, new, _ in risky:
        alert = pages[new]
        description = alert["annotations"]["description"]
        assert "The old one was CN=" in description and f"SHA-256 {old}" in description
        assert "The new one is CN=" in description and f"SHA-256 {new}" in description
        assert "valid until" in description
        # The link leads to the exporter's view of this endpoint, which names the new leaf.
        link = alert["annotations"]["detail_url"]
        assert link.startswith(f"{stack.exporter}/endpoint?tenant={TENANT}&target=rotating&")
        assert new[:16] in http_get(link).decode()  # in the history, if not current
    # Each change was its own notification: one alert per payload, grouped by its new leaf.
    payloads = [
        p
        for p in pager_payloads(stack)
        if any(
            a["labels"]["alertname"] == "TlsprobeCertificateChanged"
            and a["labels"].get("target") == "rotating"
            for a in p["alerts"]
        )
    ]
    assert all(len(p["alerts"]) == 1 for p in payloads)
    assert {p["groupLabels"]["fingerprint_sha256"] for p in payloads} == set(pages)
    assert not drift_alerts(stack, "rotating").get(rotations[0][1])  # the renewal: no page


def test_a_rotation_to_a_failing_certificate_pages_at_once(
    stack: Stack, rotations: list[tuple[str, str, float]]
) -> None:
    """The drift page carries the verdict; the check alert's own page is inhibited.

    Bound: one probe interval (3 s) plus one scrape, one evaluation and Alertmanager's group
    wait (1 s each), with slack for a loaded two-core CI runner; the shipped check alerts would
    have waited 10 minutes (`for: 10m`).
    """
    _, failing, took = rotations[-1]
    alert = drift_alerts(stack, "rotating")[failing]
    # The name matches neither the connector nor the host: both checks fail, both are named.
    summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
    assert summary.endswith("FAILS certificate_domain hostname")
    assert "Verdict: the new certificate FAILS certificate_domain hostname;" in description
    assert "Connector certificate domain (TlsSenderCertificateName): *.contoso.test" in description
    assert took < 3 + 1 + 1 + 1 + 15, f"the failing certificate paged after {took:.1f} s"

    def mismatch_firing() -> bool:
        return "TlsprobeCertificateDomainMismatch" in alerts_by_target(stack)["rotating"]

    assert poll(mismatch_firing, bool, timeout=SETTLE_SECONDS)
    time.sleep(3)  # group_wait and group_interval are 1 s: a page would be out by now
    assert not [
        p
        for p in pager_payloads(stack)
        if p["groupLabels"].get("alertname") == "TlsprobeCertificateDomainMismatch"
        and p["groupLabels"].get("target") == "rotating"
    ]


def test_a_restart_while_pages_fire_sends_no_resolved(
    stack: Stack, rotations: list[tuple[str, str, float]]
) -> None:
    firing = {
        a["labels"]["fingerprint_sha256"]
        for a in api(stack.prometheus, "/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == "TlsprobeCertificateChanged"
        and a["labels"].get("target") == "rotating"
        and a["state"] == "firing"
    }
    assert firing == {new for _, new, _ in rotations[1:]}
    seen = len(stack.webhook.payloads())
    stack.daemons.restart_exporter()
    # The restarted exporter serves the endpoint before its first probe: the restored result.
    restored = http_get(f"{stack.exporter}/metrics").decode()
    assert f'fingerprint_sha256="{rotations[-1][1]}"' in restored

    def scraped_again() -> list[dict[str, Any]]:
        return query(stack, 'up{job="tlsprobe"} == 1 and time() - timestamp(up) < 2')

    assert poll(scraped_again, bool, timeout=SETTLE_SECONDS)
    time.sleep(8)  # many evaluations and group intervals: a resolved would have been sent
    resolved = [
        p
        for p in stack.webhook.payloads()[seen:]
        if p["receiver"] == "pager" and p["status"] == "resolved"
    ]
    assert not resolved, resolved


def test_history_shows_the_rollback(stack: Stack, rotations: list[tuple[str, str, float]]) -> None:
    result = subprocess.run(
        command("history", f"rotate.{DOMAIN}", "--config", str(stack.daemons.config)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    spans = [line for line in lines if line.startswith("  20")]
    original, renewed = rotations[0][0], rotations[0][1]
    failing = rotations[2][1]
    assert [line.split()[5] for line in spans] == [
        original[:16],
        renewed[:16],
        original[:16],
        failing[:16],
    ]
    assert spans[2].endswith("(rollback)") and spans[3].endswith("(current)")
    assert sum("(rollback to a certificate served before)" in line for line in lines) == 1

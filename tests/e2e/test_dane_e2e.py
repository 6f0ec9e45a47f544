"""End to end for DANE and MTA-STS: a key rotated without its TLSA update, and an MX dropped
from an enforced MTA-STS policy, each page through Alertmanager.

A DNSSEC laboratory (NSD serving a zone signed at test time, Unbound validating it, both on
loopback) publishes `dane.test`'s MX and the TLSA records of its MX host: the current key's
`3 1 1` and a staged next key's. A loopback SMTP server serves the current certificate; a real
`tlsprobe serve` discovers the MX through Unbound and judges DANE; a real Prometheus evaluates
the shipped rules (every `for:` cut short, as in test_prometheus_e2e) and a real Alertmanager
routes to a webhook this test serves. The MX host then serves a renewal with a third key, the
TLSA records unchanged: the next probe turns `dane` critical and `TlsprobeDaneMismatch` reaches
the webhook as a page, while the records and the served key are in the history.

The domain also publishes an MTA-STS policy in enforce mode: `_mta-sts` TXT, and `mta-sts`
A pointing at a real HTTPS policy server on port 443 of a random loopback address (needs root,
ROOT gate), which the exporter finds through the same validating resolver as the MX and TLSA
records. The per-domain policy metrics show, and the DNS policies dashboard's queries all
answer. The policy then changes (new id, an `mx` pattern that no longer covers the MX): the
`mta_sts` check turns critical and `TlsprobeMtaStsEnforceFailing` pages.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    ROOT,
    Daemons,
    LoopThread,
    Webhook,
    dashboard_queries,
    expand_grafana,
    exposed_metrics,
    http_get,
    named_metrics,
)
from tests.e2e.harness import query as prometheus_query
from tests.support import dnslab
from tests.support.gates import Gate, prometheus_tool, unavailable
from tests.support.pki import Hierarchy, Issued, KeyKind, make_leaf
from tests.support.policyserver import PolicyServer, Response
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import poll
from tlsprobe.probe.dns.dane import association

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = ROOT / "grafana" / "dashboards" / "tlsprobe-dns-policies.json"
DOMAIN = "dane.test"
MX = f"mx1.{DOMAIN}"
SETTLE_SECONDS = 90.0
DANE_STATUS = 'tlsprobe_check_status{check="dane"}'
STS_STATUS = 'tlsprobe_check_status{check="mta_sts"}'
POLICY = f"version: STSv1\nmode: enforce\nmx: {MX}\nmax_age: 604800\n".encode()


def tlsa(issued: Issued) -> str:
    data = association(issued.cert, 1, 1)
    assert data is not None
    return f"3 1 1 {data.hex()}"


@dataclass
class Lab:
    dns: dnslab.DnsLab
    port: int
    server: SmtpTestServer
    loop: LoopThread
    pki: Hierarchy
    current: Issued
    policy: PolicyServer
    records: list[str]
    exporter: str = ""
    prometheus: str = ""
    webhook: Webhook | None = None


@pytest.fixture(scope="module")
def lab(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not dnslab.available():
        unavailable(Gate.DNSLAB, "nsd and unbound are not installed (Debian: nsd, unbound)")
    prometheus = prometheus_tool("prometheus")
    alertmanager = prometheus_tool("alertmanager")
    tmp = tmp_path_factory.mktemp("dane-e2e")
    current = pki.leaf([MX])
    staged = pki.leaf([MX], key=KeyKind.EC_P256)
    port = unused_port()
    ca_file = tmp / "root.pem"
    ca_file.write_bytes(pki.ca_pem)
    policy = PolicyServer(pki, [DOMAIN], ca_file)
    policy.responses[f"mta-sts.{DOMAIN}"] = Response(POLICY)
    records = [
        "mx1 A 127.0.0.1",
        "@ MX 10 mx1",
        f"_{port}._tcp.mx1 TLSA {tlsa(current)}",
        f"_{port}._tcp.mx1 TLSA {tlsa(staged)}",
        *policy.a_records(DOMAIN),
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@dane.test"',
    ]
    dns = dnslab.DnsLab(tmp / "dns")
    (tmp / "dns").mkdir()
    dns.publish([*records, '_mta-sts TXT "v=STSv1; id=1"'])
    daemons = Daemons(tmp)
    with dns, LoopThread() as loop, Webhook() as webhook:
        server = SmtpTestServer(ServerTls(pki.chain(current), current.key), port=port)
        loop.run(server.__aenter__())
        state = Lab(dns, port, server, loop, pki, current, policy, records, webhook=webhook)
        try:
            loop.run(policy.__aenter__())
            state.exporter = start_exporter(tmp, state, daemons)
            manager = daemons.alertmanager(alertmanager, webhook.url)
            state.prometheus = daemons.prometheus(prometheus, state.exporter, manager, "2s")
            yield state
        finally:
            daemons.stop()
            loop.run(policy.__aexit__(None, None, None))
            loop.run(server.__aexit__(None, None, None))


def start_exporter(tmp: Path, lab: Lab, daemons: Daemons) -> str:
    ca_file = tmp / "root.pem"  # the test CA: the SMTP servers' and the policy server's
    port = unused_port()
    config: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "web": {"listen": f"127.0.0.1:{port}"},
        "dns": {"nameservers": ["127.0.0.1"], "port": lab.dns.port, "timeout": "2s"},
        "defaults": {
            "interval": "3s",
            "timeout": "2s",
            "retries": 1,
            "ca_file": str(ca_file),
            "ehlo_name": "probe.dane.test",
        },
        "tenants": {
            "contoso": {
                "accepted_domains": [DOMAIN],
                "certificate_domain": f"*.{DOMAIN}",
                # DANE and MTA-STS (the MX domain's policy) are on by default for an mx target.
                "targets": [
                    # The lab's MX host is on loopback, which discovery probes only when allowed.
                    {"name": "mail", "mx": DOMAIN, "port": lab.port, "networks": ["127.0.0.0/8"]}
                ],
            }
        },
    }
    path = tmp / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [sys.executable, "-m", "tlsprobe", "serve", "--config", str(path)]
    return daemons.start("tlsprobe", argv, f"http://127.0.0.1:{port}/-/ready")


def query(lab: Lab, expr: str) -> list[dict[str, Any]]:
    return prometheus_query(lab.prometheus, expr)


def values(lab: Lab, expr: str) -> list[str]:
    return [sample["value"][1] for sample in query(lab, expr)]


def pages(lab: Lab, alertname: str) -> list[dict[str, Any]]:
    assert lab.webhook is not None
    return [
        payload
        for payload in lab.webhook.payloads()
        if payload["status"] == "firing"
        and any(a["labels"].get("alertname") == alertname for a in payload["alerts"])
    ]


def dane_pages(lab: Lab) -> list[dict[str, Any]]:
    return pages(lab, "TlsprobeDaneMismatch")


def test_rotated_key_without_tlsa_update_pages(lab: Lab) -> None:
    # Before: the MX is discovered through the validating resolver, DANE is ok (current key
    # matches, next key staged) and nothing about DANE is pending.
    assert poll(lambda: values(lab, DANE_STATUS), lambda v: v == ["0"], timeout=SETTLE_SECONDS)
    records = 'tlsprobe_dane_tlsa_records{dnssec="secure"}'
    assert values(lab, records) == ["2"]
    assert dane_pages(lab) == []
    # The DNS policies dashboard's DANE panel shows this endpoint (its MTA-STS panel has the
    # same query on check="mta_sts", which this domain does not publish).
    (panel,) = [q for q in dashboard_queries(DASHBOARD) if q.panel == "DANE per endpoint"]
    shown = query(lab, expand_grafana(panel.expr))
    assert [row["metric"]["host"] for row in shown] == [MX]

    rotated = make_leaf(lab.pki.intermediate, [MX], key=KeyKind.EC_P384)
    lab.server.present(ServerTls(lab.pki.chain(rotated), rotated.key))

    assert poll(lambda: values(lab, DANE_STATUS), lambda v: v == ["2"], timeout=SETTLE_SECONDS)
    sent = poll(lambda: dane_pages(lab), bool, timeout=SETTLE_SECONDS)
    page = sent[0]
    assert page["receiver"] == "pager"
    alert = next(a for a in page["alerts"] if a["labels"]["alertname"] == "TlsprobeDaneMismatch")
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["host"] == MX
    assert alert["labels"]["port"] == str(lab.port)
    assert alert["annotations"]["runbook_url"].endswith("#dane")


def test_dns_policies_dashboard_answers_from_the_live_scrape(lab: Lab) -> None:
    """Every tlsprobe_* name of the DNS policies dashboard is in the exporter's /metrics, and
    every panel query answers (the per-domain MTA-STS series exist only where a policy domain
    is configured, so this lab, not the certificate fleet of test_prometheus_e2e, checks them)."""
    (names,) = named_metrics([DASHBOARD]).values()
    assert {"tlsprobe_mta_sts_fetch_success", "tlsprobe_dane_tlsa_records"} <= names

    def missing() -> set[str]:
        return names - exposed_metrics(http_get(f"{lab.exporter}/metrics").decode())

    assert poll(missing, lambda unknown: not unknown, timeout=SETTLE_SECONDS) == set()
    queries = dashboard_queries(DASHBOARD)

    def empty() -> list[str]:
        return [f"{q.panel}: {q.expr}" for q in queries if not query(lab, expand_grafana(q.expr))]

    assert poll(empty, lambda unanswered: not unanswered, timeout=SETTLE_SECONDS) == []


def test_mx_outside_the_enforced_policy_pages(lab: Lab) -> None:
    # Before: the policy (enforce, fetched from the loopback policy server that the validating
    # resolver named) covers the MX, and the per-domain series say so.
    assert poll(lambda: values(lab, STS_STATUS), lambda v: v == ["0"], timeout=SETTLE_SECONDS)
    domain = f'{{domain="{DOMAIN}"}}'
    assert values(lab, f"tlsprobe_mta_sts_fetch_success{domain}") == ["1"]
    assert values(lab, f'tlsprobe_mta_sts_policy_info{{domain="{DOMAIN}", mode="enforce"}}') == [
        "1"
    ]
    assert values(lab, f"tlsprobe_mta_sts_max_age_seconds{domain}") == ["604800"]
    (first_id_seen,) = map(
        float, values(lab, f"tlsprobe_mta_sts_id_change_timestamp_seconds{domain}")
    )
    assert f"mta-sts.{DOMAIN}/.well-known/mta-sts.txt" in lab.policy.requests
    assert pages(lab, "TlsprobeMtaStsEnforceFailing") == []

    # The policy moves to another MX (with a new id, as it must): this MX falls outside it.
    lab.policy.responses[f"mta-sts.{DOMAIN}"] = Response(
        POLICY.replace(f"mx: {MX}".encode(), f"mx: mx2.{DOMAIN}".encode())
    )
    lab.dns.publish([*lab.records, '_mta-sts TXT "v=STSv1; id=2"'])

    assert poll(lambda: values(lab, STS_STATUS), lambda v: v == ["2"], timeout=SETTLE_SECONDS)
    changed = poll(
        lambda: values(lab, f"tlsprobe_mta_sts_id_change_timestamp_seconds{domain}"),
        lambda v: v != [] and float(v[0]) > first_id_seen,
        timeout=SETTLE_SECONDS,
    )
    assert float(changed[0]) > first_id_seen
    sent = poll(lambda: pages(lab, "TlsprobeMtaStsEnforceFailing"), bool, timeout=SETTLE_SECONDS)
    page = sent[0]
    assert page["receiver"] == "pager"
    alert = next(
        a for a in page["alerts"] if a["labels"]["alertname"] == "TlsprobeMtaStsEnforceFailing"
    )
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["host"] == MX
    assert alert["labels"]["port"] == str(lab.port)
    assert alert["annotations"]["runbook_url"].endswith("#mta_sts")
    # The operator's table: the policy is still fetched and enforced, under the new id.
    (panel,) = [q for q in dashboard_queries(DASHBOARD) if q.panel == "MTA-STS per endpoint"]
    (row,) = query(lab, expand_grafana(panel.expr))
    assert (row["metric"]["host"], row["value"][1]) == (MX, "2")

"""The metric table: every family's name, help text, type and labels, in one place.

Alert rules and dashboards may use only names in `METRIC_NAMES` (a test checks that); README's
"Metrics" section lists the same table. `metrics` derives the samples from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Sample = tuple[str, tuple[str, ...], float]
"""(family name, label values beyond the scope's, or all of them for scope-less families, value):
what every part of the exporter reports its numbers as."""

ENDPOINT_LABELS = ("tenant", "target", "host", "address", "port")
TARGET_LABELS = ("tenant", "target")
SENDER_LABELS = ("tenant", "sender")
_SCOPE_LABELS = {"endpoint": ENDPOINT_LABELS, "target": TARGET_LABELS, "sender": SENDER_LABELS}


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    """Full family name; counters are exposed with a `_total` suffix on top of it."""
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    """Labels beyond the scope's own (endpoint labels, target labels or none)."""
    scope: str = "endpoint"

    @property
    def sample_name(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name

    @property
    def all_labels(self) -> tuple[str, ...]:
        base = _SCOPE_LABELS.get(self.scope, ())
        return (*base, *self.labels)


def _g(name: str, help_: str, *labels: str, scope: str = "endpoint") -> MetricDef:
    return MetricDef(f"tlsprobe_{name}", "gauge", help_, labels, scope)


def _c(name: str, help_: str, *labels: str, scope: str = "endpoint") -> MetricDef:
    return MetricDef(f"tlsprobe_{name}", "counter", help_, labels, scope)


def _s(name: str, help_: str, *labels: str, kind: str = "gauge") -> MetricDef:
    """A send-side series: labelled by tenant and sender (a configured relay node)."""
    return MetricDef(f"tlsprobe_{name}", kind, help_, labels, "sender")


SEND_SIDE_METRICS: tuple[MetricDef, ...] = (
    _s(
        "sender_status",
        "Sender's client certificate, overall: 0 ok, 1 warning, 2 critical, 3 unknown.",
    ),
    _s("sender_check_status", "Sender status per check, same scale.", "check"),
    _s("sender_o365_ready", "1 when the sender's client certificate meets every connector rule."),
    _s(
        "sender_chain_untrusted_info",
        "1 with the reason the client chain is not trusted.",
        "reason",
    ),
    _s("sender_session_error_info", "1 for the failure reason of the last session.", "reason"),
    _s(
        "sender_tls_info",
        "TLS version and cipher of the sender's last session.",
        "version",
        "cipher",
    ),
    _s("sender_cert_not_after_timestamp_seconds", "Sender's client leaf notAfter."),
    _s(
        "sender_cert_info",
        "Sender's client leaf identity; names are the SAN dNSNames, comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "serial",
        "names",
    ),
    _s(
        "sender_cert_changes",
        "Client leaf changes of the sender (a leaf none of its addresses presented); "
        "persisted across restarts.",
        kind="counter",
    ),
    _s(
        "sender_cert_last_change_timestamp_seconds",
        "When the sender's newest client leaf was first seen.",
    ),
    _s(
        "sender_cert_previous_info",
        "The client leaf the sender presented before its newest one.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "names",
    ),
    _s(
        "sender_cert_previous_not_after_timestamp_seconds",
        "notAfter of the client leaf the sender presented before.",
    ),
    _s(
        "sender_cert_change_info",
        "The sender's latest leaf change: its new leaf, the server target of the same relay, "
        "renewal or risky, the risky reasons comma-joined and in words.",
        "target",
        "fingerprint_sha256",
        "change",
        "reasons",
        "detail",
    ),
    _s("sender_last_session_timestamp_seconds", "Unix time of the sender's last session."),
    _s("sender_sessions", "Sessions received from the sender since start.", kind="counter"),
    _s(
        "sender_session_expected_within_seconds",
        "Seconds after its last session by which the sender should have sent again.",
    ),
    _s("canary_success", "1 when the sender's last canary arrived, 0 when it failed."),
    _s("canary_round_trip_seconds", "Submission to arrival of the last canary that arrived."),
    _s("canary_last_success_timestamp_seconds", "Unix time the last canary arrived."),
    _s(
        "canary_failure_info",
        "1 for the reason the last canary failed; absent on success.",
        "reason",
    ),
    _s("canary_failures", "Canary failures since start, by reason.", "reason", kind="counter"),
    MetricDef(
        "tlsprobe_receiver_unknown_peer_sessions",
        "counter",
        "Receiver sessions from peers that are no configured sender (refused at RCPT).",
        scope="",
    ),
    MetricDef(
        "tlsprobe_receiver_refused_sessions",
        "counter",
        "Receiver connections answered 421 (session cap or per-peer rate).",
        scope="",
    ),
    MetricDef(
        "tlsprobe_receiver_evicted_sessions",
        "counter",
        "Receiver sessions closed to give their slot to a newcomer (idle, or an unknown peer's "
        "for a configured sender).",
        scope="",
    ),
    MetricDef(
        "tlsprobe_receiver_active_sessions", "gauge", "Receiver sessions open now.", scope=""
    ),
    MetricDef(
        "tlsprobe_receiver_session_limit",
        "gauge",
        "Receiver sessions allowed at once: receiver.max_sessions, lowered to fit the open-file "
        "limit.",
        scope="",
    ),
    MetricDef("tlsprobe_senders_configured", "gauge", "Senders in the configuration.", scope=""),
)

METRICS: tuple[MetricDef, ...] = (
    _g("probe_success", "1 when a TLS session was established and the chain captured."),
    _g("probe_error_info", "1 for the current failure reason; absent on success.", "reason"),
    _g("probe_duration_seconds", "Duration of each phase of the last probe.", "phase"),
    _g("last_probe_timestamp_seconds", "Unix time the shown result was taken."),
    _g("probe_interval_seconds", "Configured probe interval of the endpoint."),
    _g("status", "Overall status: 0 ok, 1 warning, 2 critical, 3 unknown."),
    _g("check_status", "Status per check: 0 ok, 1 warning, 2 critical, 3 unknown.", "check"),
    _g("chain_untrusted_info", "1 with the reason when the chain is not trusted.", "reason"),
    _g("o365_ready", "1 when every Exchange Online connector rule holds and no check is critical."),
    _g(
        "o365_connector_info",
        "The Exchange Online connector o365_ready speaks for: direction (inbound: the relay sends; "
        "outbound: Exchange Online delivers here), its Exchange name and its rule.",
        "direction",
        "connector",
        "rule",
    ),
    _g("tls_info", "Negotiated TLS version and cipher.", "version", "cipher"),
    _g("cert_not_after_timestamp_seconds", "Leaf certificate notAfter."),
    _g("cert_not_before_timestamp_seconds", "Leaf certificate notBefore."),
    _g(
        "chain_earliest_not_after_timestamp_seconds",
        "Earliest notAfter among the certificates the server sent.",
    ),
    _g(
        "cert_info",
        "Leaf certificate identity; names are the SAN dNSNames, comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "serial",
        "names",
    ),
    _g(
        "cert_previous_info",
        "The leaf served before the current one (after a change); names comma-joined.",
        "fingerprint_sha256",
        "subject",
        "issuer",
        "names",
    ),
    _g("cert_previous_not_after_timestamp_seconds", "notAfter of the leaf served before."),
    _g(
        "cert_change_info",
        "1 after a change: how the latest leaf change was classified (renewal or risky), the "
        "reasons it is risky (comma-joined), the differences in words, and the checks that "
        "were critical on the old leaf (comma-joined).",
        "change",
        "reasons",
        "detail",
        "previous_failing",
    ),
    _c("cert_changes", "Leaf certificate changes seen; persisted across restarts."),
    _g("cert_last_change_timestamp_seconds", "When the current leaf was first seen."),
    _g(
        "target_distinct_certificates",
        "Distinct leaf certificates served now across a target's endpoints.",
        scope="target",
    ),
    _g(
        "connector_info",
        "The target's connector policy: certificate domain and accepted domains (comma-joined).",
        "certificate_domain",
        "accepted_domains",
        scope="target",
    ),
    _g(
        "target_info",
        "1 for every configured target, with the labels the configuration gives it (the "
        "tenant's and the target's labels:) beyond tenant and target.",
        scope="target",
    ),
    _g(
        "maintenance_active",
        "1 while a maintenance window of the configuration is open for the target, 0 outside; "
        "absent for targets without windows. Evaluated at each scrape.",
        scope="target",
    ),
    _g(
        "maintenance_window_end_timestamp_seconds",
        "When the open maintenance window of the target closes; absent outside a window.",
        scope="target",
    ),
    _g(
        "dane_tlsa_records",
        "TLSA records found for the endpoint (0: DANE not applicable), by the DNSSEC status of "
        "the answer: secure, insecure, bogus, failed.",
        "dnssec",
    ),
    _g(
        "mta_sts_fetch_success",
        "1 when the domain's MTA-STS TXT record and policy were read and parsed; 0 when a "
        "policy is announced but unusable.",
        "domain",
        scope="",
    ),
    _g(
        "mta_sts_policy_info", "1 with the mode of the domain's policy.", "domain", "mode", scope=""
    ),
    _g("mta_sts_max_age_seconds", "max_age of the domain's MTA-STS policy.", "domain", scope=""),
    _g(
        "mta_sts_id_change_timestamp_seconds",
        "When the domain's MTA-STS policy id was first seen with its current value.",
        "domain",
        scope="",
    ),
    _g("config_last_reload_successful", "1 when the last configuration load worked.", scope=""),
    _g(
        "config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        scope="",
    ),
    _c(
        "probes",
        "Probes completed, by overall result: ok, warning, critical, unknown.",
        "result",
        scope="",
    ),
    _c("retries", "Retries of transient probe failures, by reason.", "reason", scope=""),
    _g("http_connections", "Open HTTP connections to the exporter.", scope=""),
    _g(
        "http_connection_limit",
        "Open HTTP connections allowed (web.max_connections, fitted to the descriptor limit).",
        scope="",
    ),
    _c(
        "http_connections_closed",
        "HTTP connections the exporter closed itself, by reason: limit, header_timeout.",
        "reason",
        scope="",
    ),
    _c(
        "http_auth_attempts",
        "Basic-auth checks by outcome: ok, failed, throttled (client over its failure budget).",
        "outcome",
        scope="",
    ),
    _c(
        "probe_requests_shared",
        "/probe requests answered with the probe of another request within the interval.",
        scope="",
    ),
    _g(
        "mx_addresses_skipped",
        "MX-discovered loopback, link-local or unspecified addresses not probed, per target.",
        "tenant",
        "target",
        scope="",
    ),
    _g("state_writable", "1 while the certificate history can be written.", scope=""),
    _c("state_write_errors", "Failed writes to the certificate history.", scope=""),
    _g("targets_configured", "Targets in the configuration in force.", scope=""),
    _g("endpoints", "Endpoints (host, address, port) currently probed.", scope=""),
    _g(
        "build_info",
        "Build information; event_loop is uvloop or asyncio.",
        "version",
        "python",
        "event_loop",
        scope="",
    ),
    _g("external_url_info", "Where users reach this exporter (web.external_url).", "url", scope=""),
    _g(
        "cross_tenant_attribution",
        "1 per tenant whose certificate another tenant shares or whose connector overlaps another "
        "tenant's (MC1226222): reason shared_certificate, shared_name or connector_overlap.",
        "tenant",
        "other_tenant",
        "reason",
        "fingerprint_sha256",
        scope="",
    ),
    *SEND_SIDE_METRICS,
)

BY_NAME: Mapping[str, MetricDef] = {m.name: m for m in METRICS}
METRIC_NAMES: frozenset[str] = frozenset(m.sample_name for m in METRICS)

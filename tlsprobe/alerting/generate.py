"""Render the alert rules from their template: `tlsprobe rules [--runbook-base URL]`.

The template is the set of group fragments in `rules/` (one YAML file per group, taken in file
name order, so a new family of alerts is a new file). Fragments are YAML with `@@NAME@@` tokens;
`render` replaces each token and refuses to emit a file that still holds one. Tokens exist for
what must not be written twice or depends on the installation:

- `@@RUNBOOK@@`: the runbook base (the README of the installed version by default); headings'
  anchors follow it, e.g. `@@RUNBOOK@@#certificate-drift`;
- `@@DETAIL@@`: the link to the endpoint's detail view on the exporter that reported it, built
  from that exporter's `web.external_url` (exposed as `tlsprobe_external_url_info`), else from
  the scrape's `instance`;
- `@@CERT@@`, `@@CONNECTOR@@`: sentences naming the certificate served and the connector's
  certificate domain and accepted domains (and the connector readiness speaks for, by its
  Exchange name and rule), read by queries at notification time;
- `@@SEL@@`: the printf selector of the alert's endpoint, for annotation queries;
- `@@SENDER_DETAIL@@`, `@@SENDER_SEL@@`, `@@SENDER_CERT@@`, `@@SENDER_PREVIOUS@@`,
  `@@SENDER_FAILING@@`: the same for a sender (its detail view `/sender`, its selector, the
  client certificate it presents now and the one before, its critical checks);
- `@@CHANGE_VARS@@`, `@@CHANGE_WHERE@@`, `@@CHANGE_OLD@@`, `@@CHANGE_NEW@@`,
  `@@CHANGE_DETAIL@@`: the drift pages' queries (one alert per tenant, target and new leaf:
  the endpoints serving it, the differences, the old and new certificate, the verdict);
- `@@HOLD@@`, at the end of an alert's expression: the alert stays as it was while its exporter
  is not scraped (`HOLD`); `@@FROZEN@@`, `@@NOT_SCRAPED@@`: what the pages say about that;
  `@@HELD@@` sets `$held` (the alert is held, so `$value` reads 1) and `@@HELD_VALUE@@` is
  what an annotation says instead of the value then.

The committed `deploy/prometheus/tlsprobe.rules.yml` and `deploy/kubernetes/prometheusrule.yaml`
are this module's output with the default base; tests/rules proves they are up to date.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml

from tlsprobe import __version__

DEFAULT_RUNBOOK_BASE = f"https://github.com/tlsprobe/tlsprobe/blob/v{__version__}/README.md"
"""The README (with its anchors) of the installed version."""

SEL = (
    '{tenant=%q,target=%q,host=%q,address=%q,port=%q}" '
    "$labels.tenant $labels.target $labels.host $labels.address $labels.port"
)

_BASE = (
    '{{ $base := printf "http://%s" $labels.instance }}'
    '{{ with printf "tlsprobe_external_url_info{instance=%q}" $labels.instance | query }}'
    '{{ $base = . | first | label "url" }}{{ end }}'
)

DETAIL = (
    _BASE + "{{ $base }}/endpoint?tenant={{ $labels.tenant | urlquery }}"
    "&target={{ $labels.target | urlquery }}&host={{ $labels.host | urlquery }}"
    "&address={{ $labels.address | urlquery }}&port={{ $labels.port | urlquery }}"
)

STATUS_PAGE = _BASE + "{{ $base }}/"


SENDER_DETAIL = (
    _BASE + "{{ $base }}/sender?tenant={{ $labels.tenant | urlquery }}"
    "&sender={{ $labels.sender | urlquery }}"
)
SENDER_SEL = '{tenant=%q,sender=%q}" $labels.tenant $labels.sender'

ENDPOINT_QUERY = 'printf "{metric}@@SEL@@ | query'
"""The query of an endpoint alert's own series of `metric`."""
SENDER_QUERY = 'printf "{metric}@@SENDER_SEL@@ | query'
"""The same for a sender alert."""


def cert_sentence(info: str, not_after: str, lead: str, select: str = ENDPOINT_QUERY) -> str:
    """A sentence naming the certificate an info metric describes, empty when it is absent.
    `select` is the query pipeline, with `{metric}` for the metric's name."""
    return (
        f"{{{{ with {select.format(metric=info)} }}}}{{{{ with first . }}}} {lead}"
        ' {{ .Labels.subject }} (names: {{ or .Labels.names "none" }}; issuer:'
        " {{ .Labels.issuer }}; SHA-256 {{ .Labels.fingerprint_sha256 }}){{ end }}"
        f"{{{{ with {select.format(metric=not_after)} }}}}, valid until"
        " {{ . | first | value | humanizeTimestamp }}{{ end }}.{{ end }}"
    )


SENDER_CERT = cert_sentence(
    "tlsprobe_sender_cert_info",
    "tlsprobe_sender_cert_not_after_timestamp_seconds",
    "It presents now",
    SENDER_QUERY,
)
SENDER_PREVIOUS = cert_sentence(
    "tlsprobe_sender_cert_previous_info",
    "tlsprobe_sender_cert_previous_not_after_timestamp_seconds",
    "Before, it presented",
    SENDER_QUERY,
)
SENDER_FAILING = (
    '{{ $failing := "" }}{{ range printf "tlsprobe_sender_check_status@@SENDER_SEL@@'
    ' | query | sortByLabel "check" }}{{ if eq .Value 2.0 }}{{ $failing = printf "%s %s"'
    " $failing .Labels.check }}{{ end }}{{ end }}{{ if $failing }} Failing checks:{{ $failing"
    " }}.{{ end }}"
)
"""A sentence naming the sender's critical checks, empty when none is."""


CERT = cert_sentence("tlsprobe_cert_info", "tlsprobe_cert_not_after_timestamp_seconds", "It serves")
NEW = cert_sentence(
    "tlsprobe_cert_info", "tlsprobe_cert_not_after_timestamp_seconds", "The new one is"
)
PREVIOUS = cert_sentence(
    "tlsprobe_cert_previous_info",
    "tlsprobe_cert_previous_not_after_timestamp_seconds",
    "The old one was",
)

FAILING = (
    '{{ $checks := printf "tlsprobe_check_status@@SEL@@ | query | sortByLabel "check" }}'
    "{{ $bad := false }}{{ range $checks }}{{ if eq .Value 2.0 }}{{ $bad = true }}{{ end }}"
    "{{ end }}"
)
"""Sets `$checks` (the endpoint's checks) and `$bad` (one of them is critical)."""

FAILING_LIST = (
    "@@FAILING@@{{ if $bad }} Failing:{{ range $checks }}{{ if eq .Value 2.0 }}"
    " {{ .Labels.check }}{{ end }}{{ end }}.{{ end }}"
)

CONNECTOR = (
    '{{ with printf "tlsprobe_connector_info{tenant=%q,target=%q}" $labels.tenant'
    " $labels.target | query }}{{ with first . }} Connector certificate domain"
    ' (TlsSenderCertificateName): {{ or .Labels.certificate_domain "none configured" }};'
    ' accepted domains: {{ or .Labels.accepted_domains "none configured" }}.{{ end }}{{ end }}'
    '{{ with printf "tlsprobe_o365_connector_info@@SEL@@ | query }}{{ with first . }} Exchange'
    " Online readiness speaks for the {{ .Labels.direction }} connector"
    "{{ if .Labels.connector }} '{{ .Labels.connector }}'{{ end }} ({{ .Labels.rule }})."
    "{{ end }}{{ end }}"
)
"""The connector's certificate domain and accepted domains, then the connector readiness
speaks for (its direction, Exchange name and rule), each where the exporter reports it."""

# --- the change page: one alert per (tenant, target, new leaf), whatever the sockets ------------

_NEW_VAR = (
    '{{ $new := printf "tlsprobe_cert_info{tenant=%q,target=%q,fingerprint_sha256=%q}"'
    " $labels.tenant $labels.target $labels.fingerprint_sha256 }}"
)
CHANGE_VARS = (
    _NEW_VAR + '{{ $on := printf " and on (tenant, target, host, address, port) %s" $new }}'
    '{{ $sel := printf "{tenant=%q,target=%q}" $labels.tenant $labels.target }}'
    '{{ $failing := "" }}{{ range printf "count by (check) (tlsprobe_check_status%s == 2%s)"'
    ' $sel $on | query | sortByLabel "check" }}{{ $failing = printf "%s %s" $failing'
    " .Labels.check }}{{ end }}"
    '{{ $cause := "" }}{{ range printf "count by (reason) (tlsprobe_chain_untrusted_info%s%s)"'
    " $sel $on | query }}{{ $cause = .Labels.reason }}{{ end }}"
    '{{ $change := "" }}{{ $oldbad := "" }}{{ with printf "tlsprobe_cert_change_info%s%s"'
    " $sel $on | query }}{{ with first . }}{{ $change = .Labels.detail }}"
    "{{ $oldbad = .Labels.previous_failing }}{{ end }}{{ end }}"
)
"""Sets, for the endpoints of the alert's target that serve its new leaf: `$new` (their
cert_info selector), `$sel`/`$on` (to select their other series), `$failing` (the critical
checks, each after a space), `$cause` (the chain_trusted reason), `$change` (the differences
in words) and `$oldbad` (the checks that were critical on the old leaf)."""


ON_NEW_QUERY = 'printf "{metric}%s%s" $sel $on | query'
"""The query of `metric` for the endpoints `CHANGE_VARS` selects."""


CHANGE_WHERE = (
    '{{ range $i, $e := $new | query | sortByLabel "port" }}{{ if $i }},{{ end }}'
    " {{ .Labels.host }} at {{ .Labels.address }}:{{ .Labels.port }}{{ end }}"
)
CHANGE_OLD = cert_sentence(
    "tlsprobe_cert_previous_info",
    "tlsprobe_cert_previous_not_after_timestamp_seconds",
    "The old one was",
    ON_NEW_QUERY,
)
CHANGE_NEW = cert_sentence(
    "tlsprobe_cert_info",
    "tlsprobe_cert_not_after_timestamp_seconds",
    "The new one is",
    ON_NEW_QUERY,
)
CHANGE_DETAIL = (
    _BASE
    + _NEW_VAR
    + "{{ with $new | query }}{{ with first . }}{{ $base }}/endpoint?tenant={{ .Labels.tenant"
    " | urlquery }}&target={{ .Labels.target | urlquery }}&host={{ .Labels.host | urlquery }}"
    "&address={{ .Labels.address | urlquery }}&port={{ .Labels.port | urlquery }}{{ end }}"
    "{{ else }}{{ $base }}/{{ end }}"
)
"""The detail view of the first endpoint serving the new leaf (the status page if none)."""

NOT_SCRAPED = (
    "The exporter {{ $labels.instance }} that reported this is not being scraped now: the"
    " alert is held as it was (see TlsprobeExporterDown) until its series are back."
)

HOLD = (
    ' or (max without (alertname, alertstate, severity) (ALERTS{{alertname="{name}"}})'
    ' and on (instance) (up{{job=~".*tlsprobe.*"}} == 0))'
)
"""Appended to an alert's expression (`@@HOLD@@`): while Prometheus cannot scrape the exporter
that reported it, the alert stays as it was (pending or firing), so it neither resolves nor
restarts its `for:` until the exporter is back and its series say otherwise. Only a tlsprobe
job's `up` holds (the jobs TlsprobeExporterDown watches, so every hold is announced): an
instance label relabelled to the host name is shared with that host's other exporters, and
node_exporter being down there must not keep a fixed certificate's page firing."""

HELD = (
    '{{ $held := false }}{{ with printf `up{job=~".*tlsprobe.*",instance=%q} == 0`'
    " $labels.instance | query }}{{ $held = true }}{{ end }}"
)
"""Sets `$held`: the alert's exporter is not being scraped, so the alert is held and its
`$value` reads 1 (the hold's ALERTS sample), not what the exporter last reported."""

HELD_VALUE = (
    "not known while the exporter {{ $labels.instance }} is not scraped: the alert is held as"
    " it was, see TlsprobeExporterDown"
)
"""What an annotation says in place of `$value` while the alert is held."""

FROZEN = (
    "{{ with printf `topk(20, count by (alertname, tenant, target, sender)"
    ' (ALERTS{alertstate="firing",severity="page",alertname=~"Tlsprobe.+",'
    'alertname!="TlsprobeExporterDown",instance=%q}))` $labels.instance | query'
    " }} Frozen meanwhile (they neither resolve nor page again until it is back; 20 at most"
    " named):{{ range $i, $e := . }}{{ if $i }},{{ end }} {{ .Labels.alertname }}{{ if"
    " .Labels.tenant }} ({{ .Labels.tenant }}{{ if .Labels.target }}/{{ .Labels.target }}{{"
    " else if .Labels.sender }}, sender {{ .Labels.sender }}{{ end }}){{ end }}{{ end }}.{{ else"
    " }} No page from it is firing, so none is frozen.{{ end }}"
)
"""The pages held while the exporter is not scraped: tlsprobe's own (another system's page on
the same instance label is not frozen by this), each by tenant and target or sender."""

TOKEN = re.compile(r"@@([A-Z_]+)@@")
_HOLD_OR_ALERT = re.compile(r"- alert: (\w+)|@@HOLD@@")

HEADER = """\
# GENERATED by `tlsprobe rules` from tlsprobe/alerting/rules/*.yml; do not edit: change the
# template and run `tlsprobe rules > deploy/prometheus/tlsprobe.rules.yml` (and
# `tlsprobe rules --format kubernetes > deploy/kubernetes/prometheusrule.yaml`).
# Runbook base: {base}
#
# Every alert carries `severity` (page: mail stops or is about to; warning: fix during working
# hours) and the annotations `summary`, `description` (where, what failed, what Exchange Online
# does about it, what is served), `runbook_url` (a README anchor) and, for endpoint alerts,
# `detail_url` (the endpoint's detail view on the exporter). Unit tests: deploy/prometheus/tests/.
#
# Endpoint series carry tenant, target, host, address and port; joins below match on exactly
# those so that the scrape's job/instance labels never get in the way. Endpoint alerts keep
# firing for 10 minutes after their condition was last seen (`keep_firing_for`), and each ends
# in a hold (`or (... ALERTS{{alertname="..."}}) and on (instance)
# (up{{job=~".*tlsprobe.*"}} == 0))`): while its exporter cannot be scraped the alert stays as
# it was, pending or firing, so a missed scrape restarts no `for:` and an outage of any length
# resolves nothing that is still true.
#
# The exporter already applies each target's configured warn/crit thresholds in
# tlsprobe_check_status{{check="not_expired"}}; the expiry alerts key off that check and only take
# the number of days from the recording rules, so per-tenant thresholds need no rule changes.
"""


def fragments() -> list[tuple[str, str]]:
    """(file name, text) of every group fragment, in file name order."""
    folder = resources.files("tlsprobe.alerting") / "rules"
    found = [(f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir()]
    return sorted((name, text) for name, text in found if name.endswith(".yml"))


def _holds(text: str) -> str:
    """Each `@@HOLD@@` replaced by `HOLD` for the alert it is in."""
    out: list[str] = []
    position, name = 0, None
    for match in _HOLD_OR_ALERT.finditer(text):
        if match.group(1):
            name = match.group(1)
            continue
        if name is None:
            raise ValueError("@@HOLD@@ outside an alert")
        out += [text[position : match.start()], HOLD.format(name=name)]
        position = match.end()
    return "".join(out) + text[position:]


def _substitute(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unknown template token @@{name}@@")
        return values[name]

    text = _holds(text)
    # Snippets hold tokens themselves (FAILING_LIST -> FAILING -> SEL); a few passes settle it.
    for _ in range(4):
        text = TOKEN.sub(replace, text)
    if TOKEN.search(text):
        raise ValueError("template tokens nest too deeply")
    return text


def render(runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    """The Prometheus rules file for `runbook_base` (a URL without a fragment)."""
    base = runbook_base.split("#", 1)[0]
    values = {
        "RUNBOOK": base,
        "DETAIL": DETAIL,
        "STATUS_PAGE": STATUS_PAGE,
        "CERT": CERT,
        "NEW": NEW,
        "PREVIOUS": PREVIOUS,
        "FAILING": FAILING,
        "FAILING_LIST": FAILING_LIST,
        "CONNECTOR": CONNECTOR,
        "SEL": SEL,
        "SENDER_DETAIL": SENDER_DETAIL,
        "SENDER_SEL": SENDER_SEL,
        "SENDER_CERT": SENDER_CERT,
        "SENDER_PREVIOUS": SENDER_PREVIOUS,
        "SENDER_FAILING": SENDER_FAILING,
        "CHANGE_VARS": CHANGE_VARS,
        "CHANGE_WHERE": CHANGE_WHERE,
        "CHANGE_OLD": CHANGE_OLD,
        "CHANGE_NEW": CHANGE_NEW,
        "CHANGE_DETAIL": CHANGE_DETAIL,
        "FROZEN": FROZEN,
        "HELD": HELD,
        "HELD_VALUE": HELD_VALUE,
        "NOT_SCRAPED": NOT_SCRAPED,
    }
    body = "".join(_substitute(text, values) for _, text in fragments())
    text = HEADER.format(base=base) + "\ngroups:\n" + body
    yaml.safe_load(text)  # a template edit that breaks YAML fails here, not in Prometheus
    return text


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes long strings (PromQL, descriptions) as indented blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None
    if "\n" in value:
        style = "|"
    elif len(value) > 80 and value == value.strip():
        style = ">"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

KUBERNETES_HEADER = """\
# GENERATED by `tlsprobe rules --format kubernetes`; do not edit (see
# deploy/prometheus/tlsprobe.rules.yml for the plain rules file and its comments).
#
# prometheus-operator loads these rules into every Prometheus whose ruleSelector matches the
# labels below (kube-prometheus-stack: add `release: <helm release name>`).
"""


def render_kubernetes(runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    """The same groups wrapped, unchanged, in a prometheus-operator PrometheusRule."""
    groups = yaml.safe_load(render(runbook_base))["groups"]
    rule: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "tlsprobe",
            "labels": {
                "app.kubernetes.io/name": "tlsprobe",
                "app.kubernetes.io/part-of": "tlsprobe",
            },
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(
        rule,
        Dumper=_Dumper,
        sort_keys=False,
        width=100,
        allow_unicode=True,
        default_flow_style=False,
    )
    return KUBERNETES_HEADER + body

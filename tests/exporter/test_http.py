"""The exporter's HTTP side, in process, against real loopback SMTP servers.

Each test starts an `Exporter` from a configuration file in `tmp_path` (a free loopback port,
state in `tmp_path`, probe intervals of a second or two) watching scripted SMTP servers that
present certificates made by the test PKI: a healthy one, and one issued by a rogue root whose
name carries markup. Requests go over real HTTP(S) with aiohttp's client: `/metrics`, `/probe`
(configured targets, the allowlist, tenants), `/-/healthy`, `/-/ready`, `/-/reload` with a
broken and then a fixed file, the status page, basic auth and TLS from an exporter-toolkit
web-config.yml, and the one-log-line-per-outcome-change rule.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import html
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.exporter import fetch as get
from tests.support.exporter import in_process
from tests.support.piecemeal import get_in_pieces
from tests.support.pki import Hierarchy, Issued, make_leaf, make_root, write_server_files
from tests.support.servers import ServerTls, SmtpTestServer, unused_port
from tests.support.wait import eventually
from tlsprobe.exporter.app import Exporter

HOSTILE = "<script>alert(1)</script>"


# --- servers, configuration and the running exporter ---------------------------------------


@pytest.fixture
def good_leaf(pki: Hierarchy) -> Issued:
    return pki.leaf(["mail.contoso.test"])


@pytest.fixture
def rogue_root() -> Issued:
    """A root nobody trusts, whose name is an HTML payload."""
    return make_root(f"{HOSTILE} Rogue CA")


@pytest.fixture
def rogue_leaf(rogue_root: Issued) -> Issued:
    return make_leaf(rogue_root, ["bad.contoso.test"])


@pytest.fixture
async def good(pki: Hierarchy, good_leaf: Issued) -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer(ServerTls(pki.chain(good_leaf), good_leaf.key)) as server:
        yield server


@pytest.fixture
async def bad(rogue_root: Issued, rogue_leaf: Issued) -> AsyncIterator[SmtpTestServer]:
    tls = ServerTls([rogue_leaf.cert, rogue_root.cert], rogue_leaf.key)
    async with SmtpTestServer(tls, hostname="bad.contoso.test") as server:
        yield server


def target(name: str, host: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": host, "address": "127.0.0.1", "port": port, **extra}


def config_data(
    tmp_path: Path,
    ca_file: Path,
    targets: list[dict[str, Any]],
    *,
    web: dict[str, Any] | None = None,
    tenants: dict[str, Any] | None = None,
    interval: str = "2s",
) -> dict[str, Any]:
    contoso = {
        "accepted_domains": ["contoso.test"],
        "certificate_domain": "*.contoso.test",
        "targets": targets,
    }
    return {
        "state_dir": str(tmp_path / "state"),
        "web": {"listen": f"127.0.0.1:{unused_port()}", **(web or {})},
        "defaults": {
            "interval": interval,
            "timeout": "800ms",
            "retries": 0,
            "ca_file": str(ca_file),
            "ehlo_name": "probe.test",
        },
        "tenants": {"contoso": contoso, **(tenants or {})},
    }


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def running(
    tmp_path: Path, data: dict[str, Any]
) -> contextlib.AbstractAsyncContextManager[Exporter]:
    return in_process(write_config(tmp_path, data))


def probed_targets(exporter: Exporter) -> set[str]:
    return {state.target for state in exporter.results.snapshot()}


async def results_for(exporter: Exporter, *names: str) -> None:
    await eventually(lambda: set(names) <= probed_targets(exporter), f"results of {names}")


def last_probe(exporter: Exporter, name: str) -> float:
    return max(
        (s.result.started_at for s in exporter.results.snapshot() if s.target == name),
        default=0.0,
    )


# --- reading the exposition ----------------------------------------------------------------


Sample = tuple[str, dict[str, str], float]


def samples(text: str) -> list[Sample]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def find(text: str, name: str, **labels: str) -> list[float]:
    """Values of every sample of `name` whose labels include `labels`."""
    return [
        value
        for sample_name, sample_labels, value in samples(text)
        if sample_name == name and labels.items() <= sample_labels.items()
    ]


def one(text: str, name: str, **labels: str) -> float:
    values = find(text, name, **labels)
    assert len(values) == 1, f"{name}{labels}: expected one sample, got {values}"
    return values[0]


# --- /metrics and /probe -------------------------------------------------------------------


async def test_metrics_carry_the_contract_series_with_the_right_values(
    tmp_path: Path,
    ca_file: Path,
    good: SmtpTestServer,
    bad: SmtpTestServer,
    good_leaf: Issued,
) -> None:
    data = config_data(
        tmp_path,
        ca_file,
        [
            target("good", "mail.contoso.test", good.port),
            target("bad", "bad.contoso.test", bad.port),
        ],
    )
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        await results_for(exporter, "good", "bad")
        status, text = await get(http, f"{exporter.url}/metrics")

    assert status == 200
    good_labels = {
        "tenant": "contoso",
        "target": "good",
        "host": "mail.contoso.test",
        "address": "127.0.0.1",
        "port": str(good.port),
    }
    assert one(text, "tlsprobe_probe_success", **good_labels) == 1
    assert one(text, "tlsprobe_status", **good_labels) == 0
    assert one(text, "tlsprobe_o365_ready", **good_labels) == 1
    assert one(text, "tlsprobe_check_status", check="chain_trusted", **good_labels) == 0
    assert one(text, "tlsprobe_cert_not_after_timestamp_seconds", **good_labels) == (
        good_leaf.cert.not_valid_after_utc.timestamp()
    )
    info = one(text, "tlsprobe_cert_info", fingerprint_sha256=good_leaf.sha256, **good_labels)
    assert info == 1
    assert one(text, "tlsprobe_cert_changes_total", **good_labels) == 0
    assert one(text, "tlsprobe_probe_duration_seconds", phase="total", **good_labels) > 0
    assert find(text, "tlsprobe_probe_error_info", target="good") == []

    assert one(text, "tlsprobe_status", target="bad") == 2
    assert one(text, "tlsprobe_check_status", target="bad", check="chain_trusted") == 2
    assert one(text, "tlsprobe_chain_untrusted_info", target="bad", reason="unknown_root") == 1
    assert one(text, "tlsprobe_o365_ready", target="bad") == 0

    assert one(text, "tlsprobe_config_last_reload_successful") == 1
    assert one(text, "tlsprobe_targets_configured") == 2
    assert one(text, "tlsprobe_probes_total", result="ok") >= 1
    assert one(text, "tlsprobe_probes_total", result="critical") >= 1


async def test_probe_answers_for_the_named_target_only(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, bad: SmtpTestServer
) -> None:
    data = config_data(
        tmp_path,
        ca_file,
        [
            target("good", "mail.contoso.test", good.port),
            target("bad", "bad.contoso.test", bad.port),
        ],
        interval="5m",  # only /probe runs probes here, apart from the first cycle
    )
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        status, text = await get(http, f"{exporter.url}/probe", params={"target": "bad"})
        debug_status, debug = await get(
            http, f"{exporter.url}/probe", params={"target": "good", "debug": "true"}
        )

    assert status == 200
    assert {labels["target"] for _, labels, _ in samples(text) if "target" in labels} == {"bad"}
    assert one(text, "tlsprobe_status", target="bad") == 2
    assert find(text, "tlsprobe_config_last_reload_successful") == []

    assert debug_status == 200
    assert "C: EHLO probe.test" in debug
    assert "C: STARTTLS" in debug
    assert '"name": "chain_trusted"' in debug  # the check results, as JSON
    assert "Effective target configuration" in debug
    assert f'"port": {good.port}' in debug
    assert '"certificate_domain": "*.contoso.test"' in debug


async def test_probe_shows_the_connector_as_metrics_does_and_checks_module(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)])
    connector = {"certificate_domain": "*.contoso.test", "accepted_domains": "contoso.test"}
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        await results_for(exporter, "good")
        _, metrics = await get(http, f"{exporter.url}/metrics")
        url = f"{exporter.url}/probe"
        answers = {
            module: await get(http, url, params={"target": "good", "module": module})
            for module in ("tlsprobe", "smtp_starttls", "smtps", "http_2xx")
        }
        plain = await get(http, url, params={"target": "good"})
        twice = await get(http, f"{url}?target=good&module=tlsprobe&module=smtps")
        # A repeated target or tenant is as ambiguous as a repeated module: which one?
        repeated = [
            await get(http, f"{url}?{query}")
            for query in ("target=good&target=nosuch", "target=good&tenant=contoso&tenant=x")
        ]
    assert one(metrics, "tlsprobe_connector_info", target="good", **connector) == 1
    for status, text in (plain, answers["tlsprobe"], answers["smtp_starttls"]):
        assert status == 200, text
        assert one(text, "tlsprobe_connector_info", target="good", **connector) == 1
    # Modules that do not fit are refused, never silently ignored.
    status, text = answers["smtps"]
    assert status == 400 and "module=smtp_starttls" in text
    status, text = answers["http_2xx"]
    assert status == 400 and "unknown module" in text and "http_2xx" not in text
    assert twice[0] == 400
    for status, text in repeated:
        assert status == 400 and "given more than once" in text, text
        assert "nosuch" not in text


async def test_probe_refuses_unknown_hosts_unless_allowlisted(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, bad: SmtpTestServer
) -> None:
    targets = [target("good", "mail.contoso.test", good.port)]
    closed = config_data(tmp_path, ca_file, targets, interval="5m")
    async with running(tmp_path, closed) as exporter, aiohttp.ClientSession() as http:
        refused, body = await get(http, f"{exporter.url}/probe", params={"target": "nosuch"})
        adhoc, _ = await get(
            http, f"{exporter.url}/probe", params={"target": f"127.0.0.1:{good.port}"}
        )
    assert refused == 403
    assert "probe_allowlist" in body
    assert adhoc == 403

    allow = {"probe_allowlist": [f"127.0.0.1:{good.port}"]}
    opened = config_data(tmp_path, ca_file, targets, web=allow, interval="5m")
    async with running(tmp_path, opened) as exporter, aiohttp.ClientSession() as http:
        url = f"{exporter.url}/probe"
        allowed, text = await get(http, url, params={"target": f"127.0.0.1:{good.port}"})
        other_port, _ = await get(http, url, params={"target": f"127.0.0.1:{bad.port}"})
        other_host, _ = await get(http, url, params={"target": f"127.0.0.2:{good.port}"})
        name, _ = await get(http, url, params={"target": "nosuch"})
        published = probed_targets(exporter)

    assert allowed == 200
    assert one(text, "tlsprobe_probe_success", address="127.0.0.1", port=str(good.port)) == 1
    assert (other_port, other_host, name) == (403, 403, 403)
    assert not any(t.startswith("adhoc") for t in published), "ad hoc results stay unpublished"


async def test_probe_of_a_name_in_several_tenants_needs_the_tenant(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    fabrikam = {
        "accepted_domains": ["contoso.test"],
        "targets": [target("relay", "mail.contoso.test", good.port)],
    }
    data = config_data(
        tmp_path,
        ca_file,
        [target("relay", "mail.contoso.test", good.port)],
        tenants={"fabrikam": fabrikam},
        interval="5m",
    )
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        url = f"{exporter.url}/probe"
        ambiguous, body = await get(http, url, params={"target": "relay"})
        chosen, text = await get(http, url, params={"target": "relay", "tenant": "fabrikam"})

    assert ambiguous == 400
    assert "contoso" in body and "fabrikam" in body
    assert chosen == 200
    assert {labels["tenant"] for _, labels, _ in samples(text) if "tenant" in labels} == {
        "fabrikam"
    }


# --- health, readiness, reload -------------------------------------------------------------


async def test_healthy_and_ready(tmp_path: Path, ca_file: Path, good: SmtpTestServer) -> None:
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)])
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        assert await get(http, f"{exporter.url}/-/healthy") == (200, "Healthy\n")
        assert await get(http, f"{exporter.url}/-/ready") == (200, "Ready\n")
        assert (await get(http, f"{exporter.url}/-/reload"))[0] == 405  # GET must not reload


async def test_reload_with_a_broken_file_keeps_the_old_config(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, bad: SmtpTestServer
) -> None:
    both = [
        target("good", "mail.contoso.test", good.port),
        target("bad", "bad.contoso.test", bad.port),
    ]
    data = config_data(tmp_path, ca_file, both, interval="1s")
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        await results_for(exporter, "good", "bad")
        path = exporter.config_path
        assert path is not None

        broken = copy.deepcopy(data)
        broken["tenants"]["contoso"]["targets"][0]["port"] = 70000
        path.write_text(yaml.safe_dump(broken))
        status, body = await get(http, f"{exporter.url}/-/reload", method="POST")
        assert status == 500
        assert "targets[0].port" in body
        failed_at = time.time()
        await eventually(
            lambda: min(last_probe(exporter, "good"), last_probe(exporter, "bad")) > failed_at,
            "the old targets to be probed again after the failed reload",
        )
        _, text = await get(http, f"{exporter.url}/metrics")
        assert one(text, "tlsprobe_config_last_reload_successful") == 0
        assert one(text, "tlsprobe_targets_configured") == 2

        fixed = config_data(tmp_path, ca_file, both[:1], interval="1s")
        fixed["web"] = data["web"]
        path.write_text(yaml.safe_dump(fixed))
        assert await get(http, f"{exporter.url}/-/reload", method="POST") == (200, "OK\n")
        _, text = await get(http, f"{exporter.url}/metrics")

    assert one(text, "tlsprobe_config_last_reload_successful") == 1
    assert one(text, "tlsprobe_targets_configured") == 1
    assert find(text, "tlsprobe_status", target="good") == [0]
    assert [s for s in samples(text) if s[1].get("target") == "bad"] == []


# --- the status page -----------------------------------------------------------------------


class TableReader(HTMLParser):
    """Rows of the endpoint tables (failing, then the collapsed OK ones) as lists of cell
    texts; also every start tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self._inside = ("class", "endpoints") in attrs
        if not self._inside:
            return
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table(page: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """{target: {column header: cell text}} and the page's start tags."""
    reader = TableReader()
    reader.feed(page)
    header, *rows = reader.rows
    rows = [row for row in rows if row != header]  # the OK rows' table repeats it
    return {row[1]: dict(zip(header, row, strict=True)) for row in rows}, reader.tags


async def test_status_page_shows_every_endpoint_and_escapes_names(
    tmp_path: Path,
    ca_file: Path,
    good: SmtpTestServer,
    bad: SmtpTestServer,
) -> None:
    refused_port = unused_port()
    data = config_data(
        tmp_path,
        ca_file,
        [
            target("good", "mail.contoso.test", good.port),
            target("bad", "bad.contoso.test", bad.port),
            target("down", "down.contoso.test", refused_port),
        ],
    )
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        await results_for(exporter, "good", "bad", "down")
        async with http.get(f"{exporter.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        links = re.findall(r'href="(/endpoint\?[^"]+)"', page)
        detail_link = html.unescape(next(link for link in links if "target=bad" in link))
        async with http.get(f"{exporter.url}{detail_link}") as response:
            assert response.status == 200
            detail = await response.text()
        async with http.get(f"{exporter.url}/endpoint?tenant=contoso&target=nope") as response:
            assert response.status == 404
        # The query reaches the page: a search, a tenant's view, a hostile tenant, a bad page.
        views = {}
        for query in ("q=bad.contoso", "tenant=contoso&page=x", "tenant=%3Cb%3Ex&q=%22%3E"):
            async with http.get(f"{exporter.url}/?{query}") as response:
                assert response.status == 200
                views[query] = await response.text()
    assert set(table(views["q=bad.contoso"])[0]) == {"bad"}
    assert set(table(views["tenant=contoso&page=x"])[0]) == {"good", "bad", "down"}
    hostile = views["tenant=%3Cb%3Ex&q=%22%3E"]
    assert "No endpoints in tenant &lt;b&gt;x" in hostile and "<b>x" not in hostile
    assert 'value="&quot;&gt;"' in hostile

    rows, tags = table(page)
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    assert set(rows) == {"good", "bad", "down"}
    ok, broken, down = rows["good"], rows["bad"], rows["down"]
    assert ok["Status"] == "OK"
    assert ok["Endpoint"] == f"mail.contoso.test | 127.0.0.1:{good.port}"
    assert ok["Days left"] == "90"  # the test leaf lives 90 days from an hour ago
    assert ok["Names"] == "mail.contoso.test"
    assert "Contoso Test Intermediate CA" in ok["Issuer"]
    assert ok["Last change"].endswith("0 changes")
    assert ok["Failing checks"] == "none"
    assert ok["Exchange Online symptom"] == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", ok["Last probe"])

    assert broken["Status"] == "CRITICAL"
    assert broken["Names"] == "bad.contoso.test"
    assert broken["Failing checks"].startswith("chain_trusted:")
    assert "4.4.317" in broken["Exchange Online symptom"]  # the NDR `tlsprobe check` prints
    # The payload is text on the page, never markup: the parser saw no <script> element.
    assert HOSTILE.replace("<", "\\<").replace(">", "\\>") in broken["Issuer"]
    assert "script" not in tags
    assert "<script>" not in page

    assert down["Status"] == "UNKNOWN"
    assert down["Days left"] == "-"
    assert down["Failing checks"].startswith("refused:")
    # Worst first, so the eye lands on what needs doing.
    assert list(rows) == ["down", "bad", "good"]

    # The detail view an alert links to: checks with symptoms, the chain as sent, the history,
    # and a link probing again with the transcript; hostile text stays text there too.
    assert "<script>" not in detail
    assert "Chain as sent" in detail and "bad.contoso.test" in detail
    assert "chain_trusted" in detail and "4.4.317" in detail
    assert "Certificate history" in detail and "(current)" in detail
    assert 'href="/probe?target=bad&amp;tenant=contoso&amp;debug=true"' in detail


# --- basic auth and TLS from web-config.yml ------------------------------------------------


def web_config(tmp_path: Path, content: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(content))
    return {"config_file": path.name}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_basic_auth_guards_every_path(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = web_config(tmp_path, {"basic_auth_users": {"prometheus": hashed}})
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)], web=web)
    requests = [
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/probe?target=good"),
        ("GET", "/-/healthy"),
        ("GET", "/-/ready"),
        ("POST", "/-/reload"),
    ]
    right = basic("prometheus", "s3cret")
    wrong = [basic("prometheus", "wrong"), basic("someone", "s3cret"), basic("prometheus", "")]
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        for method, path in requests:
            url = exporter.url + path
            async with http.request(method, url) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Basic")
            for auth in wrong:
                assert (await get(http, url, method, headers=auth))[0] == 401, (path, auth)
            assert (await get(http, url, method, headers=right))[0] == 200, path
        garbled = {"Authorization": "Basic !!!not-base64"}
        assert (await get(http, f"{exporter.url}/metrics", headers=garbled))[0] == 401


@pytest.fixture
def web_tls_files(pki: Hierarchy, tmp_path: Path) -> tuple[str, str]:
    leaf = pki.leaf(["localhost", "127.0.0.1"])
    cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
    return cert.name, key.name


def client_context(ca_file: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


async def test_tls_on_the_web_endpoint(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, web_tls_files: tuple[str, str]
) -> None:
    cert, key = web_tls_files
    tls = {"cert_file": cert, "key_file": key, "min_version": "TLS13"}
    web = web_config(tmp_path, {"tls_server_config": tls})
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)], web=web)
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:
        assert exporter.url.startswith("https://127.0.0.1:")
        plain = exporter.url.replace("https://", "http://")
        status, text = await get(http, f"{exporter.url}/metrics", ssl=client_context(ca_file))
        assert status == 200
        assert one(text, "tlsprobe_config_last_reload_successful") == 1

        with pytest.raises(aiohttp.ClientError):
            await get(http, f"{plain}/metrics")
        tls12 = client_context(ca_file, maximum=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(aiohttp.ClientError):
            await get(http, f"{exporter.url}/metrics", ssl=tls12)
        # Without the test CA the client must not trust the exporter's certificate.
        with pytest.raises(aiohttp.ClientError):
            await get(http, f"{exporter.url}/metrics", ssl=ssl.create_default_context())


async def _silent(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that never sends a ClientHello."""
    return await asyncio.open_connection(host, port)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    return True


async def test_tls_handshakes_count_against_the_connection_cap(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, web_tls_files: tuple[str, str]
) -> None:
    """Connections that never finish (or start) their TLS handshake are connections: before,
    the guard saw a connection only once its handshake was done, so a flood of silent
    handshakes held descriptors past web.max_connections until the handshake timeout."""
    cert, key = web_tls_files
    web = web_config(tmp_path, {"tls_server_config": {"cert_file": cert, "key_file": key}})
    web |= {"max_connections": 8, "header_timeout": "60s"}
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)], web=web)
    async with running(tmp_path, data) as exporter:
        host, port = exporter.bound[0]
        held: list[asyncio.StreamWriter] = []
        try:
            readers = []
            for _ in range(24):
                reader, writer = await _silent(host, port)
                readers.append(reader)
                held.append(writer)
            # The cap makes room by closing the oldest idle connections: 16 of the 24 at least.
            closed = await asyncio.wait_for(
                asyncio.gather(*(_closed_by_server(reader) for reader in readers[:16])), 20
            )
            async with aiohttp.ClientSession() as http:
                ctx = client_context(ca_file)
                status, text = await get(http, f"{exporter.url}/metrics", ssl=ctx)
        finally:
            for writer in held:
                writer.close()
    assert closed == [True] * 16
    assert status == 200
    assert one(text, "tlsprobe_http_connections_closed_total", reason="limit") >= 16
    assert one(text, "tlsprobe_http_connections") <= 8


async def test_a_client_hello_in_two_pieces_is_answered(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, web_tls_files: tuple[str, str]
) -> None:
    """The guard starts TLS itself once it has admitted the connection: the bytes of a
    ClientHello split over two segments reach the TLS layer whole and in order."""
    cert, key = web_tls_files
    web = web_config(tmp_path, {"tls_server_config": {"cert_file": cert, "key_file": key}})
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)], web=web)
    async with running(tmp_path, data) as exporter:
        host, port = exporter.bound[0]
        responses = [
            await get_in_pieces(host, port, ca_file, "/-/healthy", first=first)
            for first in (1, 5, 64, 300)
        ]
    assert all(r.startswith(b"HTTP/1.1 200") for r in responses), [r[:40] for r in responses]


async def test_a_handshake_never_started_is_closed_after_the_header_timeout(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, web_tls_files: tuple[str, str]
) -> None:
    """One deadline from the first byte: TLS handshake and request headers together."""
    cert, key = web_tls_files
    web = web_config(tmp_path, {"tls_server_config": {"cert_file": cert, "key_file": key}})
    web |= {"header_timeout": "0.5s", "idle_timeout": "1h"}
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)], web=web)
    async with running(tmp_path, data) as exporter:
        reader, writer = await _silent(*exporter.bound[0])
        try:
            # A generous bound, not a timing assert: the deadline is half a second.
            assert await asyncio.wait_for(_closed_by_server(reader), timeout=15)
        finally:
            writer.close()
        async with aiohttp.ClientSession() as http:
            ctx = client_context(ca_file)
            status, text = await get(http, f"{exporter.url}/metrics", ssl=ctx)
    assert status == 200
    assert one(text, "tlsprobe_http_connections_closed_total", reason="header_timeout") == 1


# --- logging -------------------------------------------------------------------------------


@contextlib.contextmanager
def captured(caplog: pytest.LogCaptureFixture, name: str) -> Iterator[None]:
    with caplog.at_level(logging.INFO, logger=name):
        yield


def outcome_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    # The structured fields ride on the record as an `extra`, unknown to LogRecord's type.
    lines: list[dict[str, Any]] = [
        r.__dict__["fields"] for r in caplog.records if r.getMessage() == "probe outcome changed"
    ]
    return [fields for fields in lines if fields["target"] == name]


async def test_one_log_line_per_outcome_change_not_per_cycle(
    tmp_path: Path,
    ca_file: Path,
    bad: SmtpTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = config_data(
        tmp_path,
        ca_file,
        [
            target("bad", "bad.contoso.test", bad.port),
            target("down", "down.contoso.test", unused_port()),
        ],
        interval="1s",
    )
    seen: dict[str, set[float]] = {"bad": set(), "down": set()}

    def cycles_done() -> bool:
        for state in exporter.results.snapshot():
            seen[state.target].add(state.result.started_at)
        return all(len(times) >= 3 for times in seen.values())

    with captured(caplog, "tlsprobe.exporter.scheduler"):
        async with running(tmp_path, data) as exporter:
            await eventually(cycles_done, "three cycles of each failing target")

    bad_lines, down_lines = outcome_lines(caplog, "bad"), outcome_lines(caplog, "down")
    assert len(bad_lines) == 1, bad_lines
    assert bad_lines[0]["status"] == "critical"
    assert bad_lines[0]["failing"] == "chain_trusted"
    assert len(down_lines) == 1, down_lines
    assert down_lines[0]["reason"] == "refused"


async def test_a_malformed_request_gets_400_and_no_traceback_in_the_log(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    data = config_data(tmp_path, ca_file, [target("good", "mail.contoso.test", good.port)])
    async with running(tmp_path, data) as exporter:
        host, port = exporter.bound[0]
        with (
            caplog.at_level(logging.DEBUG, logger="aiohttp.server"),
            caplog.at_level(logging.DEBUG, logger="tlsprobe.exporter.server"),
        ):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\x00: y\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(200), 5)
            writer.close()
            await asyncio.sleep(0.1)
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    noisy = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.ERROR]
    assert noisy == []
    assert any(r.getMessage() == "bad HTTP request refused" for r in caplog.records)


async def test_the_aiohttp_internals_the_connection_guard_reads_are_there() -> None:
    """exporter/web/connections.py reads two private attributes of aiohttp's RequestHandler (no
    public equivalent): what it relies on, checked on every version CI installs (the floors
    stage too: both arrived in aiohttp 3.11)."""

    async def answer(_: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        return aiohttp.web.Response()

    handler = aiohttp.web.Server(answer)()
    assert handler._request_in_progress is False
    assert handler._request_count == 0

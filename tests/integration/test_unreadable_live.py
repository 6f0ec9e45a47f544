"""Certificates `cryptography` cannot parse, served over a real socket to `check` and `serve`.

A loopback SMTP server presents a leaf whose subject is a PrintableString holding `*` (OpenSSL
serves it; `cryptography` refuses to load it). `tlsprobe check` must print a verdict and exit 2
(no traceback, and `--json` prints its object). The exporter must replace a previous OK with
the new verdict when the server renews to such a certificate, record the change in the drift
history by the fingerprint of the raw DER, and answer `/probe` with the verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.exporter.test_http import config_data, one, running, target
from tests.integration.test_hostile import cli_args, run_cli
from tests.support.broken import MAKERS
from tests.support.exporter import fetch as get
from tests.support.pki import Hierarchy, Issued
from tests.support.rawtls import RawCertificateServer
from tests.support.servers import ServerTls, SmtpTestServer
from tests.support.wait import eventually

HOST = "mail.contoso.test"


@pytest.fixture
def good_leaf(pki: Hierarchy) -> Issued:
    return pki.leaf((HOST,))


def broken_tls(
    pki: Hierarchy, leaf: Issued, kind: str = "printable-star-subject"
) -> tuple[ServerTls, bytes]:
    """The leaf made broken, or (for a duplicated extension) the intermediate sent with it.
    Returns what the server presents and the DER of the new leaf."""
    if kind == "duplicate-extension":
        intermediate = MAKERS[kind](pki.intermediate.der, pki.root.key)
        return ServerTls([leaf.cert, intermediate], leaf.key), leaf.der
    der = MAKERS[kind](leaf.der, pki.intermediate.key)
    return ServerTls([der, pki.intermediate.cert], leaf.key), der


@pytest.fixture
async def server(pki: Hierarchy, good_leaf: Issued) -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer(ServerTls(pki.chain(good_leaf), good_leaf.key)) as running_server:
        yield running_server


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "human"])
async def test_check_judges_a_certificate_cryptography_cannot_parse(
    pki: Hierarchy,
    good_leaf: Issued,
    server: SmtpTestServer,
    ca_file: Path,
    json_output: bool,
) -> None:
    tls, der = broken_tls(pki, good_leaf)
    server.present(tls)
    extra = ["--json"] if json_output else []
    code, out, err = await run_cli(*cli_args(server.port, ca_file, *extra))

    assert code == 2, err
    assert err == ""  # no traceback, no library warning
    if json_output:
        doc = json.loads(out)
        assert doc["status"] == "critical"
        assert doc["chain"][0]["sha256"] == hashlib.sha256(der).hexdigest()
        checks = {c["name"]: c for c in doc["checks"]}
        assert checks["certificate_format"]["status"] == "critical"
        assert "PrintableString holding *" in checks["certificate_format"]["message"]
    else:
        assert out.startswith("TLSPROBE CRITICAL")
        assert "certificate_format" in out


async def test_check_shows_a_certificate_openssl_itself_cannot_parse(
    pki: Hierarchy, good_leaf: Issued, ca_file: Path
) -> None:
    """A hand-written TLS server sends a truncated leaf: OpenSSL aborts the handshake, and the
    report still shows the chain as sent, its fingerprint and no invented dates."""
    truncated = MAKERS["truncated"](good_leaf.der, pki.intermediate.key)
    async with RawCertificateServer([truncated, pki.intermediate.der]) as raw:
        code, out, err = await run_cli(*cli_args(raw.port, ca_file, "--json"))
        human_code, human_out, _ = await run_cli(*cli_args(raw.port, ca_file))

    assert (code, human_code, err) == (2, 2, "")
    doc = json.loads(out)
    assert doc["error"]["kind"] == "tls_handshake"
    assert "cannot be parsed" in doc["error"]["message"]
    assert [c["sha256"] for c in doc["chain"]] == [
        hashlib.sha256(truncated).hexdigest(),
        pki.intermediate.sha256,
    ]
    assert "valid       (unreadable)" in human_out
    assert "EXPIRED" not in human_out and "1970" not in human_out
    assert "days_left" not in human_out.splitlines()[0]


@pytest.mark.parametrize("kind", ["printable-star-subject", "duplicate-extension"])
async def test_serve_replaces_an_ok_with_the_verdict_and_records_the_change(
    tmp_path: Path,
    ca_file: Path,
    pki: Hierarchy,
    good_leaf: Issued,
    server: SmtpTestServer,
    kind: str,
) -> None:
    """The new leaf is the broken one, or a fresh leaf sent with a broken intermediate."""
    data = config_data(tmp_path, ca_file, [target("mx", HOST, server.port)], interval="1s")
    labels = {"target": "mx", "port": str(server.port)}
    async with running(tmp_path, data) as exporter, aiohttp.ClientSession() as http:

        def status() -> int | None:
            states = exporter.results.snapshot()
            return int(states[0].result.status) if states else None

        await eventually(lambda: status() == 0, "the first OK")
        tls, der = broken_tls(pki, pki.leaf((HOST,)), kind)
        server.present(tls)
        await eventually(lambda: status() == 2, "the verdict on the renewed certificate")
        _, metrics = await get(http, f"{exporter.url}/metrics")
        probe_status, probed = await get(http, f"{exporter.url}/probe", params={"target": "mx"})

    assert one(metrics, "tlsprobe_status", **labels) == 2
    assert one(metrics, "tlsprobe_probe_success", **labels) == 1
    assert one(metrics, "tlsprobe_check_status", check="certificate_format", **labels) == 2
    assert one(metrics, "tlsprobe_cert_changes_total", **labels) == 1
    fingerprint = hashlib.sha256(der).hexdigest()
    assert one(metrics, "tlsprobe_cert_info", fingerprint_sha256=fingerprint, **labels) == 1
    assert probe_status == 200
    assert one(probed, "tlsprobe_status", target="mx") == 2

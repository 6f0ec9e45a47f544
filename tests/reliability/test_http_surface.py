"""The HTTP surface lets no one in: the /probe allowlist, basic auth, TLS, request bounds.

`/probe` must refuse, before any connection, every host the allowlist does not cover: IP
literals in every spelling, IPv6 and IPv4-in-IPv6 forms, names that a loopback DNS test server
resolves to loopback, private, link-local, documentation, NAT64 or multicast addresses, names
beside the allowed suffix, URL-encoded and injected separators, and other ports. The exporter's
probe function is replaced by a guard that records every endpoint it is asked to reach and only
passes loopback on to the real probe, so the tests can prove that nothing was attempted; no
packet ever goes to a non-loopback address. Basic auth must hold on every path, cost the same
for unknown users as for wrong passwords, and survive a flood of wrong passwords without
starving scrapes; client certificates must be enforced; request size and concurrency bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from yarl import URL

from tests.reliability.harness import (
    basic,
    exporter_config,
    running,
    write_yaml,
)
from tests.support.dnsserver import DnsTestServer
from tests.support.exporter import fetch
from tests.support.pki import Hierarchy, make_leaf, make_root, write_server_files
from tests.support.servers import Behaviour, ServerTls, SmtpTestServer
from tlsprobe.exporter.app import Exporter
from tlsprobe.exporter.config import load_config
from tlsprobe.exporter.config.web import load_web_config
from tlsprobe.exporter.web.allowlist import AllowlistError, check_adhoc, is_public
from tlsprobe.model import ProbeResult
from tlsprobe.probe.dns.discover import make_resolver

HOST = "mail.contoso.test"
CONFIGURED = "good"
"""The one target of the configuration (scheduled; every other probe here is an ad hoc one)."""
ZONE = {
    ("loop.allowed.test", "A"): ["127.0.0.1"],
    ("ten.allowed.test", "A"): ["10.0.0.1"],
    ("private.allowed.test", "A"): ["192.168.1.1"],
    ("cgnat.allowed.test", "A"): ["100.64.0.1"],
    ("doc.allowed.test", "A"): ["192.0.2.10"],
    ("multicast.allowed.test", "A"): ["224.0.0.251"],
    ("zero.allowed.test", "A"): ["0.0.0.0"],
    ("v6loop.allowed.test", "AAAA"): ["::1"],
    ("linklocal.allowed.test", "AAAA"): ["fe80::1"],
    ("ula.allowed.test", "AAAA"): ["fd00::1"],
    ("mapped.allowed.test", "AAAA"): ["::ffff:127.0.0.1"],
    ("nat64.allowed.test", "AAAA"): ["64:ff9b::a00:1"],
    ("sixtofour.allowed.test", "AAAA"): ["2002:7f00:1::1"],
    ("sitelocal.allowed.test", "AAAA"): ["fec0::1"],
    ("mixed.allowed.test", "A"): ["127.0.0.1", "10.0.0.1"],
    ("alias.allowed.test", "CNAME"): ["ten.allowed.test."],
    ("public.allowed.test", "A"): ["8.8.8.8"],
    ("public.allowed.test", "AAAA"): ["2001:4860:4860::8888"],
}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def good(pki: Hierarchy) -> AsyncIterator[SmtpTestServer]:
    leaf = pki.leaf([HOST])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer(dict(ZONE)) as server:
        yield server


@pytest.fixture
def web_tls(pki: Hierarchy, tmp_path: Path) -> dict[str, str]:
    leaf = pki.leaf(["localhost", "127.0.0.1"])
    cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
    return {"cert_file": str(cert), "key_file": str(key)}


Reached = list[tuple[str, int]]


@contextlib.contextmanager
def guard(exporter: Exporter) -> Iterator[Reached]:
    """Record every endpoint a probe is asked to reach but the configured target's own cycles
    (their first one starts at a random moment in the first 10 s, maybe during the test); pass
    only loopback to the real probe."""
    reached: Reached = []
    scheduler = exporter.scheduler
    assert scheduler is not None
    real = scheduler._probe

    async def guarded(endpoint: Any, *args: Any, **kwargs: Any) -> ProbeResult:
        if endpoint.target != CONFIGURED:
            reached.append((endpoint.address, endpoint.port))
        if not ipaddress.ip_address(endpoint.address).is_loopback:
            raise AssertionError(f"a probe to {endpoint.address} was attempted")
        return await real(endpoint, *args, **kwargs)

    scheduler._probe = guarded
    try:
        yield reached
    finally:
        scheduler._probe = real


def config(
    tmp_path: Path,
    ca_file: Path,
    good: SmtpTestServer,
    *,
    web: dict[str, Any] | None = None,
    dns_port: int | None = None,
    extra_targets: list[dict[str, Any]] | None = None,
) -> Path:
    targets = [{"name": CONFIGURED, "host": HOST, "address": "127.0.0.1", "port": good.port}]
    data = exporter_config(
        tmp_path / "state",
        ca_file,
        targets + (extra_targets or []),
        interval="5m",
        timeout="1s",
        retries=0,
        web=web,
        dns_port=dns_port,
    )
    return write_yaml(tmp_path / "tlsprobe.yml", data)


def web_config_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return {"config_file": str(path)}


# --- /probe and the allowlist ------------------------------------------------------------------


def forbidden_targets(port: int) -> list[str]:
    p = port
    return [
        # IP literals outside the one allowed address and port, in every spelling.
        "127.0.0.1",
        "127.0.0.1:25",
        f"127.0.0.2:{p}",
        f"[::1]:{p}",
        "::1",
        f"[::ffff:127.0.0.1]:{p}",
        f"[::ffff:7f00:1]:{p}",
        f"0x7f000001:{p}",
        f"2130706433:{p}",
        f"127.1:{p}",
        f"0177.0.0.1:{p}",
        f"localhost:{p}",
        f"10.0.0.1:{p}",
        f"192.168.1.1:{p}",
        f"[fe80::1]:{p}",
        f"[10.0.0.1]:{p}",
        # Allowed names that resolve somewhere they must not reach.
        *(
            f"{name}.allowed.test:{p}"
            for name in (
                "ten",
                "private",
                "cgnat",
                "doc",
                "multicast",
                "zero",
                "v6loop",
                "linklocal",
                "ula",
                "mapped",
                "nat64",
                "sixtofour",
                "sitelocal",
                "mixed",
                "alias",
                "nowhere",
            )
        ),
        # Names beside the allowed suffix, and an allowed name on a port the rule does not give.
        f"allowed.test:{p}",
        f"evilallowed.test:{p}",
        f"loop.allowed.test.evil.test:{p}",
        "loop.allowed.test:2525",
        # Separators and injection.
        f"loop.allowed.test:{p}@10.0.0.1",
        "10.0.0.1#loop.allowed.test",
        f"10.0.0.1/loop.allowed.test:{p}",
        f"loop.allowed.test:{p}:25",
        f"loop.allowed.test%3A{p}",
        "fe80::1%lo",
        f"a\uff0fb.allowed.test:{p}",
        f"loop.allowed.test:{p}\r\nX-Injected: 1",
        f"loop.allowed.test:{p}\x00",
        "loop.allowed.test:0",
        "loop.allowed.test:99999",
        f"loop.allowed.test:+{p}",
        "",
        "x" * 400,
    ]


async def test_probe_never_reaches_a_host_outside_the_allowlist(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, dns: DnsTestServer
) -> None:
    allow = [f"127.0.0.1:{good.port}", f"*.allowed.test:{good.port}", "*.allowed.test"]
    path = config(tmp_path, ca_file, good, web={"probe_allowlist": allow}, dns_port=dns.port)
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        url = f"{exporter.url}/probe"
        with guard(exporter) as reached:
            wrong = {}
            for target in forbidden_targets(good.port):
                status, body = await fetch(http, url, params={"target": target})
                if status not in (400, 403):
                    wrong[target] = (status, body[:200])
            # URL tricks the client library would otherwise normalise away.
            for raw in (
                f"/probe?target=10.0.0.1&target=127.0.0.1:{good.port}",
                "/probe?target=127.0.0.1%253A25",
                f"/probe?target=loop.allowed.test%25253A{good.port}",
            ):
                status, body = await fetch(http, URL(exporter.url + raw, encoded=True))
                if status not in (400, 403):
                    wrong[raw] = (status, body[:200])
            assert wrong == {}
            assert reached == [], "a refused target was probed"

            # The controls: the allowed address and an allowed name resolving to it work, and
            # the probe goes to the address the check resolved (no second lookup to rebind).
            queries_before = len(dns.queries)
            for target in (f"127.0.0.1:{good.port}", f"loop.allowed.test:{good.port}"):
                status, body = await fetch(http, url, params={"target": target})
                assert status == 200, (target, body[:300])
                assert "tlsprobe_probe_success" in body
            assert reached == [("127.0.0.1", good.port)] * 2
            asked = [q[:2] for q in dns.queries[queries_before:]]
            assert sorted(asked) == [("loop.allowed.test", "A"), ("loop.allowed.test", "AAAA")]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("192.0.2.10", False),
        ("224.0.0.251", False),
        ("239.255.255.250", False),
        ("255.255.255.255", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("fd00::1", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::7f00:1", False),
        ("2002:7f00:1::1", False),
        ("2002:a00:1::1", False),
        ("2002:808:808::1", True),
        ("64:ff9b::a00:1", False),
        ("64:ff9b::808:808", True),
        ("64:ff9b:1::a00:1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ],
)
def test_only_public_unicast_addresses_count_as_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def test_a_listed_name_may_resolve_to_public_addresses(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, dns: DnsTestServer
) -> None:
    # check_adhoc alone: it decides; nothing is probed, so no packet goes to these addresses.
    path = config(tmp_path, ca_file, good, web={"probe_allowlist": ["*.allowed.test"]})
    cfg = load_config(path)
    resolver = make_resolver(["127.0.0.1"], port=dns.port, timeout=2.0)
    target = await check_adhoc("public.allowed.test", cfg, resolver)
    assert (target.host, target.address, target.port, target.sni) == (
        "public.allowed.test",
        "8.8.8.8",
        25,
        "public.allowed.test",
    )
    with pytest.raises(AllowlistError, match=r"10\.0\.0\.1"):
        await check_adhoc("alias.allowed.test", cfg, resolver)
    with pytest.raises(AllowlistError, match=r"not in web\.probe_allowlist"):
        await check_adhoc("public.allowed.test:2525", cfg, resolver)


# --- basic auth --------------------------------------------------------------------------------


async def test_basic_auth_guards_unrouted_paths_and_odd_headers(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = web_config_file(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    path = config(tmp_path, ca_file, good, web=web)
    token = "cHJvbWV0aGV1cw=="  # "prometheus", no colon
    odd = [
        {},
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "Basic"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Basic !!!"},
        basic("Prometheus", "s3cret"),
        basic("prometheus", "s3cret "),
        basic("prometheus", "S3cret"),
        basic("", "s3cret"),
        basic("prometheus", "s3cret" + "x" * 100),
    ]
    paths = [("GET", "/nonexistent"), ("HEAD", "/metrics"), ("OPTIONS", "/metrics")]
    paths += [("GET", "/metrics/"), ("GET", "//metrics"), ("DELETE", "/-/reload")]
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        for method, where in paths:
            for headers in odd:
                status, _ = await fetch(
                    http, URL(exporter.url + where, encoded=True), method, headers=headers
                )
                assert status == 401, (method, where, headers)
        status, _ = await fetch(
            http, f"{exporter.url}/metrics", headers=basic("prometheus", "s3cret")
        )
        assert status == 200


def _median_check_seconds(check: Any, user: str, rounds: int = 15) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert check(user, "wrong password") is False
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.parametrize("cost", [4, 6])
def test_unknown_user_costs_what_a_wrong_password_costs(tmp_path: Path, cost: int) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=cost)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    web = load_web_config(path)
    assert web.check_password("prometheus", "s3cret")
    known = _median_check_seconds(web.check_password, "prometheus")
    unknown = _median_check_seconds(web.check_password, "nobody")
    # A behaviour, not a benchmark: a factor of 3 either way tolerates noise, while a dummy
    # hash of another cost differs by 2**(difference in cost), 16x and more here.
    assert known / 3 < unknown < known * 3, (known, unknown)


@pytest.mark.slow
async def test_a_flood_of_wrong_passwords_does_not_starve_scrapes(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    web = web_config_file(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    path = config(tmp_path, ca_file, good, web={**web, "max_concurrent_requests": 100})
    right = basic("prometheus", "s3cret")
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        metrics = f"{exporter.url}/metrics"
        assert (await fetch(http, metrics, headers=right))[0] == 200  # now cached

        async def scrape() -> float:
            await asyncio.sleep(0.05)  # behind the flood
            started = time.monotonic()
            assert (await fetch(http, metrics, headers=right))[0] == 200
            return time.monotonic() - started

        async def guess(i: int) -> tuple[int, str]:
            # 48 clients, each from its own loopback address (one check at a time per client).
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.1.{i + 1}", 0))
            async with aiohttp.ClientSession(connector=connector) as own:
                return await fetch(own, metrics, headers=basic("prometheus", f"guess{i}"))

        flood = asyncio.gather(*(guess(i) for i in range(48)))
        answers, latency = await asyncio.gather(flood, scrape())
    assert {status for status, _ in answers} == {401}
    assert latency < 1.0, f"an authorised scrape waited {latency:.2f} s behind bcrypt"


# --- TLS ---------------------------------------------------------------------------------------


def _client(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def test_client_certificates_are_required_and_verified(
    tmp_path: Path,
    ca_file: Path,
    pki: Hierarchy,
    good: SmtpTestServer,
    web_tls: dict[str, str],
) -> None:
    client = pki.leaf(["client.contoso.test"])
    trusted = write_server_files(tmp_path, client.key, pki.chain(client), stem="client")
    rogue = make_leaf(make_root("Rogue Client CA"), ["client.contoso.test"])
    untrusted = write_server_files(tmp_path, rogue.key, [rogue.cert], stem="rogue")
    tls = {
        **web_tls,
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(ca_file),
    }
    lines = "\n".join(f"  {k}: '{v}'" for k, v in tls.items())
    web = web_config_file(tmp_path, f"tls_server_config:\n{lines}\n")
    path = config(tmp_path, ca_file, good, web=web)
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        url = f"{exporter.url}/metrics"
        assert (await fetch(http, url, ssl=_client(ca_file, trusted)))[0] == 200
        for refused in (_client(ca_file), _client(ca_file, untrusted)):
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                await fetch(http, url, ssl=refused)


# --- request bounds ----------------------------------------------------------------------------


async def test_an_oversized_body_is_refused(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good)
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        status, _ = await fetch(http, f"{exporter.url}/-/reload", "POST", data=b"x" * (1 << 20))
    assert status == 413


async def test_requests_beyond_the_limit_are_refused_not_queued(
    tmp_path: Path, ca_file: Path, pki: Hierarchy, good: SmtpTestServer
) -> None:
    async with SmtpTestServer(behaviour=Behaviour.SILENT) as silent:
        slow = {"name": "silent", "host": HOST, "address": "127.0.0.1", "port": silent.port}
        path = config(
            tmp_path, ca_file, good, web={"max_concurrent_requests": 2}, extra_targets=[slow]
        )
        async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
            probe = f"{exporter.url}/probe?target=silent"
            held = [asyncio.ensure_future(fetch(http, probe)) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are now waiting on the silent server
            started = time.monotonic()
            refused, _ = await fetch(http, f"{exporter.url}/metrics")
            waited = time.monotonic() - started
            answers = await asyncio.gather(*held)
            after, _ = await fetch(http, f"{exporter.url}/metrics")
    assert refused == 503 and waited < 0.5
    assert [status for status, _ in answers] == [200, 200]
    assert after == 200


async def test_header_floods_and_huge_urls_are_rejected(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer
) -> None:
    path = config(tmp_path, ca_file, good)
    async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
        url = f"{exporter.url}/metrics"
        many = {f"X-Flood-{i}": "v" * 100 for i in range(1000)}
        long = {"X-Long": "v" * 100_000}
        for headers in (many, long):
            status, _ = await fetch(http, url, headers=headers)
            assert status in (400, 431), status
        status, _ = await fetch(http, url + "?x=" + "a" * 100_000)
        assert status in (400, 414), status
        assert (await fetch(http, url))[0] == 200

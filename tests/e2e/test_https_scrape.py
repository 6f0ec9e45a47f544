"""Real Prometheus scrapes `tlsprobe serve` over HTTPS with basic auth, as a secured deployment
does (`web.config_file` with `tls_server_config` and `basic_auth_users`).

The web port's TLS is started by the connection guard once it has admitted the TCP connection
(`loop.start_tls`), so this is Go's TLS client, as Prometheus ships it, against that path, on a
scrape every second: `up` is 1 and the exporter's series are ingested. A second job with a
wrong password is refused (`up` 0), and the exporter counts the failed authentications.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from tests.e2e.harness import Daemons, query, serve_one_target
from tests.support.gates import prometheus_tool
from tests.support.pki import Hierarchy, write_server_files
from tests.support.wait import poll

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PASSWORD = "s3cret-scrape"


def _serve(tmp_path: Path, pki: Hierarchy, ca_file: Path) -> tuple[subprocess.Popen[str], str]:
    leaf = pki.leaf(["localhost", "127.0.0.1"])
    cert, key = write_server_files(tmp_path, leaf.key, pki.chain(leaf), stem="web")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"prometheus": hashed},
    }
    (tmp_path / "web.yml").write_text(yaml.safe_dump(web))
    web_config = {"config_file": str(tmp_path / "web.yml")}
    return serve_one_target(tmp_path, web_config, {"ca_file": str(ca_file)})


def _job(name: str, target: str, ca_file: Path, password: str) -> dict[str, Any]:
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": {"ca_file": str(ca_file), "server_name": "127.0.0.1"},
        "basic_auth": {"username": "prometheus", "password": password},
        "static_configs": [{"targets": [target]}],
    }


def test_prometheus_scrapes_the_exporter_over_https_with_basic_auth(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    binary = prometheus_tool("prometheus")
    process, url = _serve(tmp_path, pki, ca_file)
    try:
        assert url.startswith("https://"), url
        target = url.removeprefix("https://").removesuffix("/metrics")
        jobs = [
            _job("tlsprobe", target, ca_file, PASSWORD),
            _job("wrong-password", target, ca_file, "not-it"),
        ]
        with Daemons(tmp_path) as daemons:
            prometheus = daemons.scraping(binary, jobs)

            def state() -> tuple[dict[str, str], float, int]:
                up = {s["metric"]["job"]: s["value"][1] for s in query(prometheus, "up")}
                failed = query(prometheus, 'tlsprobe_http_auth_attempts_total{outcome!="ok"}')
                ingested = query(prometheus, 'tlsprobe_build_info{job="tlsprobe"}')
                return up, sum(float(s["value"][1]) for s in failed), len(ingested)

            # Until both jobs were scraped and a scrape by the first one counted the second's
            # refusals.
            seen, refused, ingested = poll(
                state, lambda now: len(now[0]) == 2 and now[1] >= 1, timeout=30
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert seen == {"tlsprobe": "1", "wrong-password": "0"}
    assert ingested == 1
    assert refused >= 1

"""`/probe` ends before the scrape that asked for it, as blackbox_exporter does.

Prometheus sends `X-Prometheus-Scrape-Timeout-Seconds` with every scrape; a probe that runs
longer than that is cancelled by Prometheus and leaves no sample at all. The probe's timeout is
therefore the smaller of its own and the scrape's minus a margin, and it does not retry.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.exporter import fetch, in_process
from tests.support.pki import Hierarchy
from tests.support.servers import Behaviour, ServerTls, SmtpTestServer, unused_port
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.web.server import SCRAPE_TIMEOUT_HEADER, within_scrape_timeout


def target_with(timeout: float, retries: int = 2) -> Any:
    config = parse_config(
        {
            "defaults": {"interval": "10m", "timeout": timeout, "retries": retries},
            "targets": [{"host": "mail.contoso.test"}],
        },
        base_dir=Path("."),
    )
    return config.targets[0]


@pytest.mark.parametrize(
    ("own", "header", "expected"),
    [
        (30.0, "10", 9.5),  # the scrape's bound, less the margin
        (5.0, "10", 5.0),  # the target's own timeout is already shorter
        (30.0, "0.8", 0.4),  # too short for the margin: half of it
        (30.0, "2.5", 2.0),
    ],
)
def test_the_timeout_is_the_smaller_bound(own: float, header: str, expected: float) -> None:
    target = target_with(own)
    cut = within_scrape_timeout(target, header)
    assert cut.timeout == expected
    assert cut.retries == 0
    assert cut == replace(target, timeout=expected, retries=0)


def test_without_the_header_the_target_is_unchanged() -> None:
    target = target_with(30.0)
    assert within_scrape_timeout(target, None) is target


@pytest.mark.parametrize("header", ["soon", "0", "-1", "nan", "inf", ""])
def test_a_bad_header_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match="seconds"):
        within_scrape_timeout(target_with(30.0), header)


async def test_a_silent_server_answers_within_the_scrape(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    leaf = pki.leaf(("mail.contoso.test",))
    async with SmtpTestServer(
        ServerTls([leaf.cert], leaf.key), behaviour=Behaviour.SILENT
    ) as silent:
        config = {
            "state_dir": str(tmp_path / "state"),
            "web": {
                "listen": f"127.0.0.1:{unused_port()}",
                "probe_allowlist": [f"127.0.0.1:{silent.port}"],
            },
            "defaults": {
                "interval": "10m",
                "timeout": "30s",
                "retries": 2,
                "ca_file": str(ca_file),
            },
            "targets": [{"host": "other.contoso.test", "address": "127.0.0.2"}],
        }
        path = tmp_path / "tlsprobe.yml"
        path.write_text(yaml.safe_dump(config))
        async with in_process(path) as exporter, aiohttp.ClientSession() as http:
            url = f"{exporter.url}/probe"
            params = {"target": f"127.0.0.1:{silent.port}", "debug": "true"}
            status, body = await fetch(
                http, url, params=params, headers={SCRAPE_TIMEOUT_HEADER: "2"}
            )
            assert status == 200
            # The 30 s of the configuration would have outlasted the scrape.
            assert "timeout: no answer within 1.5 s" in body, body
            status, body = await fetch(
                http, url, params=params, headers={SCRAPE_TIMEOUT_HEADER: "soon"}
            )
            assert (status, body.split(":")[0]) == (400, SCRAPE_TIMEOUT_HEADER)

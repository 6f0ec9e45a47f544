"""No secret from the web configuration reaches the logs, /probe?debug=true or any page.

The exporter runs with basic auth; the test logs in, fails to log in, asks for a debug probe,
the status page and /metrics, and reloads web configurations broken in the ways people break
them (a plaintext password where the hash belongs, a YAML error on the line holding the hash,
the password under an unknown key). The password, its hash and the Authorization header value
must appear in no response body and no log record, formatted as the exporter formats them.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.reliability.harness import (
    basic,
    exporter_config,
    running,
    write_yaml,
)
from tests.support.exporter import fetch
from tests.support.pki import Hierarchy
from tests.support.servers import ServerTls, SmtpTestServer
from tlsprobe.exporter.logfmt import LogfmtFormatter

PASSWORD = "correct-horse-battery-staple-4711"


@pytest.fixture
async def good(pki: Hierarchy) -> AsyncIterator[SmtpTestServer]:
    leaf = pki.leaf(["mail.contoso.test"])
    async with SmtpTestServer(ServerTls(pki.chain(leaf), leaf.key)) as server:
        yield server


async def test_passwords_and_hashes_never_appear_in_output(
    tmp_path: Path, ca_file: Path, good: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_file = tmp_path / "web-config.yml"
    good_web = f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    web_file.write_text(good_web)
    target = {"name": "good", "host": "mail.contoso.test", "address": "127.0.0.1"}
    data = exporter_config(
        tmp_path / "state",
        ca_file,
        [{**target, "port": good.port}],
        interval="1s",
        timeout="800ms",
        web={"config_file": str(web_file)},
    )
    path = write_yaml(tmp_path / "tlsprobe.yml", data)
    broken = [
        f"basic_auth_users:\n  prometheus: '{PASSWORD}'\n",
        f"basic_auth_users:\n  prometheus: '{hashed}\n  other: [\n",
        f"basic_auth_users:\n  prometheus: {hashed}\n\t{PASSWORD}: x\n",
        f"basic_auth_users:\n  prometheus: '{hashed}'\npasswords: {PASSWORD}\n",
        f"basic_auth_users:\n  prometheus: '{hashed}'\n  prometheus: '{PASSWORD}'\n",
    ]
    right = basic("prometheus", PASSWORD)
    bodies: list[str] = []
    package = logging.getLogger("tlsprobe")
    propagate, package.propagate = package.propagate, True  # setup_logging may have cut it
    try:
        with caplog.at_level(logging.DEBUG):
            async with running(path) as (exporter, _), aiohttp.ClientSession() as http:
                base = exporter.url
                for where in ("/metrics", "/", "/probe?target=good&debug=true", "/-/ready"):
                    status, body = await fetch(http, base + where, headers=right)
                    assert status == 200, where
                    bodies.append(body)
                for headers in (basic("prometheus", PASSWORD[::-1]), basic("nobody", PASSWORD)):
                    bodies.append((await fetch(http, base + "/metrics", headers=headers))[1])
                for text in broken:
                    web_file.write_text(text)
                    status, body = await fetch(http, base + "/-/reload", "POST", headers=right)
                    assert status == 500, text
                    bodies.append(body)
                web_file.write_text(good_web)
                assert (await fetch(http, base + "/-/reload", "POST", headers=right))[0] == 200
    finally:
        package.propagate = propagate
    formatter = LogfmtFormatter()
    logs = [formatter.format(record) for record in caplog.records]
    assert any("reload failed" in line for line in logs)
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    secrets = {"password": PASSWORD, "hash": hashed, "hash body": hashed[7:], "header": token}
    leaks = [
        (what, place[:300])
        for place in [*bodies, *logs]
        for what, secret in secrets.items()
        if leaked(secret, place)
    ]
    assert leaks == []


def leaked(secret: str, text: str, window: int = 12) -> bool:
    """Any 12 characters of the secret in a row: error snippets clip lines, not secrets."""
    return any(secret[i : i + window] in text for i in range(len(secret) - window + 1))

"""`tlsprobe check` on short-lived leaves served by a loopback SMTP server: the expiry
thresholds follow the certificate's lifetime unless --warn-days/--crit-days are given."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.pki import Hierarchy, Issued
from tests.support.servers import ServerTls, SmtpTestServer

HOST = "mail.contoso.test"
LIFETIME = 47.0


def leaf(pki: Hierarchy, days_left: float) -> Issued:
    now = datetime.now(UTC)
    return pki.leaf(
        (HOST,),
        not_before=now - timedelta(days=LIFETIME - days_left),
        not_after=now + timedelta(days=days_left),
    )


async def check(pki: Hierarchy, served: Issued, ca_file: Path, *extra: str) -> dict[str, str]:
    tls = ServerTls([served.cert, pki.intermediate.cert], served.key)
    async with SmtpTestServer(tls) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tlsprobe",
            "check",
            f"{HOST}:{server.port}",
            "--address",
            "127.0.0.1",
            "--ca-file",
            str(ca_file),
            "--timeout",
            "5",
            "--json",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert stdout, stderr.decode()
    report = json.loads(stdout)
    return {c["name"]: c["status"] for c in report["checks"]} | {"": report["status"]}


@pytest.mark.parametrize(("days_left", "expected"), [(16, "ok"), (9, "warning"), (5, "critical")])
async def test_a_47_day_leaf(
    pki: Hierarchy, ca_file: Path, days_left: float, expected: str
) -> None:
    """Renewed at a third of its lifetime left (about 16 days), a 47-day leaf is ok; 9 days
    left is a renewal a week overdue: not ok; under 7 days: critical."""
    checks = await check(pki, leaf(pki, days_left), ca_file)
    assert checks["not_expired"] == expected


async def test_warn_days_overrides_the_lifetime(pki: Hierarchy, ca_file: Path) -> None:
    checks = await check(pki, leaf(pki, 16), ca_file, "--warn-days", "21")
    assert checks["not_expired"] == "warning"

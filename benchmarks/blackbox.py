"""The same sweep through Debian's prometheus-blackbox-exporter, for comparison.

The module is blackbox_exporter's documented `smtp_starttls` example (example.yml in its
repository) with two changes Postfix needs: the post-TLS EHLO expects the last `250 ` line
(the example expects `250-AUTH`, which Postfix offers only with SASL configured) and `tls_config`
verifies the chain against the fleet's CA with the fleet's server name, the closest blackbox
comes to tlsprobe's chain evaluation. The exporter listens on 127.0.0.1; an aiohttp client in
the harness sends `/probe` requests with C workers, worker i always asking for address i. Only
the exporter process's CPU is counted (utime + stime from /proc/PID/stat), not the client's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import supervise
from benchmarks.fleet import Fleet, free_port
from benchmarks.sweep import run_workers

_REPO = Path(__file__).resolve().parent.parent
BINARY = "prometheus-blackbox-exporter"
MODULE = "smtp_starttls"


def blackbox_unavailable() -> str | None:
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not installed (apt-get install {BINARY})"
    return None


def module_config(fleet: Fleet) -> str:
    return f"""modules:
  {MODULE}:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      query_response:
        - expect: "^220 ([^ ]+) ESMTP (.+)$"
        - send: "EHLO prober\\r"
        - expect: "^250-STARTTLS"
        - send: "STARTTLS\\r"
        - expect: "^220"
        - starttls: true
        - send: "EHLO prober\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
      tls_config:
        ca_file: {fleet.ca_file}
        server_name: {fleet.name}
"""


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Blackbox:
    """Context manager: a blackbox_exporter on a free loopback port; yields its base URL."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._dir = Path(tempfile.mkdtemp(prefix="tlsprobe-bench-blackbox-"))
        self._supervisor: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.url = ""

    def __enter__(self) -> Blackbox:
        config = self._dir / "blackbox.yml"
        config.write_text(module_config(self._fleet))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            BINARY,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ]
        self._supervisor, self.pid = supervise.start(
            command, log=str(self._dir / "blackbox.log"), cwd=str(_REPO)
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._supervisor is not None
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/healthy", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self._supervisor.poll() is not None or time.monotonic() > deadline:
                log = (self._dir / "blackbox.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{BINARY} did not start:\n{log}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._supervisor is not None:
            supervise.stop(self._supervisor)
        shutil.rmtree(self._dir, ignore_errors=True)


async def sweep_blackbox(
    box: Blackbox, fleet: Fleet, probes: int, concurrency: int
) -> dict[str, Any]:
    pid = box.pid
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def probe(worker: int) -> bool:
            target = f"{fleet.addresses[worker]}:{fleet.port}"
            params = {"module": MODULE, "target": target}
            async with session.get(f"{box.url}/probe", params=params) as response:
                body = await response.read()
            return b"\nprobe_success 1\n" in body

        return await run_workers(
            probe,
            probes,
            concurrency,
            cpu=lambda: process_cpu_seconds(pid),
            fleet_pid=fleet.master_pid,
        )


def run(fleet: Fleet, probes: int, concurrency: int) -> dict[str, Any]:
    with Blackbox(fleet) as box:
        return asyncio.run(sweep_blackbox(box, fleet, probes, concurrency))

"""`tlsprobe check` as a whole process, as Nagios, Icinga and Checkmk run it, beside other checks.

A monitoring system starts the check once per service and interval, so its cost is the whole
process: interpreter start-up and imports, the probe, the report. Each command below runs
against the same STARTTLS server, interleaved (round 1: each once, round 2: each once, ...),
and its CPU time (user + system, its waited-for children included: check_ssl_cert is a shell
script that starts openssl and more) is read from `os.wait4`; the median over the runs is
reported, with min and max.

- `tlsprobe`: `python -m tlsprobe check HOST:PORT --address A --ca-file CA`, bytecode cached
  (one run before the timed ones writes it, whatever PYTHONDONTWRITEBYTECODE says).
- `check_ssl_cert`: the Nagios plugin (Debian's monitoring-plugins-contrib), when installed:
  `-H A -p PORT -P smtp -r CA -n HOST --ignore-sct` (SCTs are for public CAs).
- `s_client`: `openssl s_client -starttls smtp` with the same CA, no more than the handshake:
  the floor of a process that makes this exchange at all.
- `imports`: `python -c "import asyncio, OpenSSL.SSL, cryptography.x509.verification"`, the
  interpreter and the libraries a check of this design cannot do without, and nothing else.

    python3 -m benchmarks.checkproc --address 127.0.0.1 --port 10025 \\
        --ca-file /var/lib/tlsprobe-test/postfix/ca.pem --host mail.tlsprobe.test --runs 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHECK_SSL_CERT = Path("/usr/lib/nagios/plugins/check_ssl_cert")
FLOOR_IMPORTS = "import asyncio, OpenSSL.SSL, cryptography.x509.verification"


def commands(address: str, port: int, ca_file: str, host: str) -> dict[str, list[str]]:
    """What is measured, by name; check_ssl_cert only where installed."""
    out = {
        "tlsprobe": [
            sys.executable,
            "-m",
            "tlsprobe",
            "check",
            f"{host}:{port}",
            "--address",
            address,
            "--ca-file",
            ca_file,
        ],
        "s_client": [
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            f"{address}:{port}",
            "-servername",
            host,
            "-CAfile",
            ca_file,
            "-verify_return_error",
        ],
        "imports": [sys.executable, "-c", FLOOR_IMPORTS],
    }
    if CHECK_SSL_CERT.is_file() and shutil.which("host"):
        out["check_ssl_cert"] = [
            str(CHECK_SSL_CERT),
            *("-H", address, "-p", str(port), "-P", "smtp", "-r", ca_file, "-n", host),
            "--ignore-sct",
        ]
    return out


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def cpu_of(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(CPU seconds of the process and its waited-for children, exit status)."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    ) as process:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, process.returncode


def measure(address: str, port: int, ca_file: str, host: str, runs: int) -> dict[str, Any]:
    named = commands(address, port, ca_file, host)
    env = _environment()
    for command in named.values():  # warm: bytecode written, files in the page cache
        cpu_of(command, env)
    samples: dict[str, list[float]] = {name: [] for name in named}
    statuses: dict[str, set[int]] = {name: set() for name in named}
    for _ in range(runs):
        for name, command in named.items():
            cpu, status = cpu_of(command, env)
            samples[name].append(cpu)
            statuses[name].add(status)
    result: dict[str, Any] = {
        name: {
            "cpu_ms": statistics.median(values) * 1e3,
            "min_ms": min(values) * 1e3,
            "max_ms": max(values) * 1e3,
            "runs": len(values),
            "exit_codes": sorted(statuses[name]),
        }
        for name, values in samples.items()
    }
    if "check_ssl_cert" not in result:
        result["check_ssl_cert"] = {
            "skipped": "not installed (apt-get install monitoring-plugins-contrib bind9-host)"
        }
    reference = "check_ssl_cert" if "cpu_ms" in result["check_ssl_cert"] else "s_client"
    result["reference"] = reference
    result["ratio"] = result["tlsprobe"]["cpu_ms"] / result[reference]["cpu_ms"]
    result["ratio_vs_s_client"] = result["tlsprobe"]["cpu_ms"] / result["s_client"]["cpu_ms"]
    result["imports_share"] = result["imports"]["cpu_ms"] / result["tlsprobe"]["cpu_ms"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--host", required=True, help="the name in the server's certificate")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.address, args.port, args.ca_file, args.host, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

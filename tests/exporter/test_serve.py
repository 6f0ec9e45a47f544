"""`tlsprobe serve`, `validate-config`, `history` and `demo` as a user runs them: subprocesses.

The exporter runs as `python -m tlsprobe serve --config FILE` against loopback SMTP servers
started by the test, and is driven by signals: SIGTERM must end it with exit code 0 within
two seconds even while a probe waits on a silent server with a long timeout, and the
certificate history it leaves behind must carry a changed certificate across the restart.
SIGHUP with a broken file must keep it serving. Start-up failures (bad config, unusable state
directory, port in use) must exit 2 with one clear line. `tlsprobe demo` must print its URLs
and expose every scenario with the status it stands for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.expected import PROCESS_SERIES
from tests.support.exporter import DEMO_STATUS, ROOT, ServeProcess, command, fetch_once
from tests.support.exporter import serving as serving_at
from tests.support.pki import Hierarchy, Issued
from tests.support.servers import Behaviour, ServerTls, SmtpTestServer, unused_port
from tests.support.wait import WAIT, eventually

HOST = "mail.contoso.test"
STOP_WITHIN = 2.5
"""SIGTERM to exit: the 2 s cancellation bound plus process teardown."""


# --- running the command -------------------------------------------------------------------


async def run(*args: str) -> tuple[int, str, str]:
    """Run a short tlsprobe command to completion: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *command(*args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=WAIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def serving(config: Path, port: int) -> contextlib.AbstractAsyncContextManager[ServeProcess]:
    return serving_at(config, f"http://127.0.0.1:{port}")


def samples(text: str, name: str, target: str | None = None) -> list[Sample]:
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and target in (None, s.labels.get("target"))
    ]


def metric(text: str, name: str, **labels: str) -> list[float]:
    """Values of every sample of `name` whose labels include `labels`."""
    return [s.value for s in samples(text, name) if labels.items() <= s.labels.items()]


async def metrics(running: ServeProcess) -> str:
    status, text = await fetch_once(f"{running.url}/metrics")
    assert status == 200
    return text


# --- configuration -------------------------------------------------------------------------


def write_config(
    path: Path, port: int, targets: list[dict[str, Any]], ca_file: Path, **top: Any
) -> Path:
    data = {
        "state_dir": "state",
        "web": {"listen": f"127.0.0.1:{port}"},
        "defaults": {
            "interval": "1s",
            "timeout": "800ms",
            "retries": 0,
            "ca_file": str(ca_file),
            "ehlo_name": "probe.test",
        },
        "tenants": {
            "contoso": {
                "accepted_domains": ["contoso.test"],
                "certificate_domain": "*.contoso.test",
                "targets": targets,
            }
        },
        **top,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def target(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": HOST, "address": "127.0.0.1", "port": port, **extra}


def server_tls(pki: Hierarchy, leaf: Issued) -> ServerTls:
    return ServerTls(pki.chain(leaf), leaf.key)


def open_connections(server: SmtpTestServer) -> int:
    return len(server._tasks)


# --- serve: drift across a restart, prompt SIGTERM, SIGHUP -----------------------------------


@pytest.mark.slow
async def test_drift_survives_a_restart_and_sigterm_is_prompt(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    first, second = pki.leaf([HOST]), pki.leaf([HOST])
    port = unused_port()
    async with (
        SmtpTestServer(server_tls(pki, first)) as relay,
        SmtpTestServer(
            server_tls(pki, first), behaviour=Behaviour.SILENT, host="127.0.0.2"
        ) as silent,
    ):
        # The silent server's probe waits out a 20 s timeout, so it is in flight at SIGTERM.
        # It has an address of its own: the exporter keeps one connection per address, and
        # the relay's probe must not queue behind it.
        targets = [
            target("relay", relay.port),
            target("silent", silent.port, interval="21s", timeout="20s", address="127.0.0.2"),
        ]
        config = write_config(tmp_path / "tlsprobe.yml", port, targets, ca_file)
        labels = {"target": "relay", "port": str(relay.port)}

        async with serving(config, port) as exporter:

            async def shows(leaf: Issued) -> bool:
                text = await metrics(exporter)
                return metric(
                    text, "tlsprobe_cert_info", fingerprint_sha256=leaf.sha256, **labels
                ) == [1]

            await eventually(lambda: shows(first), "the first certificate in /metrics")
            await eventually(lambda: open_connections(silent) > 0, "a probe of the silent server")
            # A /probe request waits on the same silent server: shutdown must not wait for it.
            adhoc = asyncio.create_task(fetch_once(f"{exporter.url}/probe?target=silent"))
            await asyncio.sleep(0.3)
            code, took = await exporter.stop(signal.SIGTERM)
            with contextlib.suppress(aiohttp.ClientError):
                await adhoc
        assert code == 0, exporter.log_text()
        assert took < STOP_WITHIN, f"SIGTERM took {took:.2f} s with a probe in flight"
        assert "tlsprobe stopped" in exporter.log_text()
        # Closed cleanly: the write-ahead log was checkpointed into the database and removed.
        wal = tmp_path / "state" / "history.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0

        swapped = time.time()
        relay.present(server_tls(pki, second))
        async with serving(config, port) as exporter:
            await eventually(lambda: shows(second), "the second certificate in /metrics")
            text = await metrics(exporter)
            code, _ = await exporter.stop(signal.SIGTERM)
        assert code == 0

    assert metric(text, "tlsprobe_cert_changes_total", **labels) == [1]
    [since] = metric(text, "tlsprobe_cert_last_change_timestamp_seconds", **labels)
    assert since >= swapped
    code, out, err = await run("history", HOST, "--config", str(config))
    assert code == 0, err
    assert first.sha256[:16] in out and second.sha256[:16] in out
    current = [line for line in out.splitlines() if "(current)" in line]
    assert len(current) == 1 and second.sha256[:16] in current[0], out


@pytest.mark.slow
async def test_a_restart_serves_the_last_results_at_once(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    """A restarted exporter shows every endpoint before its first probe, with its true age.

    Between the runs the server turns silent and the second run probes it only after up to
    10 s and then waits 30 s for it, so what /metrics shows right after start is the restored
    result of the first run, not a new one.
    """
    leaf = pki.leaf([HOST])
    port = unused_port()
    async with SmtpTestServer(server_tls(pki, leaf)) as relay:
        labels = {"target": "relay", "port": str(relay.port)}
        config = write_config(
            tmp_path / "tlsprobe.yml", port, [target("relay", relay.port)], ca_file
        )
        async with serving(config, port) as exporter:

            async def probed() -> bool:
                return bool(metric(await metrics(exporter), "tlsprobe_cert_info", **labels))

            await eventually(probed, "a first result")
            [first_taken] = metric(
                await metrics(exporter), "tlsprobe_last_probe_timestamp_seconds", **labels
            )
            stopped = time.time()
            code, _ = await exporter.stop(signal.SIGTERM)
        assert code == 0, exporter.log_text()

        relay.behaviour = Behaviour.SILENT
        slow = target("relay", relay.port, interval="1h", timeout="30s")
        write_config(tmp_path / "tlsprobe.yml", port, [slow], ca_file)
        async with serving(config, port) as exporter:
            text = await metrics(exporter)
            code, _ = await exporter.stop(signal.SIGTERM)
        assert code == 0, exporter.log_text()
    assert metric(text, "tlsprobe_cert_info", fingerprint_sha256=leaf.sha256, **labels) == [1]
    assert metric(text, "tlsprobe_status", **labels) == [0]
    [taken] = metric(text, "tlsprobe_last_probe_timestamp_seconds", **labels)
    assert first_taken <= taken <= stopped
    assert metric(text, "tlsprobe_probe_interval_seconds", **labels) == [3600]
    assert "last results restored" in exporter.log_text()


@pytest.mark.slow
async def test_sighup_with_a_broken_config_keeps_serving(
    tmp_path: Path, pki: Hierarchy, ca_file: Path
) -> None:
    leaf = pki.leaf([HOST])
    port = unused_port()
    async with SmtpTestServer(server_tls(pki, leaf)) as relay:
        config = write_config(
            tmp_path / "tlsprobe.yml", port, [target("relay", relay.port)], ca_file
        )
        async with serving(config, port) as exporter:

            async def last_probe() -> float:
                text = await metrics(exporter)
                return max(metric(text, "tlsprobe_last_probe_timestamp_seconds"), default=0.0)

            async def reload_failed() -> bool:
                text = await metrics(exporter)
                return metric(text, "tlsprobe_config_last_reload_successful") == [0]

            await eventually(last_probe, "a first result")
            config.write_text("tenants: [this is not\n")
            exporter.process.send_signal(signal.SIGHUP)
            await eventually(reload_failed, "config_last_reload_successful 0")
            before = await last_probe()
            await eventually(
                lambda: _later(last_probe(), before), "a probe under the old configuration"
            )
            text = await metrics(exporter)
            assert metric(text, "tlsprobe_status", target="relay") == [0]
            assert metric(text, "tlsprobe_targets_configured") == [1]
            code, _ = await exporter.stop(signal.SIGTERM)
        assert code == 0
    log = exporter.log_text()
    assert 'msg="config reload failed"' in log
    assert "tlsprobe.yml" in log


async def _later(value: Awaitable[float], than: float) -> bool:
    return await value > than


# --- validate-config and start-up failures -------------------------------------------------


async def test_validate_config(tmp_path: Path, ca_file: Path) -> None:
    good = write_config(tmp_path / "good.yml", 9825, [target("relay", 25)], ca_file)
    code, out, err = await run("validate-config", str(good))
    assert (code, err) == (0, "")
    assert out.startswith(f"{good}: OK")

    bad = write_config(tmp_path / "bad.yml", 9825, [target("relay", 70000)], ca_file)
    code, out, err = await run("validate-config", str(bad))
    assert code == 2
    assert out == ""
    assert err.strip() == f"{bad}: tenants.contoso.targets[0].port: must be 1-65535"

    missing = tmp_path / "missing.yml"
    code, _, err = await run("validate-config", str(missing))
    assert code == 2
    assert str(missing) in err


def single_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


async def test_serve_refuses_an_invalid_config(tmp_path: Path, ca_file: Path) -> None:
    config = write_config(tmp_path / "tlsprobe.yml", unused_port(), [target("relay", 0)], ca_file)
    code, out, err = await run("serve", "--config", str(config))
    assert code == 2
    assert out == ""
    line = single_line(err)
    assert line.startswith(f"tlsprobe serve: {config}: tenants.contoso.targets[0].port:")


@pytest.mark.parametrize("state_dir", ["blocker", "blocker/state"])
async def test_serve_refuses_an_unusable_state_dir(
    tmp_path: Path, ca_file: Path, state_dir: str
) -> None:
    (tmp_path / "blocker").write_text("a regular file where a directory should be\n")
    config = write_config(
        tmp_path / "tlsprobe.yml",
        unused_port(),
        [target("relay", 25)],
        ca_file,
        state_dir=state_dir,
    )
    code, _, err = await run("serve", "--config", str(config))
    assert code == 2
    line = single_line(err)
    assert line.startswith("tlsprobe serve: ")
    assert "blocker" in line


async def test_serve_refuses_a_port_in_use(tmp_path: Path, ca_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "tlsprobe.yml", port, [target("relay", 25)], ca_file)
        code, _, err = await run("serve", "--config", str(config))
    assert code == 2
    assert f"web.listen 127.0.0.1:{port}" in single_line(err)
    assert not (tmp_path / "state" / "history.sqlite3-wal").exists()


# --- demo ----------------------------------------------------------------------------------


def demo_leftovers(directory: Path) -> list[Path]:
    return list(directory.glob("tlsprobe-demo-*"))


async def test_demo_prints_its_urls_and_shows_every_scenario(tmp_path: Path) -> None:
    port = unused_port()
    process = await asyncio.create_subprocess_exec(
        *command("demo", "--listen", f"127.0.0.1:{port}", "--interval", "2s"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        printed = await asyncio.wait_for(process.stdout.readuntil(b"Ctrl-C"), timeout=WAIT)
        url = f"http://127.0.0.1:{port}"
        assert f"status page  {url}/\n".encode() in printed
        assert f"metrics      {url}/metrics\n".encode() in printed

        text = ""

        async def all_probed() -> bool:
            nonlocal text
            text = (await fetch_once(f"{url}/metrics"))[1]
            return len(metric(text, "tlsprobe_status")) == len(DEMO_STATUS)

        await eventually(all_probed, "a result for every demo scenario")
        statuses = {name: metric(text, "tlsprobe_status", target=name) for name in DEMO_STATUS}
        assert statuses == {name: [value] for name, value in DEMO_STATUS.items()}
        reasons = {
            name: {s.labels["reason"] for s in samples(text, "tlsprobe_chain_untrusted_info", name)}
            for name in ("missing-intermediate", "untrusted", "healthy")
        }
        assert reasons == {
            "missing-intermediate": {"intermediate_missing"},
            "untrusted": {"unknown_root"},
            "healthy": set(),
        }
        assert metric(text, "tlsprobe_o365_ready", target="healthy") == [1]
        await _process_series_and_openmetrics(url, text)

        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), timeout=WAIT)
        assert code == 0
        assert demo_leftovers(tmp_path) == [], "the demo's keys outlive it"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _process_series_and_openmetrics(url: str, text: str) -> None:
    """The exporter's own registry on /metrics (process and GC series), and OpenMetrics for
    /metrics and /probe when the Accept header asks for it."""
    for name in PROCESS_SERIES:
        values = metric(text, name)
        assert len(values) == 1 and values[0] > 0, name
    assert metric(text, "python_gc_collections_total")
    assert metric(text, "python_gc_objects_collected_total")
    assert samples(text, "python_info")
    accept = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for path in ("/metrics", "/probe?target=healthy"):
            async with http.get(url + path, headers=accept) as reply:
                assert reply.status == 200, path
                assert reply.headers["Content-Type"].startswith(
                    "application/openmetrics-text; version=1.0.0"
                ), path
                body = await reply.text()
            assert body.endswith("# EOF\n"), path
            parsed = openmetrics_families(body)  # type: ignore[no-untyped-call]
            families = {f.name: f for f in parsed}
            assert families["tlsprobe_status"].samples, path
            if path == "/metrics":
                assert families["tlsprobe_probes"].type == "counter"
                assert families["process_cpu_seconds"].samples
            async with http.get(url + path) as reply:
                assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                assert "# EOF" not in await reply.text()

"""One prober's sweep, run in its own process so its CPU time is its own.

`python3 -m benchmarks.sweep tlsprobe|bare|lean --port P --addresses A,B,... --ca-file F
--probes N --concurrency C` prints one JSON object: probes, ok, wall_s, cpu_s.

Both probers run C workers; worker i owns address i, so no two connections to one address are
ever open at once (tlsprobe's politeness rule) and the global concurrency is exactly C.

- `tlsprobe` drives the scheduler's own cycle, `Scheduler.run_cycle(target)`, for a target per
  address: the path a running exporter takes, minus the sleep between cycles. That is
  `jobs()` (no DNS: each target names its address), `run_job()`, tenacity retries, the global
  semaphore and per-address lock, `probe_endpoint()` (transport, SMTP dialogue, chain capture,
  `judge()` with full evaluation against the fleet's CA and an Office 365 policy), then
  `publish()`: the SQLite drift history, `LatestResults` and the outcome log.
- `bare` is the floor: connect, read the greeting, EHLO, STARTTLS, TLS handshake without
  verification, QUIT, close. Nothing is parsed beyond reply codes, nothing is judged or stored.
  asyncio streams and `start_tls` with the `ssl` module: the plain asyncio way.
- `lean` is tlsprobe's own technique without tlsprobe: its socket driver (`sockconn`, pyOpenSSL)
  and TLS context, the same exchange as tlsprobe (EHLO again after TLS, QUIT, close),
  nothing parsed beyond reply codes. tlsprobe minus lean is tlsprobe's own overhead.

CPU is `time.process_time()` around the sweep (user + system of this process, all threads), after
one warm-up probe per worker, so imports and trust-store loading are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from OpenSSL import SSL

from benchmarks.fleet import FLEET_NAME, fleet_cpu_seconds
from tlsprobe.exporter import eventloop
from tlsprobe.exporter.config import parse_config
from tlsprobe.exporter.eventloop import EventLoop
from tlsprobe.exporter.history.store import HistoryStore, history_path
from tlsprobe.exporter.results import LatestResults
from tlsprobe.exporter.scheduler import Scheduler
from tlsprobe.probe.transport.sockconn import SockConn
from tlsprobe.probe.transport.starttls import client_context

ProbeOnce = Callable[[int], Awaitable[bool]]
T = TypeVar("T")


async def run_workers(
    probe: ProbeOnce,
    probes: int,
    concurrency: int,
    cpu: Callable[[], float] = time.process_time,
    fleet_pid: int = 0,
) -> dict[str, Any]:
    """`probe(worker)` `probes` times over `concurrency` workers; wall and CPU of the sweep.

    `cpu` reads the prober's CPU seconds: this process by default. With `fleet_pid` (the Postfix
    master) the fleet's CPU seconds over the same span are reported too.
    """
    await asyncio.gather(*(probe(i) for i in range(concurrency)))  # warm-up, not counted
    shares = [probes // concurrency + (i < probes % concurrency) for i in range(concurrency)]
    ok = 0

    async def worker(index: int) -> None:
        nonlocal ok
        for _ in range(shares[index]):
            succeeded = await probe(index)
            ok += succeeded

    _callgrind("on")
    fleet0 = fleet_cpu_seconds(fleet_pid) if fleet_pid else 0.0
    times0, cpu0, wall0 = os.times(), cpu(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall, used, times = time.perf_counter() - wall0, cpu() - cpu0, os.times()
    fleet = fleet_cpu_seconds(fleet_pid) - fleet0 if fleet_pid else None
    _callgrind("off")
    result = {"probes": probes, "ok": ok, "wall_s": wall, "cpu_s": used, "fleet_cpu_s": fleet}
    if cpu is time.process_time:  # this process: user and system time apart, for profiling
        result |= {"user_s": times.user - times0.user, "system_s": times.system - times0.system}
    return result


def _callgrind(state: str) -> None:
    """Under `valgrind --tool=callgrind --instr-atstart=no` with TLSPROBE_BENCH_CALLGRIND=1,
    count instructions of the sweep alone: a load-independent figure for profiling."""
    if os.environ.get("TLSPROBE_BENCH_CALLGRIND") == "1":
        command = ["callgrind_control", "--instr", state, str(os.getpid())]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


# --- tlsprobe ------------------------------------------------------------------------------


def fleet_config(
    addresses: Sequence[str],
    port: int,
    ca_file: str,
    state_dir: str,
    concurrency: int,
    listen: str = "127.0.0.1:9825",
) -> Any:
    """A tlsprobe Config with one target per fleet address, judged as an O365 connector."""
    data = {
        "state_dir": state_dir,
        "web": {"listen": listen},
        "defaults": {
            "concurrency": concurrency,
            "ca_file": ca_file,
            "timeout": "10s",
            "interval": "1h",
        },
        "tenants": {
            "bench": {
                "accepted_domains": [FLEET_NAME],
                "certificate_domain": FLEET_NAME,
                "targets": [
                    {"name": f"node{i}", "host": FLEET_NAME, "address": a, "port": port}
                    for i, a in enumerate(addresses)
                ],
            }
        },
    }
    return parse_config(data, base_dir=Path(state_dir))


def tlsprobe_prober(scheduler: Any, targets: Sequence[Any]) -> ProbeOnce:
    async def probe(worker: int) -> bool:
        states = await scheduler.run_cycle(targets[worker])
        return all(s.result.success and s.result.status == 0 for s in states)

    return probe


async def sweep_tlsprobe(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tlsprobe-bench-") as state_dir:
        config = fleet_config(args.addresses, args.port, args.ca_file, state_dir, args.concurrency)
        history = HistoryStore(history_path(Path(state_dir)))
        scheduler = Scheduler(config, results=LatestResults(), history=history)
        try:
            return await run_workers(
                tlsprobe_prober(scheduler, config.targets),
                args.probes,
                args.concurrency,
                fleet_pid=args.fleet_pid,
            )
        finally:
            history.close()


# --- bare ----------------------------------------------------------------------------------


def bare_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """Read one (possibly multi-line) reply; returns its last line."""
    while True:
        line = await reader.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def bare_handshake(address: str, port: int, ctx: ssl.SSLContext) -> bool:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        ok = (await _reply(reader)).startswith(b"220")
        writer.write(b"EHLO bench.test\r\n")
        ok = ok and (await _reply(reader)).startswith(b"250")
        writer.write(b"STARTTLS\r\n")
        ok = ok and (await _reply(reader)).startswith(b"220")
        await writer.start_tls(ctx, server_hostname=FLEET_NAME)
        writer.write(b"QUIT\r\n")
        return ok
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def sweep_bare(args: argparse.Namespace) -> dict[str, Any]:
    ctx = bare_context()

    async def probe(worker: int) -> bool:
        return await bare_handshake(args.addresses[worker], args.port, ctx)

    return await run_workers(probe, args.probes, args.concurrency, fleet_pid=args.fleet_pid)


# --- lean ----------------------------------------------------------------------------------


async def _lean_reply(conn: SockConn) -> bytes:
    """Read one (possibly multi-line) reply; returns its last line."""
    data = b""
    while True:
        chunk = await conn.recv()
        if not chunk:
            return b""
        data += chunk
        if data.endswith(b"\r\n"):
            last = data[data.rfind(b"\n", 0, -2) + 1 :]
            if last[3:4] != b"-":
                return last


async def lean_handshake(address: str, port: int, ctx: SSL.Context) -> bool:
    """tlsprobe's exchange on tlsprobe's own technique (`sockconn`, pyOpenSSL, tlsprobe's TLS
    context), nothing parsed beyond reply codes: greeting, EHLO, STARTTLS, handshake, EHLO,
    QUIT, close."""
    conn = await SockConn.connect(address, port)
    try:
        ok = (await _lean_reply(conn)).startswith(b"220")
        for command, code in ((b"EHLO bench.test\r\n", b"250"), (b"STARTTLS\r\n", b"220")):
            await conn.send(command)
            ok = ok and (await _lean_reply(conn)).startswith(code)
        await conn.start_tls(ctx, FLEET_NAME)
        await conn.send(b"EHLO bench.test\r\n")
        ok = ok and (await _lean_reply(conn)).startswith(b"250")
        await conn.send(b"QUIT\r\n")  # and close, as tlsprobe does
        return ok
    finally:
        conn.close()


async def sweep_lean(args: argparse.Namespace) -> dict[str, Any]:
    ctx = client_context()

    async def probe(worker: int) -> bool:
        return await lean_handshake(args.addresses[worker], args.port, ctx)

    return await run_workers(probe, args.probes, args.concurrency, fleet_pid=args.fleet_pid)


SWEEPS = {"tlsprobe": sweep_tlsprobe, "bare": sweep_bare, "lean": sweep_lean}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prober", choices=sorted(SWEEPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--addresses", type=lambda s: s.split(","), required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--probes", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--fleet-pid", type=int, default=0, help="Postfix master, for its CPU")
    parser.add_argument("--loop", choices=[e.value for e in EventLoop], default="asyncio")
    parser.add_argument("--profile", help="write a cProfile of the sweep to this file")
    args = parser.parse_args(argv)
    if len(args.addresses) < args.concurrency:
        parser.error("need one address per concurrent probe")
    sweep = SWEEPS[args.prober]
    if args.profile:
        with cProfile.Profile() as profile:
            result = run_on(args.loop, sweep(args))
        profile.dump_stats(args.profile)
    else:
        result = run_on(args.loop, sweep(args))
    print(json.dumps(result | {"loop": args.loop}))
    return 0


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on asyncio's default loop or on uvloop (which must be installed)."""
    factory = eventloop.loop_factory() if loop == EventLoop.UVLOOP else None
    if loop == EventLoop.UVLOOP and factory is None:
        raise SystemExit("--loop uvloop: uvloop is not installed (pip install tlsprobe[uvloop])")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def available_loop() -> str:
    """The loop tlsprobe serve would use here: uvloop when installed."""
    return EventLoop.UVLOOP if eventloop.loop_factory() else EventLoop.ASYNCIO


if __name__ == "__main__":
    raise SystemExit(main())

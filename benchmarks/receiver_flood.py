"""Probes beside a flooded receiver: probe latency on the loop the receiver shares, quiet and
while 20 connections pipe NOOPs at the receiver, in one run (the flood's figures as ratios of
the quiet ones, so the machine's load cancels out).

    python3 -m benchmarks.receiver_flood [--seconds 4] [--json FILE]

The probed server (a loopback SMTP test server) runs on its own thread and loop; the flooders
run in a child process (`--flood PORT SECONDS`), so the loop under test runs only the probes
and the receiver, as in `tlsprobe serve`. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.pki import make_hierarchy
from tests.support.servers import ServerTls, SmtpTestServer
from tlsprobe.model import Endpoint, Policy
from tlsprobe.probe.prober import probe_endpoint
from tlsprobe.probe.send import receiver
from tlsprobe.probe.x509.evaluate import TrustStore

FLOODERS = 20
HOST = "mx.bench.test"


def flood(port: int, seconds: float) -> None:
    """FLOODERS connections, each piping NOOPs as fast as the receiver reads them (and
    reconnecting when it closes them), for `seconds`."""
    end = time.monotonic() + seconds

    def one() -> None:
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.recv(4096)
                    sock.sendall(b"EHLO flood.test\r\n")
                    while time.monotonic() < end:
                        sock.sendall(b"NOOP\r\n" * 200)
                        if not sock.recv(65536):
                            break
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=one) for _ in range(FLOODERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _server_thread(tls: ServerTls) -> int:
    ready = threading.Event()
    port: list[int] = []

    async def serve() -> None:
        async with SmtpTestServer(tls) as server:
            port.append(server.port)
            ready.set()
            await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait()
    return port[0]


async def _probes(endpoint: Endpoint, trust: TrustStore, seconds: float) -> list[float]:
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        result = await probe_endpoint(endpoint, Policy(), trust, timeout=10)
        times.append(time.perf_counter() - started)
        if result.error is not None:
            raise RuntimeError(f"probe failed: {result.error.message}")
        await asyncio.sleep(0.05)
    return times


def _figures(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "probes": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def measure(seconds: float) -> dict[str, Any]:
    pki = make_hierarchy("Receiver Flood Bench")
    leaf = pki.leaf((HOST,))
    port = _server_thread(ServerTls(pki.chain(leaf), leaf.key))
    trust = TrustStore.from_pem(pki.ca_pem, source="bench root")
    endpoint = Endpoint(HOST, port, address="127.0.0.1")
    listener = receiver.Receiver(
        context=receiver.tls_context(),
        hostname="receiver.bench.test",
        accept_recipient=lambda _peer, _rcpt: False,
        on_session=lambda _session: None,
        # The per-peer rate would refuse the flooders' reconnections: the flood is the test.
        limits=receiver.ReceiverLimits(per_peer_per_minute=1_000_000),
    )
    _, receiver_port = await listener.start("127.0.0.1", 0)
    try:
        quiet = await _probes(endpoint, trust, seconds)
        module = "benchmarks.receiver_flood"
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "--flood", str(receiver_port), str(seconds + 1.5)
        )
        try:
            await asyncio.sleep(1.0)
            loud = await _probes(endpoint, trust, seconds)
        finally:
            await asyncio.wait_for(flooder.wait(), seconds + 30)
    finally:
        await listener.close()
    figures = {"quiet": _figures(quiet), "flood": _figures(loud)}
    figures["ratios"] = {
        "median": figures["flood"]["median_ms"] / figures["quiet"]["median_ms"],
        "max": figures["flood"]["max_ms"] / figures["quiet"]["max_ms"],
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="probing time per phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--flood", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood:
        flood(int(args.flood[0]), float(args.flood[1]))
        return 0
    figures = asyncio.run(measure(args.seconds))
    for phase in ("quiet", "flood"):
        f = figures[phase]
        print(
            f"{phase}: {f['probes']} probes, median {f['median_ms']:.1f} ms, "
            f"max {f['max_ms']:.1f} ms"
        )
    ratios = figures["ratios"]
    print(f"flood / quiet: median {ratios['median']:.2f}, max {ratios['max']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A/B comparison of probers on one fleet, in interleaved rounds of one run.

    python3 benchmarks/ab.py [--rounds R] [--probes N] [--concurrency C] [--key ecdsa|rsa]
                             [--loop asyncio|uvloop] [--json FILE] LABEL=PROBER[@CHECKOUT] ...

CPU seconds per probe move with everything else the machine runs, so two figures taken minutes
apart compare the load as much as the code. Here every variant runs once per round against the
same fleet, in an order that rotates each round, and each round's CPU per probe is divided by
the first variant's in that same round: load that lasts about a round (minutes) cancels out of
the ratio. The report gives each variant's median CPU per probe, the median of its per-round
ratios with their spread (min..max), and the fleet's cores; trust a difference only when the
whole min..max range is on one side of 1.

PROBER is one of `benchmarks.sweep`'s (tlsprobe, bare, lean); CHECKOUT is a directory with the
repository at another revision (`git worktree add /tmp/old main`), so one run compares two
versions of tlsprobe: `new=tlsprobe old=tlsprobe@/tmp/old`. Needs root (Postfix).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python3 benchmarks/ab.py` from anywhere

from benchmarks.fleet import Fleet, PostfixFleet, fleet_unavailable  # noqa: E402
from benchmarks.sweep import available_loop  # noqa: E402


@dataclass(frozen=True)
class Variant:
    label: str
    prober: str
    checkout: Path

    @classmethod
    def parse(cls, text: str) -> Variant:
        label, sep, rest = text.partition("=")
        if not sep or not label or not rest:
            raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PROBER[@CHECKOUT]")
        prober, _, checkout = rest.partition("@")
        path = Path(checkout).resolve() if checkout else REPO
        if not (path / "benchmarks" / "sweep.py").is_file():
            raise argparse.ArgumentTypeError(f"{text!r}: {path} has no benchmarks/sweep.py")
        return cls(label, prober, path)


def run_variant(variant: Variant, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """One sweep in its own process, importing the variant's checkout."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.sweep",
        variant.prober,
        f"--port={fleet.port}",
        f"--addresses={','.join(fleet.addresses)}",
        f"--ca-file={fleet.ca_file}",
        f"--probes={args.probes}",
        f"--concurrency={args.concurrency}",
        f"--fleet-pid={fleet.master_pid}",
        f"--loop={args.loop}",
    ]
    env = os.environ | {"PYTHONPATH": str(variant.checkout)}
    done = subprocess.run(
        command, cwd=variant.checkout, env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_ms_per_probe"] = result["cpu_s"] * 1e3 / result["probes"]
    fleet_cpu = result.get("fleet_cpu_s")
    result["fleet_cores"] = fleet_cpu / result["wall_s"] if fleet_cpu else None
    return result


def compare(variants: Sequence[Variant], fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {v.label: [] for v in variants}
    for index in range(args.rounds):
        shift = index % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            runs[variant.label].append(run_variant(variant, fleet, args))
    reference = variants[0].label
    summary = {}
    for variant in variants:
        mine = runs[variant.label]
        ratios = [
            run["cpu_ms_per_probe"] / ref["cpu_ms_per_probe"]
            for run, ref in zip(mine, runs[reference], strict=True)
        ]
        summary[variant.label] = {
            "prober": variant.prober,
            "checkout": str(variant.checkout),
            "cpu_ms_per_probe": statistics.median(r["cpu_ms_per_probe"] for r in mine),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ok": min(r["ok"] for r in mine),
            "probes": args.probes,
            "rounds": mine,
        }
    return {"reference": reference, "variants": summary}


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"A/B, {args.key} fleet, {args.rounds} interleaved rounds of {args.probes} probes at "
        f"concurrency {args.concurrency}, loop {args.loop}; ratios to {result['reference']}, "
        "round by round",
        "",
        "| variant | prober | CPU ms/probe | ratio (median) | ratio min..max | ok |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, row in result["variants"].items():
        lines.append(
            f"| {label} | {row['prober']} | {row['cpu_ms_per_probe']:.3f} "
            f"| {row['ratio_median']:.3f} | {row['ratio_min']:.3f}..{row['ratio_max']:.3f} "
            f"| {row['ok']}/{row['probes']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", type=Variant.parse, metavar="LABEL=PROBER[@DIR]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--probes", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--key", choices=["ecdsa", "rsa"], default="ecdsa")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=available_loop())
    parser.add_argument("--json", help="write every round here")
    args = parser.parse_args(argv)
    problem = fleet_unavailable()
    if problem:
        print(f"ab: cannot start the Postfix fleet: {problem}", file=sys.stderr)
        return 2
    with PostfixFleet(args.concurrency, key=args.key) as fleet:
        result = compare(args.variants, fleet, args)
    print(render(result, args))
    if args.json:
        Path(args.json).write_text(json.dumps(result | {"settings": vars(args)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

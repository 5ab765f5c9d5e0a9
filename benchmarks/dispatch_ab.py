"""The dispatch benchmark against an older tree, interleaved in one run.

`benchmarks/dispatch.py` measures the hub's round trip and throughput beside a
raw relay floor. Two runs minutes apart on this shared machine differ by more
than most changes do, so this script runs it on two trees in turn, A B A B
..., each round a fresh `dispatch.py --rounds 1` in that tree (its own hub,
node and client processes, its own floor measured in the same round), and
compares the medians of the rounds. Each tree uses its own
`benchmarks/dispatch.py` and its own `hub` (PYTHONPATH), with this venv's
packages.

Make the older tree a worktree, for example:

    git worktree add --detach /tmp/before 3d4a80e
    .venv/bin/python benchmarks/dispatch_ab.py --baseline-tree /tmp/before \\
        [--pairs 3] [--mode local] [--auth] [--json PATH] [-- extra dispatch.py flags]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

FIGURES = (
    ("rtt_p50_us", "RTT p50 us"),
    ("floor_rtt_p50_us", "floor RTT p50 us"),
    ("rtt_p50_ratio", "RTT p50 x floor"),
    ("rtt_p99_us", "RTT p99 us"),
    ("rtt_p99_ratio", "RTT p99 x floor"),
    ("jobs_per_s", "jobs/s"),
    ("floor_jobs_per_s", "floor jobs/s"),
    ("throughput_ratio", "throughput x floor"),
    ("cpu_us_per_job", "hub CPU us/job"),
    ("floor_cpu_us_per_job", "floor CPU us/job"),
    ("peers_cpu_us_per_job", "peers CPU us/job"),
    ("auth.jwt.rtt_p50_us", "jwt RTT p50 us"),
    ("auth.jwt.rtt_p50_ratio", "jwt RTT p50 x plain"),
    ("auth.jwt.jobs_per_s", "jwt jobs/s"),
    ("auth.jwt.throughput_ratio", "jwt jobs/s x plain"),
    ("auth.tls.rtt_p50_us", "tls RTT p50 us"),
    ("auth.tls.jobs_per_s", "tls jobs/s"),
)
"""Figures of dispatch.py's JSON (a dotted key reaches into a section); one a tree's
dispatch.py does not report (an older one, or without `--auth`) is left out."""


def _figure(result: dict[str, Any], key: str) -> float | None:
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def one_round(tree: Path, mode: str, extra: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        proc = subprocess.run(
            [sys.executable, "benchmarks/dispatch.py", "--rounds", "1", "--mode", mode,
             "--json", path, *extra],
            cwd=tree, env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"dispatch.py in {tree} failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(Path(path).read_text())
        return result
    finally:
        Path(path).unlink(missing_ok=True)


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, _ in FIGURES:
        values = [v for r in rounds if (v := _figure(r, key)) is not None]
        if len(values) == len(rounds):
            out[key] = statistics.median(values)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, required=True,
                        help="the older checkout (a worktree)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="this tree (default: here)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs of rounds")
    parser.add_argument("--mode", choices=("local", "cross_instance"), default="local")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("extra", nargs="*", help="more dispatch.py flags (after --)")
    args = parser.parse_args(argv)
    trees = {"baseline": args.baseline_tree.resolve(), "this": args.tree.resolve()}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for pair in range(args.pairs):
        # Alternate which tree goes first, so that neither always meets a warmer box.
        order = list(trees) if pair % 2 == 0 else list(reversed(trees))
        for name in order:
            result = one_round(trees[name], args.mode, args.extra)
            rounds[name].append(result)
            print(f"pair {pair + 1} {name:8s}: RTT p50 {result['rtt_p50_us']:.0f} us "
                  f"({result['rtt_p50_ratio']:.2f}x floor), "
                  f"{result['jobs_per_s']:.0f} jobs/s ({result['throughput_ratio']:.2f}x)",
                  flush=True)
    summary = {name: medians(rs) for name, rs in rounds.items()}
    print()
    print(f"dispatch A/B, {args.mode} mode, medians of {args.pairs} rounds each")
    print(f"{'':22s}{'baseline':>12s}{'this':>12s}{'this/base':>11s}")
    for key, label in FIGURES:
        base, this = summary["baseline"].get(key), summary["this"].get(key)
        if base is None and this is None:
            continue
        row = f"{label:22s}"
        row += f"{base:12.2f}" if base is not None else f"{'-':>12s}"
        row += f"{this:12.2f}" if this is not None else f"{'-':>12s}"
        if base and this is not None:
            row += f"{this / base:11.2f}"
        print(row)
    if args.json:
        out = {
            "mode": args.mode,
            "pairs": args.pairs,
            "trees": {name: str(path) for name, path in trees.items()},
            "extra": args.extra,
            "medians": summary,
            "rounds": rounds,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load": os.getloadavg()},
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Selection speed against an older tree, paired: both run at once, one per core.

`benchmarks/selection.py` compares `select_node` with a naive scan in one
process. Comparing it with an *older version of itself* across two runs is
unreliable on a shared machine: the same code's p50 moved by 30-50 % between
runs minutes apart here. So this script runs the two trees side by side, at
the same moment, each in its own process (two cores: one each), with the same
harness: each tree's own `benchmarks/selection.py` builds the fleet
(`make_fleet`), the requests (`make_requests`) and times them
(`time_selection`: per call, gc off, warm-up first), which are the same code
in every version since the benchmark exists (it checks that the trees produce
the same fleet size and request count). Rounds repeat the pair; medians of
rounds are compared.

Make the older tree a worktree, for example:

    git worktree add --detach /tmp/flat-rings 3d4a80e
    .venv/bin/python benchmarks/selection_ab.py --baseline-tree /tmp/flat-rings \
        [--sizes 1000,10000,100000] [--rounds 3] [--json PATH]

(`3d4a80e` is the last commit with flat rings and the hand-written map, before
issues 9-16.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, sys
sys.path.insert(0, "benchmarks")
import selection as B
try:
    from hub.core.selector import select_node
    from hub.core.snapshot import Snapshot
except ImportError:  # the older flat layout
    from hub.selector import select_node
    from hub.snapshot import Snapshot
size, requests, reps = (int(a) for a in sys.argv[1:4])
states, pools = B.make_fleet(size, 1)
snapshot = Snapshot.of(states)
reqs = B.make_requests(states, pools, requests, 1)
p50s, p99s = [], []
for _ in range(reps):
    samples, _kinds = B.time_selection(select_node, snapshot, reqs, 1)
    p50s.append(B.percentile(samples, 50))
    p99s.append(B.percentile(samples, 99))
print(json.dumps({"nodes": len(states), "requests": len(reqs), "p50_us": p50s, "p99_us": p99s}))
"""


def start(tree: Path, size: int, requests: int, reps: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(size), str(requests), str(reps)],
        cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen[str], tree: Path) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the run in {tree} failed:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, required=True,
                        help="a checkout of the older version (e.g. a git worktree)")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="paired runs per size")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    baseline = args.baseline_tree.resolve()
    if not (baseline / "benchmarks" / "selection.py").exists():
        raise SystemExit(f"{baseline} has no benchmarks/selection.py")
    print(f"# select_node, this tree vs {baseline} (paired: both at once, one per core); "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{args.requests} requests, {args.reps} timed passes a run, {args.rounds} rounds; "
          f"times in microseconds, p50 of a run = median of its passes")
    print(f"{'nodes':>7} {'this p50':>9} {'base p50':>9} {'ratio':>6} "
          f"{'this p99':>9} {'base p99':>9}   rounds (this/base p50)")
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for _ in range(args.rounds):
            procs = (start(ROOT, size, args.requests, args.reps),
                     start(baseline, size, args.requests, args.reps))
            this, base = finish(procs[0], ROOT), finish(procs[1], baseline)
            if (this["nodes"], this["requests"]) != (base["nodes"], base["requests"]):
                raise SystemExit(f"the trees made different workloads: {this} vs {base}")
            pairs.append((this, base))
        this_p50 = statistics.median(statistics.median(t["p50_us"]) for t, _ in pairs)
        base_p50 = statistics.median(statistics.median(b["p50_us"]) for _, b in pairs)
        this_p99 = statistics.median(statistics.median(t["p99_us"]) for t, _ in pairs)
        base_p99 = statistics.median(statistics.median(b["p99_us"]) for _, b in pairs)
        detail = "  ".join(
            f"{statistics.median(t['p50_us']):.2f}/{statistics.median(b['p50_us']):.2f}"
            for t, b in pairs
        )
        print(f"{size:>7} {this_p50:>9.2f} {base_p50:>9.2f} {this_p50 / base_p50:>6.2f} "
              f"{this_p99:>9.2f} {base_p99:>9.2f}   {detail}")
        rows.append({
            "nodes": size, "this_p50_us": this_p50, "baseline_p50_us": base_p50,
            "ratio_p50": this_p50 / base_p50, "this_p99_us": this_p99,
            "baseline_p99_us": base_p99, "rounds": [{"this": t, "baseline": b} for t, b in pairs],
        })
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "baseline_tree": str(baseline), "requests": args.requests, "reps": args.reps,
            "python": platform.python_version(), "sizes": rows,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

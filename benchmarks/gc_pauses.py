"""Full garbage collections while a hub's fleet view grows to 100,000 nodes, with and
without the GC pacer (hub/runtime/gc_pacer.py), in one run.

In-process: a real `Hub` (not serving), the seeded synthetic fleet of
benchmarks/selection.py put into its fleet view one node at a time (what a
registration storm does to the heap: every node's state, capabilities and index
entries survive), while every full (generation 2) collection's duration is
recorded from `gc.callbacks`. Then, with the fleet in place, the pacer's thaw:
one full collection over everything it had frozen. Each variant runs in its own
fresh interpreter (this script re-runs itself with `--variant`), so neither
inherits the other's heap.

Printed (and written with `--json PATH`): per variant, full collections during the
build, their p50 / p99 / max / total ms, the build's seconds, and the thaw's pause.

Usage:
    python benchmarks/gc_pauses.py [--nodes 100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def _variant(paced: bool, nodes: int) -> dict[str, Any]:
    """In a running loop: the fleet view's listeners schedule callbacks."""
    from selection import make_fleet

    from hub.app.hub import Hub
    from hub.core.config import HubConfig
    from hub.runtime.gc_pacer import GcPacer

    hub = Hub(HubConfig(port=0, hub_id="bench", gc_pacing=False))
    pauses: list[float] = []
    started = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1000)

    pacer = GcPacer(thaw_s=3600) if paced else None
    if pacer is not None:
        pacer.start()
    gc.callbacks.append(timed)
    states, _ = make_fleet(nodes, seed=1)
    t0 = time.perf_counter()
    for state in states:
        hub.fleet.put(state)
    build_s = time.perf_counter() - t0
    del states
    during = list(pauses)
    pauses.clear()
    if pacer is not None:
        gc.unfreeze()  # the thaw: what the pacer had frozen is visited again, once
    t1 = time.perf_counter()
    gc.collect()
    thaw_ms = (time.perf_counter() - t1) * 1000
    gc.callbacks.remove(timed)
    return {
        "paced": paced, "nodes": len(hub.fleet.snapshot), "build_s": round(build_s, 2),
        "full_collections": len(during),
        "p50_ms": round(statistics.median(during), 1) if during else 0.0,
        "p99_ms": round(sorted(during)[int(0.99 * (len(during) - 1))], 1) if during else 0.0,
        "max_ms": round(max(during), 1) if during else 0.0,
        "total_ms": round(sum(during), 1),
        "collect_after_ms": round(thaw_ms, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--variant", choices=("paced", "unpaced"), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.variant:
        sys.path.insert(0, str(HERE))
        print(json.dumps(asyncio.run(_variant(args.variant == "paced", args.nodes))))
        return 0
    rows = []
    for variant in ("unpaced", "paced"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--nodes", str(args.nodes)],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"# full collections while a fleet view grows to {args.nodes:,} nodes")
    print(f"{'gc_pacing':>10} {'build s':>8} {'fulls':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'total ms':>9} {'one full after (thaw) ms':>25}")
    for row in rows:
        print(f"{'on' if row['paced'] else 'off':>10} {row['build_s']:>8} "
              f"{row['full_collections']:>6} {row['p50_ms']:>7} {row['p99_ms']:>7} "
              f"{row['max_ms']:>7} {row['total_ms']:>9} {row['collect_after_ms']:>25}")
    if args.json:
        Path(args.json).write_text(json.dumps({"nodes": args.nodes, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

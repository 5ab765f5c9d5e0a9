"""What does one page of `/v1/nodes`, and one `/v1/stats`, cost at fleet size N?

Builds a seeded synthetic fleet (the one of benchmarks/selection.py) into a
real `Hub`'s fleet view (not serving: the HTTP layer is called directly, so
what is timed is the hub's CPU per request, JSON encoding included), then
times pages walked from the start with `limit` 100/250/500 (the largest), a pool filter
and a status filter, and `/v1/stats`. The baseline, measured in the same run:
the unpaged answer `/v1/nodes` gave before paging (every node's view,
sorted, one document). Target: a page <= 5 ms at 100,000 nodes.
Also the console's `/v1/stats?include=pairs,hubs,recent`, and the
fleet's distinct language-pair sets (this synthetic fleet draws pairs per
node: nearly one set per node, the worst case for the per-pair tallies).

Usage:
    python benchmarks/inspection.py [--sizes 10000,100000] [--pages 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from selection import make_fleet, percentile

from hub.app.hub import Hub
from hub.core.config import HubConfig
from hub.net.http import HttpApi


async def _time_walk(api: HttpApi, query: str, pages: int) -> tuple[list[int], int]:
    """Walk up to `pages` pages; per-page ns (sorted) and bytes of the largest."""
    samples: list[int] = []
    after = ""
    biggest = 0
    for _ in range(pages):
        t0 = time.perf_counter_ns()
        answer = await api.respond("/v1/nodes", f"{query}&after={after}")
        samples.append(time.perf_counter_ns() - t0)
        biggest = max(biggest, len(answer.body))
        after = answer.headers.get("X-Next-After", "")
        if not after:
            break
    samples.sort()
    return samples, biggest


async def run_size(size: int, seed: int, pages: int) -> dict[str, Any]:
    states, _ = make_fleet(size, seed)
    hub = Hub(HubConfig(port=0, hub_id="bench"))
    hub.fleet.rebuild(states)
    api = hub.http
    gc.collect()  # the build's garbage: not a page's cost
    row: dict[str, Any] = {"nodes": size}
    for name, query in (
        ("limit100", "limit=100"), ("limit250", "limit=250"), ("limit500", "limit=500"),
        ("pool1_limit500", "limit=500&pool=1"), ("draining_limit500", "limit=500&status=draining"),
    ):
        samples, biggest = await _time_walk(api, query, pages)
        row[name] = {
            "pages": len(samples), "p50_ms": percentile(samples, 50) / 1000,
            "p99_ms": percentile(samples, 99) / 1000, "max_ms": samples[-1] / 1e6,
            "bytes": biggest,
        }
    stats = []
    for _ in range(200):
        t0 = time.perf_counter_ns()
        await api.respond("/v1/stats")
        stats.append(time.perf_counter_ns() - t0)
    stats.sort()
    row["stats_p50_us"] = percentile(stats, 50)
    row["stats_p99_us"] = percentile(stats, 99)
    # The console's request (pairs, hubs and the recent window included).
    console = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        await api.respond("/v1/stats", "include=pairs,hubs,recent")
        console.append(time.perf_counter_ns() - t0)
    console.sort()
    row["console_stats_p50_ms"] = percentile(console, 50) / 1000
    row["console_stats_p99_ms"] = percentile(console, 99) / 1000
    row["pair_sets"] = len(hub.fleet.stats.pair_sets)
    # Baseline: the one-document answer of before (every view, node_id order).
    t0 = time.perf_counter_ns()
    views = [api._node_view(s) for s in sorted(hub.fleet.snapshot, key=lambda s: s.node_id)]
    body = json.dumps(views).encode()
    row["unpaged_ms"] = (time.perf_counter_ns() - t0) / 1e6
    row["unpaged_bytes"] = len(body)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pages", type=int, default=50, help="pages walked per query")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    print("# /v1/nodes pages and /v1/stats, hub CPU per request (JSON included); "
          "baseline: the unpaged document; page times in ms (p50/p99/max)")
    print(f"{'nodes':>7} {'limit=100':>18} {'limit=250':>18} {'limit=500':>18} "
          f"{'pool=1':>18} {'draining':>18} {'stats us':>9} {'unpaged ms':>11} "
          f"{'console stats ms':>17} {'pair sets':>9}")
    rows = []
    for size in sizes:
        row = asyncio.run(run_size(size, args.seed, args.pages))
        rows.append(row)

        def cell(name: str, row: dict[str, Any] = row) -> str:
            r = row[name]
            return f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f}/{r['max_ms']:.2f}"

        print(f"{size:>7} {cell('limit100'):>18} {cell('limit250'):>18} "
              f"{cell('limit500'):>18} {cell('pool1_limit500'):>18} "
              f"{cell('draining_limit500'):>18} {row['stats_p99_us']:>9.1f} "
              f"{row['unpaged_ms']:>11.1f} "
              f"{row['console_stats_p50_ms']:>7.2f}/{row['console_stats_p99_ms']:<9.2f}"
              f"{row['pair_sets']:>9}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": args.seed, "sizes": rows}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

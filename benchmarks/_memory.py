"""The dispatch benchmark's memory per node: a fresh hub's RSS before and after N
idle registered nodes (`--memory`, `--memory-only`)."""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from _procs import Child, ProcGroup, http_get, metric_value, rss_kb
from _topology import TOPOLOGIES


def _gc_and_rss(hub: Child, settle: float) -> int:
    time.sleep(settle)
    hub.signal(signal.SIGUSR1)
    time.sleep(settle)
    return rss_kb(hub.pid)


def run_memory(n: int, args: argparse.Namespace) -> dict[str, Any]:
    per_process = args.memory_per_process
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        env = {"BENCH_HUB_NOFILE": str(n + 4096)}
        if args.trace_memory:
            env["NODEHUB_BENCH_TRACEMALLOC"] = f"{args.trace_memory}.{n}"
        topology = TOPOLOGIES[args.mode](procs, env)
        hub = topology.node_hub
        metrics_url = topology.node_http_url + "/metrics"
        http_get(metrics_url)  # the first scrape builds what later scrapes reuse
        before = _gc_and_rss(hub, 1.0)
        started = time.monotonic()
        fleets = []
        for first in range(0, n, per_process):
            count = min(per_process, n - first)
            fleets.append(procs.spawn(
                f"idle-nodes-{first}", "_nodes.py", "--url", topology.node_url, "--mode",
                "idle", "--count", str(count), "--start", str(first), "--prefix", "idle",
                "--batch", str(args.memory_batch),
            ))
        for fleet in fleets:
            fleet.expect("ready", timeout=900)
        sessions = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sessions = metric_value(
                http_get(metrics_url).decode(), "nodehub_local_node_sessions"
            ) or 0.0
            if sessions >= n:
                break
            time.sleep(0.2)
        if sessions < n:
            raise RuntimeError(f"the hub shows {sessions:.0f} node sessions, not {n}")
        connect_s = time.monotonic() - started
        after = _gc_and_rss(hub, 2.0)
    return {
        "nodes": n,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_node": (after - before) / n,
        "connect_seconds": connect_s,
    }

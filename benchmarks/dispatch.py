"""End-to-end dispatch cost of the hub against a raw relay floor, and memory per node.

Everything runs in separate processes on uvloop: the hub (`hub serve`, via
benchmarks/_hub_proc.py), a fleet of minimal raw-websockets no-op nodes
(benchmarks/_nodes.py, not the agent SDK), and the load generator
(benchmarks/_loadgen.py, a new process per measurement). The floor is
benchmarks/relay_floor.py, a websockets relay with no bookkeeping at all,
served by the same number of echo nodes from the same node program.

Latency and throughput: in every round the floor and the hub are measured
one after the other (the order alternates between rounds): RTT = one job in
flight, `--jobs` sequential no-op jobs after `--warmup`, submit -> result;
throughput = `--in-flight` jobs in flight until `--tp-jobs` are done. The
figures reported are the medians of the per-round figures, and the ratios
are hub / floor of those medians.

Memory (`--memory`): a fresh hub per N in `--memory-nodes`; its VmRSS after a
forced gc, then N idle registered nodes from separate processes (handshakes
200 at a time), wait until the hub's `nodehub_local_node_sessions` is N, gc
again, VmRSS again: (after - before) / N.

Targets (issue 3, item 9): RTT p50 <= 1.5x and p99 <= 2x the floor's,
throughput >= 50% of the floor's, <= 30 KB of hub memory per idle node
session at 10,000 nodes. The numbers are noisy on a small shared machine:
compare runs, not single rounds.

Usage:
    python benchmarks/dispatch.py [--mode local] [--rounds 3] [--jobs 2000]
        [--tp-jobs 20000] [--in-flight 64] [--nodes 8] [--memory]
        [--memory-nodes 1000,10000] [--json PATH]

`--mode cross_instance` (a second hub and Redis, client on one hub and
nodes on the other) is reserved: see `TOPOLOGIES`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import (
    Child,
    ProcGroup,
    free_port,
    http_get,
    install_exit_on_sigterm,
    metric_value,
    rss_kb,
    wait_http,
)

TARGET_P50_RATIO = 1.5
TARGET_P99_RATIO = 2.0
TARGET_TP_RATIO = 0.5
TARGET_KB_PER_NODE = 30.0
TARGET_MEMORY_N = 10_000

# Idle nodes get no heartbeats in: keep every session alive for the whole run.
HUB_TIMING_FLAGS = ("--heartbeat-interval-ms", "30000", "--node-timeout-ms", "600000")


@dataclass
class Topology:
    """Where the load generator and the node fleet connect, and the hub processes."""

    client_url: str
    node_url: str
    hubs: list[Child] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return self.client_url.replace("ws://", "http://", 1)


def _start_hub(procs: ProcGroup, name: str, *, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> tuple[Child, str]:
    port = free_port()
    hub = procs.spawn(
        name, "_hub_proc.py", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "WARNING", *HUB_TIMING_FLAGS, *extra, extra_env=env,
    )
    url = f"ws://127.0.0.1:{port}"
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}{hub.tail()}") from None
    return hub, url


def start_local(procs: ProcGroup, env: dict[str, str] | None = None) -> Topology:
    """One hub in local mode: clients and nodes on the same hub."""
    hub, url = _start_hub(procs, "hub", env=env)
    return Topology(client_url=url, node_url=url, hubs=[hub])


def start_cross_instance(procs: ProcGroup, env: dict[str, str] | None = None) -> Topology:
    """Reserved: a Redis server and two hubs in cross_instance mode, the load on
    one hub and the nodes on the other (`--deployment-mode cross_instance
    --redis-url ...` for both), so every job crosses between hubs."""
    raise SystemExit("dispatch.py: --mode cross_instance is not implemented yet")


TOPOLOGIES: dict[str, Callable[[ProcGroup, dict[str, str] | None], Topology]] = {
    "local": start_local,
    "cross_instance": start_cross_instance,
}


def _loadgen(procs: ProcGroup, target: str, url: str, args: argparse.Namespace,
             prefix: str) -> dict[str, Any]:
    gen = procs.spawn(
        f"load-{target}", "_loadgen.py", "--url", url, "--target", target,
        "--warmup", str(args.warmup), "--rtt-jobs", str(args.jobs),
        "--tp-jobs", str(args.tp_jobs), "--in-flight", str(args.in_flight),
        "--prefix", prefix,
    )
    try:
        result = gen.expect("result", timeout=600)
        code = gen.wait(timeout=30)
        if code != 0:
            raise RuntimeError(f"load generator exited with {code}{gen.tail()}")
    finally:
        procs.stop(gen)
    if result.get("failures"):
        raise RuntimeError(
            f"{target}: {result['failures']} jobs failed, e.g. {result['failure_sample']}"
        )
    return result


def _fleet(procs: ProcGroup, name: str, url: str, mode: str, count: int,
           args: argparse.Namespace) -> Child:
    fleet = procs.spawn(
        name, "_nodes.py", "--url", url, "--mode", mode, "--count", str(count),
        "--max-concurrency", str(args.max_concurrency),
    )
    fleet.expect("ready", timeout=60)
    return fleet


def run_dispatch(args: argparse.Namespace) -> dict[str, Any]:
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        relay_port = free_port()
        relay = procs.spawn("relay", "relay_floor.py", "--port", str(relay_port))
        relay.expect("ready", timeout=30)
        relay_url = f"ws://127.0.0.1:{relay_port}"
        _fleet(procs, "echo-nodes", relay_url, "echo", args.nodes, args)
        deadline = time.monotonic() + 30
        while json.loads(http_get(f"http://127.0.0.1:{relay_port}/healthz"))["nodes"] < args.nodes:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay never saw every echo node")
            time.sleep(0.05)

        env = {"NODEHUB_BENCH_PROFILE": args.profile_hub} if args.profile_hub else None
        topology = TOPOLOGIES[args.mode](procs, env)
        hub_fleet = _fleet(procs, "hub-nodes", topology.node_url, "hub", args.nodes, args)

        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = ("floor", "hub") if index % 2 == 0 else ("hub", "floor")
            measured: dict[str, Any] = {}
            for target in order:
                url = relay_url if target == "floor" else topology.client_url
                measured[target] = _loadgen(procs, target, url, args, f"r{index}{target}.")
            rounds.append(measured)
            print(
                f"  round {index + 1}/{args.rounds}: "
                f"hub p50 {measured['hub']['rtt_p50_us']:.0f} us, "
                f"p99 {measured['hub']['rtt_p99_us']:.0f} us, "
                f"{measured['hub']['jobs_per_s']:.0f} jobs/s | "
                f"floor p50 {measured['floor']['rtt_p50_us']:.0f} us, "
                f"p99 {measured['floor']['rtt_p99_us']:.0f} us, "
                f"{measured['floor']['jobs_per_s']:.0f} jobs/s",
                flush=True,
            )
        hub_rss = rss_kb(topology.hubs[0].pid)
        if args.profile_hub:
            # The nodes go first: a hub with open sessions may not stop on SIGTERM.
            procs.stop(hub_fleet)
            for hub in topology.hubs:
                hub.signal(signal.SIGTERM)
                hub.wait(timeout=30)
    return {"rounds": rounds, "hub_rss_kb_after": hub_rss}


def _median(rounds: list[dict[str, Any]], target: str, key: str) -> float:
    return float(statistics.median(r[target][key] for r in rounds))


def _gc_and_rss(hub: Child, settle: float) -> int:
    time.sleep(settle)
    hub.signal(signal.SIGUSR1)
    time.sleep(settle)
    return rss_kb(hub.pid)


def run_memory(n: int, args: argparse.Namespace) -> dict[str, Any]:
    per_process = args.memory_per_process
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        env = {"NODEHUB_BENCH_NOFILE": str(n + 4096)}
        if args.trace_memory:
            env["NODEHUB_BENCH_TRACEMALLOC"] = f"{args.trace_memory}.{n}"
        topology = TOPOLOGIES[args.mode](procs, env)
        hub = topology.hubs[0]
        metrics_url = topology.http_url + "/metrics"
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


def summarize(dispatch: dict[str, Any] | None, memory: list[dict[str, Any]],
              args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode}
    if dispatch is not None:
        rounds = dispatch["rounds"]
        for key in ("rtt_p50_us", "rtt_p99_us", "jobs_per_s"):
            out[key] = _median(rounds, "hub", key)
            out[f"floor_{key}"] = _median(rounds, "floor", key)
        out["rtt_p50_ratio"] = out["rtt_p50_us"] / out["floor_rtt_p50_us"]
        out["rtt_p99_ratio"] = out["rtt_p99_us"] / out["floor_rtt_p99_us"]
        out["throughput_ratio"] = out["jobs_per_s"] / out["floor_jobs_per_s"]
        out["targets"] = {
            "rtt_p50_ratio<=1.5": out["rtt_p50_ratio"] <= TARGET_P50_RATIO,
            "rtt_p99_ratio<=2": out["rtt_p99_ratio"] <= TARGET_P99_RATIO,
            "throughput_ratio>=0.5": out["throughput_ratio"] >= TARGET_TP_RATIO,
        }
        out["rounds"] = rounds
        out["hub_rss_kb_after_load"] = dispatch["hub_rss_kb_after"]
    if memory:
        out["memory_per_node_kb"] = {str(m["nodes"]): m["kb_per_node"] for m in memory}
        out["memory"] = memory
        at_target = [m for m in memory if m["nodes"] == TARGET_MEMORY_N]
        if at_target:
            out.setdefault("targets", {})["kb_per_node_at_10000<=30"] = (
                at_target[0]["kb_per_node"] <= TARGET_KB_PER_NODE
            )
    out["settings"] = {
        "rounds": args.rounds, "rtt_jobs": args.jobs, "warmup": args.warmup,
        "tp_jobs": args.tp_jobs, "in_flight": args.in_flight, "nodes": args.nodes,
        "max_concurrency": args.max_concurrency,
    }
    out["machine"] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg": os.getloadavg(),
    }
    return out


def print_table(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    print()
    print(f"dispatch benchmark, mode {out['mode']}, {out['machine']['cpus']} CPUs "
          f"(shared, noisy: medians of {out['settings']['rounds']} rounds)")
    if "rtt_p50_us" in out:
        s = out["settings"]
        print(f"RTT: 1 in flight, {s['rtt_jobs']} jobs; throughput: {s['in_flight']} in flight, "
              f"{s['tp_jobs']} jobs; {s['nodes']} nodes x {s['max_concurrency']} slots")
        print(f"{'':<18}{'hub':>12}{'floor':>12}{'hub/floor':>12}  target")
        print(f"{'rtt p50 (us)':<18}{out['rtt_p50_us']:>12.0f}{out['floor_rtt_p50_us']:>12.0f}"
              f"{out['rtt_p50_ratio']:>12.2f}  <= 1.5x  "
              f"{ok(out['targets']['rtt_p50_ratio<=1.5'])}")
        print(f"{'rtt p99 (us)':<18}{out['rtt_p99_us']:>12.0f}{out['floor_rtt_p99_us']:>12.0f}"
              f"{out['rtt_p99_ratio']:>12.2f}  <= 2x    "
              f"{ok(out['targets']['rtt_p99_ratio<=2'])}")
        print(f"{'jobs/s':<18}{out['jobs_per_s']:>12.0f}{out['floor_jobs_per_s']:>12.0f}"
              f"{out['throughput_ratio']:>12.2f}  >= 0.5x  "
              f"{ok(out['targets']['throughput_ratio>=0.5'])}")
    if out.get("memory"):
        print(f"{'idle nodes':>10}{'RSS before':>14}{'RSS after':>14}{'KB/node':>10}"
              f"{'connect s':>11}")
        for m in out["memory"]:
            print(f"{m['nodes']:>10}{m['rss_before_kb']:>11} KB{m['rss_after_kb']:>11} KB"
                  f"{m['kb_per_node']:>10.1f}{m['connect_seconds']:>11.1f}")
        if "kb_per_node_at_10000<=30" in out.get("targets", {}):
            print(f"memory per idle node at 10,000 nodes <= 30 KB: "
                  f"{ok(out['targets']['kb_per_node_at_10000<=30'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(TOPOLOGIES), default="local")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000, help="timed sequential jobs (RTT)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--tp-jobs", type=int, default=20000, help="jobs in the throughput phase")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--memory", action="store_true", help="also measure memory per node")
    parser.add_argument("--memory-only", action="store_true", help="skip latency/throughput")
    parser.add_argument("--memory-nodes", default="1000,10000")
    parser.add_argument("--memory-per-process", type=int, default=2500,
                        help="idle nodes per fleet process")
    parser.add_argument("--memory-batch", type=int, default=200, help="concurrent handshakes")
    parser.add_argument("--profile-hub", metavar="PATH", help="cProfile the hub to PATH")
    parser.add_argument("--trace-memory", metavar="PATH",
                        help="tracemalloc the memory hubs; top sites to PATH.<N>")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    install_exit_on_sigterm()
    dispatch = None if args.memory_only else run_dispatch(args)
    memory: list[dict[str, Any]] = []
    if args.memory or args.memory_only:
        for n in (int(x) for x in args.memory_nodes.split(",") if x.strip()):
            memory.append(run_memory(n, args))
            print(f"  memory: {n} idle nodes: {memory[-1]['kb_per_node']:.1f} KB/node",
                  flush=True)
    out = summarize(dispatch, memory, args)
    print_table(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A reconnect storm: N node agents connect and register at once while a bystander
client runs jobs on nodes that were already there.

What a hub restart looks like to the hub that takes its fleet: N agents (raw
websockets `register`, from `--procs` processes, every handshake of a
process in flight `--batch` at a time) all start at the same instant. A
bystander client runs jobs back to back (`--in-flight` loops) on 4 nodes
that registered before the storm; the agents serve another language pair,
so the bystander's jobs never land on them. The baseline, measured in the
same run: the bystander's round trip in the `--before-s` seconds before the
storm.

Printed (and written with `--json PATH`): `agents`, `register_seconds`
(from the common start until the hub counts every agent's node: its
`/v1/stats`, polled every 50 ms; in cross mode `nodehub_local_node_sessions`
of each hub), `registrations_per_s`,
`bystander_p50_ms_before`, `bystander_p99_ms_before`,
`bystander_p50_ms_during`, `bystander_p99_ms_during`, `hub_rss_mb` (after
the storm), plus bystander failures. Targets on the 2-core
reference box: 10,000 agents registered in <= 10 s; bystander p99 during
the storm <= 50 ms.

`--mode cross_instance`: a throwaway Redis and two hubs; the agents are
spread over both, the bystander (client and nodes) is on the first; also
printed: `converge_seconds`, from the start until both hubs' fleet views
list every node (`/v1/stats`), i.e. how long the directory takes to
converge on the other hub.

`--profile PATH` runs the (first) hub under cProfile and writes its stats
to PATH (`python -m pstats PATH`).

Usage:
    python benchmarks/storm.py --agents 10000 [--procs 4] [--batch 250]
                               [--mode local|cross_instance] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from _procs import ProcGroup, http_get, install_exit_on_sigterm, metric_value, rss_kb
from _topology import TOPOLOGIES, Topology

BYSTANDER_NODES = 4
POLL_S = 0.05


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _local_sessions(http_url: str) -> int:
    text = http_get(http_url + "/metrics").decode()
    return int(metric_value(text, "nodehub_local_node_sessions") or 0)


def _fleet_size(http_url: str) -> int:
    stats = json.loads(http_get(http_url + "/v1/stats"))
    return int(sum(stats["nodes"].values()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.agents
    env = {"BENCH_HUB_NOFILE": str(n + 4096)}
    if args.profile:
        env["NODEHUB_BENCH_PROFILE"] = args.profile
    if args.gc_log:
        env["NODEHUB_BENCH_GCLOG"] = "1"
    with ProcGroup(keep_logs=args.keep_logs or args.gc_log) as procs:
        if args.gc_log:
            print(f"# logs in {procs.dir}")
        topology: Topology = TOPOLOGIES[args.mode](procs, env)
        hub_urls = [h for h in dict.fromkeys([topology.client_url, topology.node_url])]
        http_urls = [u.replace("ws://", "http://", 1) for u in hub_urls]
        # The bystander: its nodes and its client, on the first hub.
        nodes = procs.spawn("bystander-nodes", "_nodes.py", "--url", hub_urls[0], "--mode",
                            "hub", "--count", str(BYSTANDER_NODES), "--prefix", "bystander",
                            "--max-concurrency", "4")
        nodes.expect("ready", timeout=30)
        client = procs.spawn("bystander", "_bystander.py", "--url", hub_urls[0],
                             "--in-flight", str(args.in_flight))
        client.expect("ready", timeout=30)
        # The storm's agents: processes start, import, and wait for the common instant.
        per = -(-n // args.procs)
        start_at = time.time() + 2.0 + 0.4 * args.procs
        agents = []
        for i in range(args.procs):
            first, count = i * per, min(per, n - i * per)
            if count <= 0:
                break
            agents.append(procs.spawn(
                f"agents-{i}", "_nodes.py", "--url", hub_urls[i % len(hub_urls)],
                "--mode", "idle", "--count", str(count), "--start", str(first),
                "--prefix", "storm", "--src", "fr", "--tgt", "es",
                "--batch", str(args.batch), "--start-at", str(start_at),
            ))
        for agent in agents:
            agent.expect("waiting", timeout=60)
        before_from = time.time()
        time.sleep(max(0.0, start_at - time.time()))
        before_to = time.time()
        # Registered: every agent's session counted by the hub that holds it.
        want = n + BYSTANDER_NODES
        deadline = start_at + args.timeout
        registered_at = converged_at = None
        while time.time() < deadline:
            now = time.time()
            if registered_at is None and (
                _fleet_size(http_urls[0]) >= want if len(http_urls) == 1
                else sum(_local_sessions(u) for u in http_urls) >= want
            ):
                registered_at = now
            if registered_at is not None:
                if len(http_urls) == 1:
                    converged_at = registered_at
                    break
                if all(_fleet_size(u) >= want for u in http_urls):
                    converged_at = now
                    break
            time.sleep(POLL_S)
        if registered_at is None or converged_at is None:
            tails = "".join(a.tail() for a in agents[:1]) + topology.hubs[0].tail()
            raise RuntimeError(f"the storm did not settle within {args.timeout}s{tails}")
        for agent in agents:
            agent.expect("ready", timeout=60)
        time.sleep(0.2)  # a little of the quiet after, for the record
        rss_mb = [rss_kb(h.pid) / 1024 for h in topology.hubs]
        client.signal(15)
        report = client.expect("samples", timeout=30)
    samples: list[list[float]] = report["samples"]
    before = [rtt for t, rtt in samples if before_from <= t < before_to]
    during = [rtt for t, rtt in samples if start_at <= t <= registered_at]
    register_s = registered_at - start_at
    result: dict[str, Any] = {
        "agents": n,
        "register_seconds": round(register_s, 3),
        "registrations_per_s": round(n / register_s, 1),
        "bystander_p50_ms_before": round(_pct(before, 50), 2),
        "bystander_p99_ms_before": round(_pct(before, 99), 2),
        "bystander_p50_ms_during": round(_pct(during, 50), 2),
        "bystander_p99_ms_during": round(_pct(during, 99), 2),
        "hub_rss_mb": round(rss_mb[0], 1),
        "mode": args.mode,
        "procs": len(agents),
        "batch": args.batch,
        "bystander_jobs_before": len(before),
        "bystander_jobs_during": len(during),
        "bystander_max_ms_during": round(max(during, default=float("nan")), 2),
        "bystander_failures": report["failures"],
    }
    if args.mode == "cross_instance":
        result["converge_seconds"] = round(converged_at - start_at, 3)
        result["hub_rss_mb_each"] = [round(r, 1) for r in rss_mb]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=4, help="agent processes")
    parser.add_argument("--batch", type=int, default=250,
                        help="handshakes in flight per agent process")
    parser.add_argument("--mode", choices=sorted(TOPOLOGIES), default="local")
    parser.add_argument("--in-flight", type=int, default=2, help="bystander job loops")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the (first) hub")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--gc-log", action="store_true",
                        help="log the hub's garbage collections of 5 ms or more (kept logs)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    install_exit_on_sigterm()
    result = run(args)
    print(f"# reconnect storm: {args.agents} agents from {result['procs']} processes "
          f"({args.batch} handshakes in flight each), {args.mode} mode; bystander "
          f"{args.in_flight} job loops on {BYSTANDER_NODES} nodes that were there before")
    print(f"{'agents':>7} {'register s':>10} {'reg/s':>8} {'p50 before':>10} "
          f"{'p99 before':>10} {'p50 during':>10} {'p99 during':>10} {'max during':>10} "
          f"{'fail':>5} {'hub MiB':>8}" + (f" {'converge s':>10}" if "converge_seconds" in result
                                            else ""))
    print(f"{result['agents']:>7} {result['register_seconds']:>10.2f} "
          f"{result['registrations_per_s']:>8.0f} {result['bystander_p50_ms_before']:>10.2f} "
          f"{result['bystander_p99_ms_before']:>10.2f} {result['bystander_p50_ms_during']:>10.2f} "
          f"{result['bystander_p99_ms_during']:>10.2f} {result['bystander_max_ms_during']:>10.2f} "
          f"{result['bystander_failures']:>5} {result['hub_rss_mb']:>8.1f}"
          + (f" {result['converge_seconds']:>10.2f}" if "converge_seconds" in result else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

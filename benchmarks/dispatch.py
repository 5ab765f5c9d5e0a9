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

Targets: RTT p50 <= 1.25x and p99 <= 1.5x the floor's, throughput >= 60% of
the floor's, <= 30 KB of hub memory per idle node session at 10,000 nodes.
Beside them, the CPU time the hub (and the floor) ran per job in the
throughput phase (`cpu_us_per_job`, /proc/PID/schedstat): steadier than
jobs/s on a shared machine, and what the per-job cost table in
docs/architecture.md is made of. The numbers are noisy on a small shared machine:
compare runs, not single rounds.

Cross-instance mode (`--mode cross_instance`): a throwaway
`redis-server` (free port, no persistence, killed with the other children)
and two hubs in cross_instance mode on it, `bench-a` and `bench-b`, with the
same timers as the local hub; the load generator talks to hub A and the
nodes are connected to hub B, so every job crosses hubs through Redis. The
benchmark waits until hub A's `GET /v1/nodes` lists every node on `bench-b`.
The same run also starts the local-mode hub (its own fleet, client and nodes
on it) and the relay floor, and every round measures the three one after the
other, the order rotating between rounds, so that cross, local and floor are
compared on the same machine at the same time.

Redis cost per job (cross mode): `INFO commandstats` of the benchmark's Redis
right before and after the timed RTT and throughput phases, read by the load
generator itself; the calls in between over the jobs of that phase, in total
and per command, pooled over the rounds. Redis counts the commands a Lua
script runs (XADD, PEXPIRE... of `SEND_MANY`) as well as the EVALSHA that ran
it; `redis_commands_sent_per_job` leaves out the commands the hubs only run
inside scripts. Background traffic (presence ticks, lease renewals, beacons,
the idle inbox reads) is measured in every round over an idle period as long
as that round's throughput window, right after it, and subtracted (per
command, never below zero); the raw figures are reported too.

The two-hop floor (cross mode): every round also runs `redis_hop.py`'s
measurement (`redis_hop.measure`, the `pipe` transport) on the run's own
Redis, in the same rotation: hub A's XADD to B's stream, B's blocking read and
XADD back, A's read, one trip at a time: what the two Redis hops of a
cross-hub job cost with nothing else on them.

Targets (cross mode): cross-hub RTT p50 <= local RTT p50 + 2 x the two-hop
floor's p50, throughput >= 0.35x the relay floor's (all of the same rounds).

Authentication (`--auth`): the same run also starts a hub with
`auth = "jwt"` (HS256) and one with JWT and TLS on its port (a self-signed
certificate made for the run), local mode, each with its own fleet (node
token) and load generator (client token; the certificate as CA), measured in
every round beside the plain hub and the floor. Each load generator first
opens and closes `--handshakes` sessions one after the other: the handshake
cost per connection (TCP, TLS, upgrade, token check). Target: the per-job
cost with JWT unchanged within noise (RTT p50 and throughput within 10% of
the plain hub's); TLS figures are reported, not targeted.

Usage:
    python benchmarks/dispatch.py [--mode local|cross_instance] [--rounds 3]
        [--jobs 2000] [--tp-jobs 20000] [--in-flight 64] [--nodes 8] [--memory]
        [--memory-nodes 1000,10000] [--auth] [--handshakes 200] [--keep-logs]
        [--hub-log-level WARNING] [--job-log-level LEVEL] [--json PATH]

The job lifecycle lines cost: run once with the defaults (hubs at
WARNING: the lines are not even built) and once with `--hub-log-level INFO`
(every job's accepted/assigned/result lines written to the hub's log), and
compare the two tables (`--job-log-level DEBUG` with `--hub-log-level INFO`
measures them turned down under an INFO log).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _memory import run_memory
from _procs import install_exit_on_sigterm
from _report import print_table
from _rounds import run_dispatch
from _summary import summarize
from _topology import TOPOLOGIES, set_hub_logging


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
    parser.add_argument("--auth", action="store_true",
                        help="also measure hubs with JWT auth and with JWT + TLS")
    parser.add_argument("--handshakes", type=int, default=200,
                        help="with --auth: sessions opened one by one per measurement")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--hub-log-level", default="WARNING",
                        help="the hubs' log_level (INFO: job lifecycle lines on)")
    parser.add_argument("--job-log-level", default=None,
                        help="the hubs' job_log_level (default: the hub's, INFO)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    set_hub_logging(args.hub_log_level, args.job_log_level)
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

"""A saturated fleet: goodput, queue wait, fairness between two clients, pick-next cost.

Separate processes on uvloop: the hub (`hub serve` via benchmarks/_hub_proc.py;
`--mode cross_instance`: a throwaway redis-server and two hubs, the clients on
one, the nodes on the other), a fleet of raw-websockets nodes with a fixed
service time (benchmarks/_nodes.py `--service-ms`: `job_accept` at once,
`job_result` that much later), and the load (benchmarks/_saturation_load.py):
two clients offering `--load` x capacity in the ratio `--weights` (1:4) for
`--duration` seconds, open loop.

capacity = nodes x slots / service time. Figures, over the offered-load window:
- goodput: ok results per second, and / capacity (target >= 95%);
- queue wait p50/p99: submit to result minus the service time, ok jobs;
- `overloaded` rejections and `queue_timeout` results;
- dispatches refused for capacity by the node's hub (the client hub's
  `nodehub_attempts_total{outcome="at_capacity"}` over the run: in
  cross-instance mode, a home that sent a job to a slot that was not free);
- shares: each client's ok results over both clients', counted in the 100 ms
  buckets where both clients had a job waiting through the whole bucket
  (target: within 10% of equal); `shares_overall` over the whole window (a
  client that offers less than its fair share is never backlogged: it gets
  what it offers, and `both_backlogged_s` says how long both were);
- slot cycle: from the nodes (SIGUSR1 to benchmarks/_nodes.py at the window's
  start and end), the mean service as run (the timer's overshoot included) and
  the idle gap from a freed slot to its next assign; nominal / (service + gap)
  is the most goodput those cycles allow, nominal / service what the rig's
  timer alone allows: the hub's turnaround is the gap;
- pick_next: the pure `AdmissionQueue.take_for` with `--waiting` (10,000)
  jobs waiting, per call, p50/p99 in microseconds, against a baseline
  measured in the same run: a linear scan of the same waiting jobs for the
  same answer.

The same run also measures two baselines:
- v1: the same load with `queue_timeout_ms: 0` on every submit (no waiting:
  a full fleet answers `no_node` at once, as a hub without a queue does): its goodput
  and `no_node` count;
- the queue floor (benchmarks/queue_floor.py): the same load and a fleet of
  the same nodes against a hub that does nothing but queue and forward (a
  FIFO, each node's free slots, the same websockets server and event loop).
  Its goodput is what this rig allows on this machine (the nodes' wake-ups,
  the loopback hops, the load generator sharing the CPUs); the hub's goodput
  over the floor's is the share the hub keeps (`goodput_vs_floor`).

Usage:
    python benchmarks/saturation.py [--mode local|cross_instance] [--nodes 8]
        [--slots 4] [--service-ms 10] [--load 2.0] [--weights 1,4] [--duration 10]
        [--waiting 10000] [--no-v1] [--no-floor] [--keep-logs] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _procs import (
    Child,
    ProcGroup,
    free_port,
    http_get,
    install_exit_on_sigterm,
    metric_value,
)
from _topology import TOPOLOGIES, wait_directory

from hub.core.admission_queue import AdmissionQueue
from hub.core.capabilities import NodeCapabilities, Requirements

BUCKET_S = 0.1
FLOOR_MAX_QUEUED = 5000
"""Submits one client may have waiting at the queue floor: the hub's equal share of its
default `max_queued_jobs` (10,000) between the two clients."""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _capacity_refusals(metrics_url: str | None) -> int | None:
    """The client hub's attempts refused for capacity by their node's owner so far
    (`nodehub_attempts_total{outcome="at_capacity"}`); None without a hub to ask."""
    if metrics_url is None:
        return None
    value = metric_value(
        http_get(metrics_url).decode(), 'nodehub_attempts_total{outcome="at_capacity"}'
    )
    return int(value or 0)


def run_load(procs: ProcGroup, url: str, args: argparse.Namespace, rate: float,
             queue_timeout_ms: int | None, fleet: Child,
             metrics_url: str | None = None) -> dict[str, Any]:
    """The load's record, with the nodes' slot figures over its offered-load window (and
    the dispatches the nodes' owner refused for capacity, given the client hub's
    `/metrics`)."""
    refused_before = _capacity_refusals(metrics_url)
    extra = [] if queue_timeout_ms is None else ["--queue-timeout-ms", str(queue_timeout_ms)]
    fleet.signal(signal.SIGUSR1)  # reset the slot figures
    fleet.expect("slot_stats", timeout=30)
    load = procs.spawn(
        "load", "_saturation_load.py", "--url", url, "--rate", f"{rate:.1f}",
        "--weights", args.weights, "--duration", str(args.duration), *extra,
    )
    # The window ends `duration` after the load's start (its connections take a moment:
    # the figures then miss the window's first milliseconds, not its drain).
    window = threading.Timer(args.duration, fleet.signal, (signal.SIGUSR1,))
    window.start()
    done = load.expect("done", timeout=args.duration + 90)["done"]
    window.join()
    slots = fleet.expect("slot_stats", timeout=30)["slot_stats"]
    load.wait(30)
    procs.stop(load)
    refused_after = _capacity_refusals(metrics_url)
    refused = (
        None if refused_before is None or refused_after is None
        else refused_after - refused_before
    )
    return {**done, "slot_stats": slots, "capacity_refusals": refused}


def run_floor(procs: ProcGroup, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """The same load against the queue floor, with a fleet of its own."""
    port = free_port()
    procs.spawn("floor", "queue_floor.py", "--port", str(port),
                "--max-queued", str(FLOOR_MAX_QUEUED)).expect("ready", timeout=30)
    url = f"ws://127.0.0.1:{port}"
    fleet = procs.spawn(
        "floor-nodes", "_nodes.py", "--url", url, "--mode", "hub", "--count", str(args.nodes),
        "--max-concurrency", str(args.slots), "--service-ms", str(args.service_ms),
    )
    fleet.expect("ready", timeout=60)
    deadline = time.monotonic() + 30
    while json.loads(http_get(f"http://127.0.0.1:{port}/healthz"))["nodes"] < args.nodes:
        if time.monotonic() > deadline:
            raise RuntimeError("the queue floor never saw every node")
        time.sleep(0.05)
    return run_load(procs, url, args, rate, None, fleet)


def analyse(done: dict[str, Any], service_s: float, capacity: float) -> dict[str, Any]:
    duration = float(done["duration"])
    buckets = int(duration / BUCKET_S)
    ok_in_window: dict[str, int] = {}
    waits: list[float] = []
    codes: dict[str, int] = {}
    backlog: dict[str, list[int]] = {}
    done_by_bucket: dict[str, list[int]] = {}
    for name, client in done["clients"].items():
        diff = [0] * (buckets + 1)
        per_bucket = [0] * buckets
        ok_in_window[name] = 0
        for sent, answered, ok, code in client["results"]:
            if not ok:
                codes[code] = codes.get(code, 0) + 1
                continue
            waits.append(max(0.0, answered - sent - service_s) * 1000)
            if answered <= duration:
                ok_in_window[name] += 1
                per_bucket[min(buckets - 1, int(answered / BUCKET_S))] += 1
            # Waiting from `sent` to `answered - service`: the buckets it spans whole.
            first = int(sent / BUCKET_S) + 1
            last = int((answered - service_s) / BUCKET_S)
            if last > first:
                diff[min(first, buckets)] += 1
                diff[min(last, buckets)] -= 1
        level, marks = 0, []
        for b in range(buckets):
            level += diff[b]
            marks.append(1 if level > 0 else 0)
        backlog[name] = marks
        done_by_bucket[name] = per_bucket
    names = sorted(ok_in_window)
    both = [b for b in range(buckets) if all(backlog[n][b] for n in names)]
    both_counts = {n: sum(done_by_bucket[n][b] for b in both) for n in names}
    both_total = sum(both_counts.values())
    total = sum(ok_in_window.values())
    goodput = total / duration
    return {
        "capacity_jobs_per_s": capacity,
        "goodput_jobs_per_s": round(goodput, 1),
        "goodput_ratio": round(goodput / capacity, 4),
        "wait_p50_ms": round(_percentile(waits, 0.50), 2),
        "wait_p99_ms": round(_percentile(waits, 0.99), 2),
        "overloaded": codes.get("overloaded", 0),
        "queue_timeouts": codes.get("queue_timeout", 0),
        "no_node": codes.get("no_node", 0),
        "other_failures": {k: v for k, v in codes.items()
                           if k not in ("overloaded", "queue_timeout", "no_node")},
        "shares": {n: round(both_counts[n] / both_total, 4) if both_total else None
                   for n in names},
        "shares_overall": {n: round(ok_in_window[n] / total, 4) if total else 0.0
                           for n in names},
        "both_backlogged_s": round(len(both) * BUCKET_S, 1),
        "offered_jobs_per_s": {n: round(done["clients"][n]["rate"], 1) for n in names},
        "accepted_queued": {n: done["clients"][n]["queued"] for n in names},
        "unanswered": sum(c["unanswered"] for c in done["clients"].values()),
        "slot_stats": done.get("slot_stats"),
        "capacity_refusals": done.get("capacity_refusals"),
    }


def pick_next_cost(waiting: int, ops: int, seed: int = 1) -> dict[str, float]:
    """`take_for` with `waiting` jobs waiting (each taken job replaced by a new one),
    against a linear scan of the same jobs for the same answer."""
    rng = random.Random(seed)
    pairs = [("en", "de"), ("en", "fr"), ("fr", "en"), ("de", "en")]
    classes = [
        Requirements(src, tgt, features=frozenset(f))
        for src, tgt in pairs for f in ((), ("emotion",))
    ]
    caps = NodeCapabilities(
        language_pairs=frozenset(pairs[:2]), asr_languages=frozenset({"en"}),
        tts_languages=frozenset({"de", "fr"}), features=frozenset({"emotion"}),
        max_concurrency=4,
    )
    queue = AdmissionQueue()
    counter = 0

    fitting = [req for req in classes if (req.src_lang, req.tgt_lang) in caps.language_pairs]

    def push(choices: list[Requirements] = classes) -> None:
        nonlocal counter
        counter += 1
        queue.push(f"j{counter}", rng.choice(choices), priority=rng.randrange(3),
                   fair_key=f"s{rng.randrange(50)}")

    for _ in range(waiting):
        push()
    samples: list[float] = []
    for _ in range(ops):
        started = time.perf_counter_ns()
        entry = queue.take_for("n1", caps)
        samples.append((time.perf_counter_ns() - started) / 1000)
        assert entry is not None
        push(fitting)  # the job taken is replaced by one the node fits: a steady mix
    scans: list[float] = []
    for _ in range(max(20, ops // 100)):
        started = time.perf_counter_ns()
        best = min(
            (e.sort_key, e.seq, e.job_id) for e in queue.waiting()
            if e.job_class.served_by(caps)
        )
        scans.append((time.perf_counter_ns() - started) / 1000)
        assert best
    return {
        "pick_next_p50_us": round(_percentile(samples, 0.50), 2),
        "pick_next_p99_us": round(_percentile(samples, 0.99), 2),
        "scan_p50_us": round(statistics.median(scans), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(TOPOLOGIES), default="local")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--service-ms", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--weights", default="1,4", help="offered load ratio of the clients")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--waiting", type=int, default=10_000, help="pick-next: jobs waiting")
    parser.add_argument("--pick-ops", type=int, default=20_000)
    parser.add_argument("--no-v1", action="store_true", help="skip the v1 (no queue) baseline")
    parser.add_argument("--no-floor", action="store_true", help="skip the queue floor")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    install_exit_on_sigterm()
    service_s = args.service_ms / 1000
    capacity = args.nodes * args.slots / service_s
    rate = capacity * args.load
    started = time.monotonic()
    pick = pick_next_cost(args.waiting, args.pick_ops)
    print(f"pick next with {args.waiting} waiting: p50 {pick['pick_next_p50_us']} us, "
          f"p99 {pick['pick_next_p99_us']} us (a scan: {pick['scan_p50_us']} us)", flush=True)
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        topology = TOPOLOGIES[args.mode](procs, None)
        fleet = procs.spawn(
            "nodes", "_nodes.py", "--url", topology.node_url, "--mode", "hub",
            "--count", str(args.nodes), "--max-concurrency", str(args.slots),
            "--service-ms", str(args.service_ms),
        )
        fleet.expect("ready", timeout=60)
        if args.mode == "cross_instance":
            wait_directory(topology, args.nodes)
        metrics_url = topology.http_url + "/metrics"
        queued = analyse(
            run_load(procs, topology.client_url, args, rate, None, fleet, metrics_url),
            service_s, capacity,
        )
        print(f"  queue: goodput {queued['goodput_ratio']:.3f} x capacity", flush=True)
        v1 = None
        if not args.no_v1:
            v1 = analyse(
                run_load(procs, topology.client_url, args, rate, 0, fleet, metrics_url),
                service_s, capacity,
            )
            print(f"  v1:    goodput {v1['goodput_ratio']:.3f} x capacity", flush=True)
        floor = None
        if not args.no_floor:
            floor = analyse(run_floor(procs, args, rate), service_s, capacity)
            print(f"  floor: goodput {floor['goodput_ratio']:.3f} x capacity", flush=True)
    out: dict[str, Any] = {
        **{k: queued[k] for k in (
            "capacity_jobs_per_s", "goodput_jobs_per_s", "goodput_ratio", "wait_p50_ms",
            "wait_p99_ms", "overloaded", "queue_timeouts", "shares",
        )},
        **{k: pick[k] for k in ("pick_next_p50_us", "pick_next_p99_us")},
        "pick_next_scan_p50_us": pick["scan_p50_us"],
        "goodput_vs_floor": (
            round(queued["goodput_ratio"] / floor["goodput_ratio"], 4)
            if floor and floor["goodput_ratio"] else None
        ),
        "detail": queued,
        "v1_baseline": v1,
        "floor_baseline": floor,
        "settings": {
            "mode": args.mode, "nodes": args.nodes, "slots": args.slots,
            "service_ms": args.service_ms, "load": args.load, "weights": args.weights,
            "duration_s": args.duration, "waiting": args.waiting,
            "cpus": os.cpu_count(), "seconds": round(time.monotonic() - started, 1),
        },
    }
    if args.json:  # first: a figure is never lost to the table's printing
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print_table(out)
    return 0


def print_table(out: dict[str, Any]) -> None:
    s, d = out["settings"], out["detail"]
    v1, floor = out["v1_baseline"], out["floor_baseline"]

    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    def cols(fmt: str, key: str) -> str:
        """The baselines' figures (v1, floor) under `key`, or '-'."""
        return "".join(
            f"{format(run[key], fmt):>14}" if run and run.get(key) is not None else f"{'-':>14}"
            for run in (v1, floor)
        )

    print()
    print(f"saturation benchmark, mode {s['mode']}, {s['cpus']} CPUs (shared, noisy); "
          f"{s['nodes']} nodes x {s['slots']} slots x {s['service_ms']:g} ms, offered "
          f"{s['load']:g}x capacity for {s['duration_s']:g} s by 2 clients ({s['weights']})")
    print(f"{'':<30}{'queue':>12}{'v1 (no queue)':>14}{'queue floor':>14}  target")
    print(f"{'capacity (jobs/s)':<30}{out['capacity_jobs_per_s']:>12.0f}")
    print(f"{'goodput (jobs/s)':<30}{out['goodput_jobs_per_s']:>12.0f}"
          f"{cols('.0f', 'goodput_jobs_per_s')}")
    print(f"{'goodput / capacity':<30}{out['goodput_ratio']:>12.3f}"
          f"{cols('.3f', 'goodput_ratio')}  >= 0.95  {ok(out['goodput_ratio'] >= 0.95)}")
    if out.get("goodput_vs_floor") is not None:
        print(f"{'goodput / the floor goodput':<30}{out['goodput_vs_floor']:>12.3f}   the share "
              f"of what this rig allows on this machine that the hub keeps")
    for name, run in (("", d), ("  floor: ", floor)):
        slots = run.get("slot_stats") if run else None
        if not (slots and slots["jobs"]):
            continue
        # Where a slot's time went: service as run (timer overshoot included), and the
        # idle gap from a freed slot to the next assign (the hub's turnaround).
        cycle = slots["service_mean_ms"] + slots["gap_mean_ms"]
        print(f"{name or 'slot cycle (ms, mean)':<30}{cycle:>12.2f}   service as run "
              f"{slots['service_mean_ms']:.2f} (nominal {slots['service_nominal_ms']:g}, "
              f"p99 {slots['service_p99_ms']:.2f}) + idle gap {slots['gap_mean_ms']:.2f} "
              f"(p50 {slots['gap_p50_ms']:.2f}, p99 {slots['gap_p99_ms']:.2f})")
        if not name:
            print(f"{'  nominal / cycle':<30}{slots['service_nominal_ms'] / cycle:>12.3f}   "
                  f"the most goodput these slot cycles allow; the rig's timer alone allows "
                  f"{slots['service_nominal_ms'] / slots['service_mean_ms']:.3f}")
    print(f"{'queue wait p50 / p99 (ms)':<30}{out['wait_p50_ms']:>6.1f} /"
          f"{out['wait_p99_ms']:>7.1f}" + (
              f"{'':>14}{floor['wait_p50_ms']:>6.1f} /{floor['wait_p99_ms']:>7.1f}"
              if floor else ""))
    print(f"{'overloaded':<30}{out['overloaded']:>12}{cols('d', 'overloaded')}")
    print(f"{'queue_timeout':<30}{out['queue_timeouts']:>12}")
    if d.get("capacity_refusals") is not None:
        print(f"{'refused by owner (capacity)':<30}{d['capacity_refusals']:>12}"
              f"{cols('d', 'capacity_refusals')}   dispatches a node's hub "
              f"refused as full (the job waits again)")
    print(f"{'no_node':<30}{d['no_node']:>12}{cols('d', 'no_node')}")
    for name in sorted(out["shares"]):
        share = out["shares"][name]
        text = "n/a" if share is None else f"{share:.3f}"
        print(f"{'share ' + name + ' (both backlogged)':<30}{text:>12}"
              f"   overall {d['shares_overall'][name]:.3f}, offered "
              f"{d['offered_jobs_per_s'][name]:.0f}/s")
    shares = [x for x in out["shares"].values() if x is not None]
    fair = bool(shares) and max(abs(x - 1 / len(shares)) for x in shares) <= 0.1 / len(shares)
    print(f"{'both backlogged for (s)':<30}{d['both_backlogged_s']:>12.1f}   "
          f"shares within 10% of equal: {ok(fair) if shares else 'n/a (never both)'}")
    print(f"{'pick next, 10k waiting (us)':<30}{out['pick_next_p50_us']:>6.1f} /"
          f"{out['pick_next_p99_us']:>7.1f}   p50 / p99; a linear scan: "
          f"{out['pick_next_scan_p50_us']:.0f} us")
    print(f"finished in {s['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

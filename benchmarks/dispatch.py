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

Cross-instance mode (`--mode cross_instance`, issue 4 item 12): a throwaway
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

Targets (issue 4, item 12): cross-hub RTT p50 <= local RTT p50 + 500 us,
>= 4,000 jobs/s through the pair of hubs.

Usage:
    python benchmarks/dispatch.py [--mode local|cross_instance] [--rounds 3]
        [--jobs 2000] [--tp-jobs 20000] [--in-flight 64] [--nodes 8] [--memory]
        [--memory-nodes 1000,10000] [--keep-logs] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import (
    Child,
    ProcGroup,
    calls_delta,
    free_port,
    http_get,
    install_exit_on_sigterm,
    metric_value,
    redis_command,
    redis_commandstats,
    rss_kb,
    wait_http,
)

TARGET_P50_RATIO = 1.5
TARGET_P99_RATIO = 2.0
TARGET_TP_RATIO = 0.5
TARGET_KB_PER_NODE = 30.0
TARGET_MEMORY_N = 10_000
TARGET_CROSS_P50_EXTRA_US = 500.0
TARGET_CROSS_JOBS_PER_S = 4000.0

CROSS_HUB_IDS = ("bench-a", "bench-b")
"""The client's hub, then the nodes' hub."""
SCRIPT_ONLY_COMMANDS = frozenset((
    "set", "xadd", "pexpire", "time", "exists", "zadd", "zscore", "zrangebyscore", "hset",
    "hmget",
))
"""Commands the hubs run only inside their Lua scripts in the steady state
(hub/store/redis.py: the bindings' and job records' SETs run in BIND_MANY and
SAVE_MANY; SET, PEXPIRE and EXISTS are sent directly only when reaping a dead
hub's inbox, HMGET by `node_owner`), left out of `redis_commands_sent_per_job`."""

# Idle nodes get no heartbeats in: keep every session alive for the whole run.
HUB_TIMING_FLAGS = ("--heartbeat-interval-ms", "30000", "--node-timeout-ms", "600000")


@dataclass
class Topology:
    """Where the load generator and the node fleet connect, and the hub processes."""

    client_url: str
    node_url: str
    hubs: list[Child] = field(default_factory=list)
    """The client's hub first, the nodes' hub last (the same one in local mode)."""
    redis_port: int | None = None
    node_hub_id: str | None = None

    @property
    def http_url(self) -> str:
        return self.client_url.replace("ws://", "http://", 1)

    @property
    def node_http_url(self) -> str:
        return self.node_url.replace("ws://", "http://", 1)

    @property
    def node_hub(self) -> Child:
        return self.hubs[-1]


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


def _hub_env(env: dict[str, str] | None, suffix: str) -> dict[str, str] | None:
    """`env` for one of several hubs: its own cProfile output file."""
    if env is None or "NODEHUB_BENCH_PROFILE" not in env:
        return env
    return {**env, "NODEHUB_BENCH_PROFILE": f"{env['NODEHUB_BENCH_PROFILE']}.{suffix}"}


def start_redis(procs: ProcGroup) -> int:
    """A throwaway `redis-server` in the group: free port, no persistence, its own
    directory (under the group's, removed with it); its port once it answers PING."""
    program = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(program).exists():
        raise SystemExit("dispatch.py: cross_instance mode needs redis-server")
    port = free_port()
    data_dir = procs.dir / "redis"
    data_dir.mkdir()
    redis = procs.spawn_program("redis", [
        program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(data_dir), "--logfile", "",
    ])
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis_command(port, "PING", timeout=1.0) == b"PONG":
                return port
        except OSError:
            pass
        if redis.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not come up on port {port}{redis.tail()}")
        time.sleep(0.05)


def start_cross_instance(procs: ProcGroup, env: dict[str, str] | None = None) -> Topology:
    """A Redis server and two hubs in cross_instance mode on it: the load on the
    first, the nodes on the second, so every job crosses between hubs."""
    redis_port = start_redis(procs)
    prefix = f"bench-{os.getpid()}-{time.time_ns()}"
    hubs: list[Child] = []
    urls: list[str] = []
    for hub_id in CROSS_HUB_IDS:
        hub, url = _start_hub(
            procs, f"hub-{hub_id}",
            extra=("--deployment-mode", "cross_instance",
                   "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                   "--redis-prefix", prefix, "--hub-id", hub_id),
            env=_hub_env(env, hub_id),
        )
        hubs.append(hub)
        urls.append(url)
    return Topology(client_url=urls[0], node_url=urls[-1], hubs=hubs, redis_port=redis_port,
                    node_hub_id=CROSS_HUB_IDS[-1])


def wait_directory(topology: Topology, count: int, timeout: float = 30.0) -> None:
    """Until the client's hub lists `count` nodes on the nodes' hub (`GET /v1/nodes`)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        nodes = json.loads(http_get(topology.http_url + "/v1/nodes"))
        seen = sum(1 for node in nodes if node.get("hub_id") == topology.node_hub_id)
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"hub {CROSS_HUB_IDS[0]} lists {seen} of {count} nodes on "
                f"{topology.node_hub_id} after {timeout}s{topology.hubs[0].tail()}"
            )
        time.sleep(0.05)


TOPOLOGIES: dict[str, Callable[[ProcGroup, dict[str, str] | None], Topology]] = {
    "local": start_local,
    "cross_instance": start_cross_instance,
}


def _loadgen(procs: ProcGroup, target: str, url: str, args: argparse.Namespace,
             prefix: str, redis_port: int | None = None) -> dict[str, Any]:
    extra = ("--redis-port", str(redis_port)) if redis_port is not None else ()
    gen = procs.spawn(
        f"load-{target}", "_loadgen.py", "--url", url,
        "--target", "floor" if target == "floor" else "hub",
        "--warmup", str(args.warmup), "--rtt-jobs", str(args.jobs),
        "--tp-jobs", str(args.tp_jobs), "--in-flight", str(args.in_flight),
        "--prefix", prefix, *extra,
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
           args: argparse.Namespace, prefix: str = "bench") -> Child:
    fleet = procs.spawn(
        name, "_nodes.py", "--url", url, "--mode", mode, "--count", str(count),
        "--max-concurrency", str(args.max_concurrency), "--prefix", prefix,
    )
    fleet.expect("ready", timeout=60)
    return fleet


def _idle_redis(port: int, seconds: float) -> dict[str, Any]:
    """Redis commands over `seconds` with no load: the hubs' background traffic."""
    before = redis_commandstats(port)
    started = time.perf_counter()
    time.sleep(seconds)
    calls = calls_delta(redis_commandstats(port), before)
    return {"seconds": time.perf_counter() - started, "calls": calls}


_LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def _log_problems(hubs: dict[str, Child], sample: int = 5) -> dict[str, Any]:
    """Warnings and errors in the hubs' logs (they run at --log-level WARNING)."""
    problems: dict[str, Any] = {}
    for name, hub in hubs.items():
        try:
            lines = hub.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if _LOG_PROBLEM.search(line)]
        if bad:
            problems[name] = {"lines": len(bad), "sample": bad[:sample]}
    return problems


def _round_line(measured: dict[str, Any]) -> str:
    def fig(target: str) -> str:
        m = measured[target]
        return (f"{target} p50 {m['rtt_p50_us']:.0f} us, p99 {m['rtt_p99_us']:.0f} us, "
                f"{m['jobs_per_s']:.0f} jobs/s")

    first = "cross" if "cross" in measured else "hub"
    return " | ".join(fig(t) for t in (first, "local", "floor") if t in measured)


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
        cross = args.mode == "cross_instance"
        topology = TOPOLOGIES[args.mode](procs, env)
        fleets = [_fleet(procs, "hub-nodes", topology.node_url, "hub", args.nodes, args)]
        urls = {"floor": relay_url}
        hubs: dict[str, Child] = {}
        if cross:
            wait_directory(topology, args.nodes)
            # The local-mode figures of the same run: one hub, its own fleet.
            local = start_local(procs, _hub_env(env, "local"))
            fleets.append(_fleet(procs, "local-nodes", local.node_url, "hub", args.nodes, args,
                                 prefix="local"))
            urls |= {"local": local.client_url, "cross": topology.client_url}
            hubs = {**dict(zip(CROSS_HUB_IDS, topology.hubs, strict=True)),
                    "local": local.hubs[0]}
        else:
            urls["hub"] = topology.client_url
            hubs = {"hub": topology.hubs[0]}
        targets = list(urls)

        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]
            measured: dict[str, Any] = {}
            for target in order:
                redis_port = topology.redis_port if target == "cross" else None
                measured[target] = _loadgen(procs, target, urls[target], args,
                                            f"r{index}{target}.", redis_port)
                if redis_port is not None:
                    tp_window = measured[target]["redis"]["tp"]["seconds"]
                    measured["idle"] = _idle_redis(redis_port, tp_window)
            rounds.append(measured)
            print(f"  round {index + 1}/{args.rounds}: {_round_line(measured)}", flush=True)
        hub_rss: int | dict[str, int] = rss_kb(topology.hubs[0].pid)
        if cross:
            hub_rss = {name: rss_kb(hub.pid) for name, hub in hubs.items()}
        log_problems = _log_problems(hubs)
        if args.profile_hub:
            # The nodes go first: a hub with open sessions may not stop on SIGTERM.
            for fleet in fleets:
                procs.stop(fleet)
            for hub in hubs.values():
                hub.signal(signal.SIGTERM)
                hub.wait(timeout=30)
    result: dict[str, Any] = {"rounds": rounds, "hub_rss_kb_after": hub_rss}
    if cross:
        result["hub_log_problems"] = log_problems
    return result


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


def _redis_per_job(rounds: list[dict[str, Any]], phase: str, jobs: int) -> dict[str, Any]:
    """Redis calls per job of one phase of the cross runs, pooled over the rounds: raw,
    and net of the idle baseline (each round's idle rate times its window, per command)."""
    raw: Counter[str] = Counter()
    baseline: dict[str, float] = {}
    total_jobs = 0
    for r in rounds:
        window = r["cross"]["redis"][phase]
        raw.update(window["calls"])
        idle = r["idle"]
        for name, calls in idle["calls"].items():
            share = calls * window["seconds"] / idle["seconds"]
            baseline[name] = baseline.get(name, 0.0) + share
        total_jobs += jobs
    net = {name: max(0.0, raw[name] - baseline.get(name, 0.0)) / total_jobs
           for name in sorted(raw)}
    return {
        "total": sum(net.values()),
        "by_command": dict(sorted(net.items(), key=lambda item: -item[1])),
        "raw_total": sum(raw.values()) / total_jobs,
        "raw_by_command": {name: raw[name] / total_jobs for name in sorted(raw)},
        "sent": sum(v for name, v in net.items() if name not in SCRIPT_ONLY_COMMANDS),
        "jobs": total_jobs,
    }


def _summarize_cross(out: dict[str, Any], rounds: list[dict[str, Any]],
                     args: argparse.Namespace) -> None:
    for key in ("rtt_p50_us", "rtt_p99_us", "jobs_per_s"):
        out[key] = _median(rounds, "cross", key)
        out[f"local_{key}"] = _median(rounds, "local", key)
        out[f"floor_{key}"] = _median(rounds, "floor", key)
    out["rtt_p50_ratio"] = out["rtt_p50_us"] / out["floor_rtt_p50_us"]
    out["rtt_p99_ratio"] = out["rtt_p99_us"] / out["floor_rtt_p99_us"]
    out["throughput_ratio"] = out["jobs_per_s"] / out["floor_jobs_per_s"]
    out["cross_minus_local_rtt_p50_us"] = out["rtt_p50_us"] - out["local_rtt_p50_us"]
    out["cross_minus_local_rtt_p99_us"] = out["rtt_p99_us"] - out["local_rtt_p99_us"]
    out["cross_local_throughput_ratio"] = out["jobs_per_s"] / out["local_jobs_per_s"]
    tp = _redis_per_job(rounds, "tp", args.tp_jobs)
    rtt = _redis_per_job(rounds, "rtt", args.jobs)
    out["redis_ops_per_job"] = tp["total"]
    out["redis_ops_per_job_by_command"] = tp["by_command"]
    out["redis_commands_sent_per_job"] = tp["sent"]
    out["redis_ops_per_job_raw"] = tp["raw_total"]
    out["redis_ops_per_job_raw_by_command"] = tp["raw_by_command"]
    out["redis_ops_per_job_rtt"] = rtt["total"]
    out["redis_ops_per_job_rtt_by_command"] = rtt["by_command"]
    out["redis_commands_sent_per_job_rtt"] = rtt["sent"]
    idle_seconds = sum(r["idle"]["seconds"] for r in rounds)
    idle: Counter[str] = Counter()
    for r in rounds:
        idle.update(r["idle"]["calls"])
    out["redis_idle_ops_per_s"] = sum(idle.values()) / idle_seconds
    out["redis_idle_ops_per_s_by_command"] = {
        name: calls / idle_seconds for name, calls in sorted(idle.items())
    }
    out["targets"] = {
        "cross_rtt_p50<=local+500us": (
            out["cross_minus_local_rtt_p50_us"] <= TARGET_CROSS_P50_EXTRA_US
        ),
        "cross_jobs_per_s>=4000": out["jobs_per_s"] >= TARGET_CROSS_JOBS_PER_S,
    }


def summarize(dispatch: dict[str, Any] | None, memory: list[dict[str, Any]],
              args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode}
    if dispatch is not None and args.mode == "cross_instance":
        _summarize_cross(out, dispatch["rounds"], args)
        out["hub_log_problems"] = dispatch["hub_log_problems"]
        out["rounds"] = dispatch["rounds"]
        out["hub_rss_kb_after_load"] = dispatch["hub_rss_kb_after"]
    elif dispatch is not None:
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
    if "redis_ops_per_job" in out:
        _print_cross(out)
    elif "rtt_p50_us" in out:
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


def _print_cross(out: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    s = out["settings"]
    t = out["targets"]
    print(f"RTT: 1 in flight, {s['rtt_jobs']} jobs; throughput: {s['in_flight']} in flight, "
          f"{s['tp_jobs']} jobs; {s['nodes']} nodes x {s['max_concurrency']} slots")
    print(f"cross: client on hub {CROSS_HUB_IDS[0]}, nodes on hub {CROSS_HUB_IDS[1]}, one "
          f"Redis; local: one hub; floor: raw relay")
    print(f"{'':<16}{'cross':>10}{'local':>10}{'floor':>10}{'cross-local':>13}"
          f"{'cross/floor':>13}  target")
    print(f"{'rtt p50 (us)':<16}{out['rtt_p50_us']:>10.0f}{out['local_rtt_p50_us']:>10.0f}"
          f"{out['floor_rtt_p50_us']:>10.0f}{out['cross_minus_local_rtt_p50_us']:>+13.0f}"
          f"{out['rtt_p50_ratio']:>13.2f}  <= local + 500 us  "
          f"{ok(t['cross_rtt_p50<=local+500us'])}")
    print(f"{'rtt p99 (us)':<16}{out['rtt_p99_us']:>10.0f}{out['local_rtt_p99_us']:>10.0f}"
          f"{out['floor_rtt_p99_us']:>10.0f}{out['cross_minus_local_rtt_p99_us']:>+13.0f}"
          f"{out['rtt_p99_ratio']:>13.2f}")
    print(f"{'jobs/s':<16}{out['jobs_per_s']:>10.0f}{out['local_jobs_per_s']:>10.0f}"
          f"{out['floor_jobs_per_s']:>10.0f}{out['cross_local_throughput_ratio']:>12.2f}x"
          f"{out['throughput_ratio']:>13.2f}  >= 4000 jobs/s     "
          f"{ok(t['cross_jobs_per_s>=4000'])}")
    print()
    print(f"Redis commands per job (INFO commandstats; idle baseline of "
          f"{out['redis_idle_ops_per_s']:.1f} ops/s subtracted; counts include the")
    print("commands Lua scripts run, e.g. SEND_MANY's XADD and PEXPIRE, besides EVALSHA)")
    print(f"{'':<28}{'throughput':>12}{'rtt':>10}")
    print(f"{'total':<28}{out['redis_ops_per_job']:>12.3f}{out['redis_ops_per_job_rtt']:>10.3f}")
    print(f"{'  sent by the hubs':<28}{out['redis_commands_sent_per_job']:>12.3f}"
          f"{out['redis_commands_sent_per_job_rtt']:>10.3f}")
    print(f"{'  raw (no baseline)':<28}{out['redis_ops_per_job_raw']:>12.3f}")
    tp_cmds = out["redis_ops_per_job_by_command"]
    rtt_cmds = out["redis_ops_per_job_rtt_by_command"]
    shown = [n for n in set(tp_cmds) | set(rtt_cmds)
             if max(tp_cmds.get(n, 0.0), rtt_cmds.get(n, 0.0)) >= 0.0005]
    for name in sorted(shown, key=lambda n: (-tp_cmds.get(n, 0.0), n)):
        tag = " (in scripts)" if name in SCRIPT_ONLY_COMMANDS else ""
        print(f"{name + tag:<28}{tp_cmds.get(name, 0.0):>12.3f}{rtt_cmds.get(name, 0.0):>10.3f}")
    problems = out.get("hub_log_problems") or {}
    for name, found in problems.items():
        print(f"hub {name}: {found['lines']} warning/error log lines, e.g. {found['sample'][0]}")
    if not problems:
        print("hub logs: no warnings or errors")


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

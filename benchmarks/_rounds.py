"""The dispatch benchmark's latency and throughput rounds: the relay floor and the
hub(s) with their node fleets, one load generator process per measurement, and
the idle Redis baseline after each cross-hub measurement. In cross-instance mode
every round also measures the two Redis Streams hops alone on the run's own Redis
(`redis_hop.measure`, the `hop` target): the cross-hub round trip's floor."""

from __future__ import annotations

import argparse
import json
import re
import signal
import time
from typing import Any

from _auth import start_auth_hubs
from _procs import (
    Child,
    ProcGroup,
    calls_delta,
    free_port,
    http_get,
    redis_commandstats,
    rss_kb,
)
from _topology import CROSS_HUB_IDS, TOPOLOGIES, _hub_env, start_local, wait_directory
from redis_hop import measure as measure_two_hops

AUTH_NODE_PREFIX = "auth"


def _loadgen(procs: ProcGroup, target: str, url: str, args: argparse.Namespace,
             prefix: str, redis_port: int | None = None,
             peer_args: list[str] | None = None, cpu_pids: list[int] | None = None,
             fleet_pid: int | None = None) -> dict[str, Any]:
    extra: tuple[str, ...] = ("--redis-port", str(redis_port)) if redis_port is not None else ()
    if cpu_pids:
        extra += ("--cpu-pids", ",".join(map(str, cpu_pids)))
    if fleet_pid is not None:
        extra += ("--fleet-pid", str(fleet_pid))
    extra += tuple(peer_args or ())
    if args.auth and target != "floor":
        extra += ("--handshakes", str(args.handshakes))
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
           args: argparse.Namespace, prefix: str = "bench",
           peer_args: list[str] | None = None) -> Child:
    fleet = procs.spawn(
        name, "_nodes.py", "--url", url, "--mode", mode, "--count", str(count),
        "--max-concurrency", str(args.max_concurrency), "--prefix", prefix,
        *(peer_args or ()),
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
    line = " | ".join(fig(t) for t in (first, "local", "jwt", "tls", "floor") if t in measured)
    if "hop" in measured:
        line += f" | two hops p50 {measured['hop']['p50_us']:.0f} us"
    return line


def run_dispatch(args: argparse.Namespace) -> dict[str, Any]:
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        relay_port = free_port()
        relay = procs.spawn("relay", "relay_floor.py", "--port", str(relay_port))
        relay.expect("ready", timeout=30)
        relay_url = f"ws://127.0.0.1:{relay_port}"
        echo_fleet = _fleet(procs, "echo-nodes", relay_url, "echo", args.nodes, args)
        deadline = time.monotonic() + 30
        while json.loads(http_get(f"http://127.0.0.1:{relay_port}/healthz"))["nodes"] < args.nodes:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay never saw every echo node")
            time.sleep(0.05)

        env = {"NODEHUB_BENCH_PROFILE": args.profile_hub} if args.profile_hub else None
        cross = args.mode == "cross_instance"
        topology = TOPOLOGIES[args.mode](procs, env)
        fleets = [_fleet(procs, "hub-nodes", topology.node_url, "hub", args.nodes, args)]
        node_fleets = {"floor": echo_fleet, "cross" if cross else "hub": fleets[0]}
        urls = {"floor": relay_url}
        hubs: dict[str, Child] = {}
        if cross:
            wait_directory(topology, args.nodes)
            # The local-mode figures of the same run: one hub, its own fleet.
            local = start_local(procs, _hub_env(env, "local"))
            fleets.append(_fleet(procs, "local-nodes", local.node_url, "hub", args.nodes, args,
                                 prefix="local"))
            node_fleets["local"] = fleets[-1]
            urls |= {"local": local.client_url, "cross": topology.client_url}
            hubs = {**dict(zip(CROSS_HUB_IDS, topology.hubs, strict=True)),
                    "local": local.hubs[0]}
        else:
            urls["hub"] = topology.client_url
            hubs = {"hub": topology.hubs[0]}
        loadgen_args: dict[str, list[str]] = {}
        if args.auth:
            # JWT, and JWT with TLS, beside the plain hub of the same run.
            for auth_hub in start_auth_hubs(procs, AUTH_NODE_PREFIX):
                fleets.append(_fleet(
                    procs, f"{auth_hub.name}-nodes", auth_hub.url, "hub", args.nodes, args,
                    prefix=AUTH_NODE_PREFIX, peer_args=auth_hub.peer_args(auth_hub.node_token),
                ))
                node_fleets[auth_hub.name] = fleets[-1]
                urls[auth_hub.name] = auth_hub.url
                hubs[auth_hub.name] = auth_hub.hub
                loadgen_args[auth_hub.name] = auth_hub.peer_args(auth_hub.client_token)
        targets = list(urls)
        if cross:
            targets.append("hop")  # the two Redis hops alone, in the same rotation
        servers = {"floor": [relay.pid]} | {name: [hub.pid] for name, hub in hubs.items()}
        if cross:
            servers["cross"] = [hub.pid for hub in topology.hubs]

        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]
            measured: dict[str, Any] = {}
            for target in order:
                if target == "hop":
                    measured[target] = measure_two_hops(
                        procs, f"redis://127.0.0.1:{topology.redis_port}/0", tag=f"hop-{index}",
                        trips=args.jobs, warmup=args.warmup,
                    )
                    continue
                redis_port = topology.redis_port if target == "cross" else None
                measured[target] = _loadgen(procs, target, urls[target], args,
                                            f"r{index}{target}.", redis_port,
                                            loadgen_args.get(target), servers.get(target),
                                            node_fleets[target].pid)
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
    if cross or args.auth:
        result["hub_log_problems"] = log_problems
    return result

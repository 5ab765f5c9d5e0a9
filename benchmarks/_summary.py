"""The dispatch benchmark's results: medians over the rounds, ratios, Redis
commands per job, the targets, the settings and the machine (the JSON output)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections import Counter
from typing import Any

TARGET_P50_RATIO = 1.25
TARGET_P99_RATIO = 1.5
TARGET_TP_RATIO = 0.6
TARGET_KB_PER_NODE = 30.0
TARGET_MEMORY_N = 10_000
TARGET_CROSS_HOP_FLOORS = 2.0
"""Cross-hub RTT p50 at most the local hub's plus this many two-hop floors (the p50 of
`redis_hop.py`'s two Redis Streams hops on the run's own Redis, same rounds): what a
job crossing hubs may add is priced in the transport it crosses."""
TARGET_CROSS_TP_RATIO = 0.35
"""Cross-hub throughput at least this share of the relay floor's (same rounds)."""
TARGET_AUTH_NOISE = 0.10
"""With JWT, RTT p50 and throughput within 10% of the plain hub's."""
AUTH_TARGETS = ("jwt", "tls")

SCRIPT_ONLY_COMMANDS = frozenset((
    "set", "xadd", "pexpire", "time", "exists", "zadd", "zscore", "zrangebyscore", "hset",
    "hmget",
))
"""Commands the hubs run only inside their Lua scripts in the steady state
(hub/store/redis.py: the bindings' and job records' SETs run in BIND_MANY and
SAVE_MANY; SET, PEXPIRE and EXISTS are sent directly only when reaping a dead
hub's inbox, HMGET by `node_owner`), left out of `redis_commands_sent_per_job`."""


def _median(rounds: list[dict[str, Any]], target: str, key: str) -> float:
    return float(statistics.median(r[target][key] for r in rounds))


def _cpu(out: dict[str, Any], rounds: list[dict[str, Any]], target: str, prefix: str) -> None:
    """The server's CPU per job in the throughput phase, and the floor's (when measured)."""
    for key in ("server_cpu_us_per_job", "server_cpu_us_per_job_rtt", "peers_cpu_us_per_job"):
        name = key.removeprefix("server_")
        if all(key in r[target] for r in rounds):
            out[f"{prefix}{name}"] = _median(rounds, target, key)
        if prefix == "" and all(key in r["floor"] for r in rounds):
            out[f"floor_{name}"] = _median(rounds, "floor", key)


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
    _cpu(out, rounds, "cross", "")
    _cpu(out, rounds, "local", "local_")
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
    out["two_hop_p50_us"] = float(statistics.median(r["hop"]["p50_us"] for r in rounds))
    out["two_hop_p99_us"] = float(statistics.median(r["hop"]["p99_us"] for r in rounds))
    out["cross_minus_local_rtt_p50_in_two_hops"] = (
        out["cross_minus_local_rtt_p50_us"] / out["two_hop_p50_us"]
    )
    out["cross_rtt_p50_limit_us"] = (
        out["local_rtt_p50_us"] + TARGET_CROSS_HOP_FLOORS * out["two_hop_p50_us"]
    )
    out["targets"] = {
        "cross_rtt_p50<=local+2x_two_hop": out["rtt_p50_us"] <= out["cross_rtt_p50_limit_us"],
        "throughput_ratio>=0.35": out["throughput_ratio"] >= TARGET_CROSS_TP_RATIO,
    }


def _summarize_auth(out: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    """Each authenticating hub beside the plain one of the same rounds."""
    base = "hub" if "hub" in rounds[0] else "local"
    auth: dict[str, Any] = {"baseline": base}
    for target in (base, *AUTH_TARGETS):
        figures = {key: _median(rounds, target, key)
                   for key in ("rtt_p50_us", "rtt_p99_us", "jobs_per_s")}
        if all("server_cpu_us_per_job" in r[target] for r in rounds):
            figures["cpu_us_per_job"] = _median(rounds, target, "server_cpu_us_per_job")
        if "handshake_p50_us" in rounds[0][target]:
            figures["handshake_p50_us"] = _median(rounds, target, "handshake_p50_us")
            figures["handshake_mean_us"] = _median(rounds, target, "handshake_mean_us")
        auth[target] = figures
    for target in AUTH_TARGETS:
        figures = auth[target]
        figures["rtt_p50_ratio"] = figures["rtt_p50_us"] / auth[base]["rtt_p50_us"]
        figures["rtt_p99_ratio"] = figures["rtt_p99_us"] / auth[base]["rtt_p99_us"]
        figures["throughput_ratio"] = figures["jobs_per_s"] / auth[base]["jobs_per_s"]
        if "handshake_p50_us" in figures:
            figures["handshake_extra_us"] = (
                figures["handshake_p50_us"] - auth[base]["handshake_p50_us"]
            )
    jwt = auth["jwt"]
    auth["targets"] = {
        "jwt_rtt_p50_within_10%": abs(jwt["rtt_p50_ratio"] - 1) <= TARGET_AUTH_NOISE,
        "jwt_jobs_per_s_within_10%": jwt["throughput_ratio"] >= 1 - TARGET_AUTH_NOISE,
    }
    out["auth"] = auth


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
        _cpu(out, rounds, "hub", "")
        out["targets"] = {
            "rtt_p50_ratio<=1.25": out["rtt_p50_ratio"] <= TARGET_P50_RATIO,
            "rtt_p99_ratio<=1.5": out["rtt_p99_ratio"] <= TARGET_P99_RATIO,
            "throughput_ratio>=0.6": out["throughput_ratio"] >= TARGET_TP_RATIO,
        }
        out["rounds"] = rounds
        out["hub_rss_kb_after_load"] = dispatch["hub_rss_kb_after"]
    if dispatch is not None and getattr(args, "auth", False):
        _summarize_auth(out, dispatch["rounds"])
        out.setdefault("hub_log_problems", dispatch.get("hub_log_problems", {}))
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
        "max_concurrency": args.max_concurrency, "auth": getattr(args, "auth", False),
        "handshakes": getattr(args, "handshakes", 0),
        "hub_log_level": getattr(args, "hub_log_level", "WARNING"),
        "job_log_level": getattr(args, "job_log_level", None),
    }
    out["machine"] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg": os.getloadavg(),
    }
    return out

"""Where each microsecond of a job goes: the hub's per-job cost table, sampled.

A local-mode hub, its no-op node fleet and a load generator are started as in
`benchmarks/dispatch.py` (separate processes, uvloop). While the load
generator keeps `--in-flight` jobs in flight, py-spy (the `bench` extra)
samples the hub for `--seconds`; over the same window the hub's CPU time
(/proc/PID/schedstat) and its finished jobs (`/metrics`) give its CPU per
job. Every sample goes to the first stage of the hot path that its stack
names, looking from the innermost frame out (the table's rows, in
`CATEGORIES`), and a row's cost per job is its share of the samples times the
CPU per job. `Runner.run` alone is the event loop's own C code (uvloop's
polling, socket reads, callbacks, task steps): py-spy sees no deeper.

With `--tree PATH` the hub runs from another checkout (`PYTHONPATH`; the
harness, nodes and load generator stay this tree's): run it once on an older
tree and once on this one for a before/after table (`--compare A.json`
prints both). Rounds (`--rounds`) are separate hubs; the table gives the
median of each row.

Usage:
    python benchmarks/job_cost.py [--rounds 3] [--seconds 10] [--in-flight 64]
        [--tree PATH] [--json PATH] [--compare BEFORE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _procs import ProcGroup, cpu_ns, free_port, http_get, wait_http
from _rounds import _fleet
from _topology import HUB_LOG_FLAGS, HUB_TIMING_FLAGS

HERE = Path(__file__).resolve().parent

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("write", r"WsLink\._write|WsLink\._flush|wslink\.py.*_put|writelines"),
    ("encode", r"Codec\.encode|frame_header|Frame\.serialize|Protocol\.send_(text|binary|frame)"),
    ("decode", r"Codec\.decode|_decoder|server\.py.*<lambda>"),
    ("ingress checks", r"IngressRules|ingress|messages\.py.*_check|HeldBytes|held_bytes"),
    ("auth/tenant/fairness", r"FairTime|fair_time|[Pp]rincipal|Gate\.|auth\.py|share_key"),
    ("archive", r"JobArchive|to_record|RecordShelf|save_jobs|archive\.py"),
    ("metrics", r"metrics\.py|Counter\.inc|Series\.observe|Gauge\."),
    ("stats", r"recent_jobs|RecentJobs|FleetStats|fleet_stats"),
    ("fleet view (load)", r"FleetView|with_running|fleet_view|Snapshot\._make"),
    ("select", r"selector\.py|Ring\.|snapshot\.py.*_members|Snapshot\.get|Attempts\.select"),
    ("deadlines", r"DeadlineQueue|DeadlineLoop|timers\.py|deadline_loop|_forget_deadlines|"
                  r"watch_overall|StrandedAttempts"),
    ("log", r"loguru|JobLog|job_log"),
    ("redis", r"hub/store/(resp|redis|replies|scripts)\.py|RespPipe"),
    ("cluster", r"hub/cluster/|envelopes\.py|eager_task"),
    ("admission", r"Admission\.|Requirements|admission\.py|Binder|bind_request|ExpiringDict"),
    ("bookkeeping", r"Job\.|job_state\.py|Attempts\.|JobTable|NodeRegistry|NodeOwner|"
                    r"NodeEvents|ClientDelivery|SubmitReply|Submits\.|JobHome|QueuePump|"
                    r"Pending|Watcher|Assignment"),
    ("sessions", r"sessions\.py|NodeWatchdog"),
    ("websocket read", r"websockets/|_Connection\.|server\.py.*(more|next_message)"),
    ("frame loop", r"WsServer\._handle"),
    ("event loop (C)", r"Runner\.run|asyncio/|uvloop"),
)
"""Row, and the regular expression a py-spy frame (`function (file:line)`) matches."""
_RULES = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]


def categorize(raw: str) -> tuple[Counter[str], int]:
    """Samples per row of py-spy's raw (collapsed) output; and the total."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        samples = int(n)
        total += samples
        for frame in reversed(stack.split(";")):
            row = next((name for name, rule in _RULES if rule.search(frame)), None)
            if row is not None:
                counts[row] += samples
                break
        else:
            counts["other"] += samples
    return counts, total


def _jobs_done(http_url: str) -> float:
    total = 0.0
    for line in http_get(f"{http_url}/metrics").decode().splitlines():
        if line.startswith("nodehub_jobs_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def one_round(args: argparse.Namespace, index: int) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    env = {"PYTHONPATH": str(Path(args.tree).resolve())} if args.tree else None
    with ProcGroup(keep_logs=False) as procs, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        hub = procs.spawn(
            "hub", "_hub_proc.py", "serve", "--host", "127.0.0.1", "--port", str(port),
            *HUB_LOG_FLAGS, *HUB_TIMING_FLAGS, extra_env=env,
        )
        http_url = f"http://127.0.0.1:{port}"
        wait_http(f"{http_url}/healthz", timeout=30)
        url = f"ws://127.0.0.1:{port}"
        _fleet(procs, "nodes", url, "hub", args.nodes, args)
        # Far more jobs than the window takes: the load is steady throughout.
        load = procs.spawn(
            "load", "_loadgen.py", "--url", url, "--target", "hub", "--warmup", "200",
            "--rtt-jobs", "10", "--tp-jobs", "100000000", "--in-flight", str(args.in_flight),
            "--prefix", f"c{index}.", "--timeout", "3600",
        )
        time.sleep(args.settle)
        out = Path(tmp) / "hub.raw"
        jobs_before, cpu_before = _jobs_done(http_url), cpu_ns([hub.pid])
        started = time.perf_counter()
        subprocess.run(
            [spy, "record", "-p", str(hub.pid), "-d", str(args.seconds), "-r", str(args.rate),
             "--function", "--nonblocking", "--format", "raw", "-o", str(out)],
            check=True, capture_output=True,
        )
        elapsed = time.perf_counter() - started
        jobs = _jobs_done(http_url) - jobs_before
        cpu_us = (cpu_ns([hub.pid]) - cpu_before) / 1000
        procs.stop(load)
        counts, total = categorize(out.read_text())
    per_job = cpu_us / jobs
    rows = {name: per_job * counts[name] / total for name in (*dict(CATEGORIES), "other")}
    return {"jobs_per_s": jobs / elapsed, "cpu_us_per_job": per_job,
            "cpu_share": cpu_us / 1e6 / elapsed, "samples": total, "rows_us": rows}


def summarize(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    rows = {name: median([r["rows_us"][name] for r in rounds]) for name in rounds[0]["rows_us"]}
    return {
        "tree": str(Path(args.tree).resolve()) if args.tree else str(HERE.parent),
        "cpu_us_per_job": median([r["cpu_us_per_job"] for r in rounds]),
        "jobs_per_s": median([r["jobs_per_s"] for r in rounds]),
        "rows_us": rows,
        "rounds": rounds,
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "rate": args.rate,
                     "in_flight": args.in_flight, "nodes": args.nodes},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg": os.getloadavg()},
    }


def print_table(out: dict[str, Any], before: dict[str, Any] | None) -> None:
    print()
    print(f"hub CPU per job, local mode, {out['settings']['in_flight']} in flight "
          f"(medians of {out['settings']['rounds']} rounds; us per job)")
    head = f"{'stage':<24}" + (f"{'before':>10}" if before else "") + f"{'now':>10}"
    print(head)
    for name in out["rows_us"]:
        old = f"{before['rows_us'].get(name, 0.0):>10.1f}" if before else ""
        print(f"{name:<24}{old}{out['rows_us'][name]:>10.1f}")
    old = f"{before['cpu_us_per_job']:>10.1f}" if before else ""
    print(f"{'total':<24}{old}{out['cpu_us_per_job']:>10.1f}")
    old = f"{before['jobs_per_s']:>10.0f}" if before else ""
    print(f"{'jobs/s (sampled)':<24}{old}{out['jobs_per_s']:>10.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="sampled window per round")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds of load before the window")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--tree", help="run the hub from this checkout")
    parser.add_argument("--compare", metavar="JSON", help="an earlier run's JSON: before")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(args, index))
        r = rounds[-1]
        print(f"  round {index + 1}/{args.rounds}: {r['cpu_us_per_job']:.1f} us/job, "
              f"{r['jobs_per_s']:.0f} jobs/s, {r['samples']} samples", flush=True)
    out = summarize(rounds, args)
    before = json.loads(Path(args.compare).read_text()) if args.compare else None
    print_table(out, before)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

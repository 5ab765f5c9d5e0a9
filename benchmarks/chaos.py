"""Chaos ledger: every submit accounted for under faults, against real processes.

Named scenarios (benchmarks/_chaos_scenarios.py), each in a fresh world: a
real `redis-server`, two real hub processes (`hub serve`, cross-instance mode,
short timers), agent SDK nodes in their own processes (benchmarks/_chaos_nodes.py),
and `HubClient`s in this process whose every submit is kept in a ledger
(benchmarks/_chaos_ledger.py):

| scenario | fault |
|---|---|
| no_fault | none: the baseline, run first (node_kill's world and load) |
| node_kill | a node process SIGKILLed mid-job |
| node_flap | nodes leave their hub and come back on the other, again and again |
| home_kill | the jobs' home SIGKILLed (jobs finished after it died, others running) |
| owner_kill | the hub owning the nodes SIGKILLed under load |
| hub_restart | the jobs' home SIGKILLed and restarted at once under the same id |
| redis_kill | Redis SIGKILLed and restarted empty under load |
| redis_pause | Redis frozen 5 s (SIGSTOP, SIGCONT) under load |
| rolling_restart | both hubs drained (SIGTERM) and restarted, one after the other, under load |
| same_request_two_hubs | each request id on both hubs at once, half for a pair nobody serves |
| hub_freeze_short | a hub frozen 1.5 s (SIGSTOP, SIGCONT): excluded, not declared dead |
| hub_freeze | a hub frozen 5 s: declared dead, its inbox reaped, its nodes taken; then it wakes |
| hub_freeze_defaults | a hub frozen 5 s with the default timers (excluded, not buried) |
| rolling_restart_long | a rolling restart with 2 s jobs (longer than `hub_timeout_ms` / 3) |
| drain_then_resubmit | a draining hub's cut-off and waiting jobs resubmitted on the other |
| redis_freeze_15s | Redis frozen 15 s with nodes on both hubs: every hub sees every node again |
| hub_freeze_buried_defaults | a hub frozen 36 s, default timers: buried; it wakes (no test) |

Per scenario it prints, and writes with `--json PATH` as `{"scenarios": [...]}`:
submits, accepted, rejected (by code), results ok / failed (by code),
unanswered, duplicate results, re-runs of a finished job, leaked slots, wall
time, and the wall time against the baseline's (`vs base`: the same world and
load without a fault, measured in the same run). Targets: 0 unanswered, 0
duplicate results, 0 re-runs of a finished job, 0 leaked slots in every
scenario; rolling_restart, rolling_restart_long, drain_then_resubmit: 0 jobs failed.

Usage:
    python benchmarks/chaos.py [--quick] [--scenario NAME ...] [--seed 1] [--json PATH]
        [--keep-logs]

`--quick` runs every scenario small enough to finish within 5 minutes on a
2-core machine; without it the sizes are ten times larger (home_kill: 600
finished + 100 running jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _chaos_ledger import FIELDS
from _chaos_scenarios import BASELINE, FULL, QUICK, SCENARIOS, Sizes
from _chaos_world import World
from _procs import ProcGroup, install_exit_on_sigterm

TARGETS = ("unanswered", "duplicate_results", "reruns", "leaked_slots")


def run_scenario(name: str, sizes: Sizes, seed: int, keep_logs: bool = False) -> dict[str, Any]:
    """One scenario in a fresh world; its summary (with `error` if it broke)."""
    program = shutil.which("redis-server")
    if program is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    rng = random.Random(f"{seed}:{name}")
    with ProcGroup(keep_logs=keep_logs) as procs:
        world = World(procs, redis_program=program, prefix=f"chaos-{uuid.uuid4().hex[:8]}")
        world.start_redis()
        started = time.monotonic()
        try:
            summary = asyncio.run(SCENARIOS[name](world, sizes, rng))
            if keep_logs:
                events = Path(procs.dir) / "executions.jsonl"
                events.write_text("".join(json.dumps(e) + "\n" for e in world.collect()))
                print(f"  logs of {name}: {procs.dir}", file=sys.stderr)
            return summary
        except Exception as exc:
            if keep_logs:
                print(f"  logs of {name}: {procs.dir}", file=sys.stderr)
            return {"name": name, "error": repr(exc), "seconds": time.monotonic() - started}


def met(summary: dict[str, Any]) -> bool:
    if "error" in summary:
        return False
    if any(summary[field] for field in TARGETS):
        return False
    no_failure = ("rolling_restart", "rolling_restart_long", "drain_then_resubmit")
    return not (
        summary["name"] in no_failure and (summary["results_failed"] or summary["rejected"])
    )


def print_table(results: list[dict[str, Any]]) -> None:
    base = next((r["seconds"] for r in results if r["name"] == BASELINE and "error" not in r),
                None)
    header = (f"{'scenario':<22}{'submits':>8}{'accepted':>9}{'ok':>7}{'unans.':>7}"
              f"{'dup.':>5}{'reruns':>7}{'leaked':>7}{'s':>7}{'vs base':>8}  rejected / failed")
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['name']:<22} ERROR {r['error']}")
            continue
        codes = ", ".join(
            [f"rejected {k}={v}" for k, v in r["rejected"].items()]
            + [f"failed {k}={v}" for k, v in r["results_failed"].items()]
        )
        flag = "" if met(r) else "  <-- MISSED"
        ratio = f"{r['seconds'] / base:.1f}x" if base else "-"
        print(f"{r['name']:<22}{r['submits']:>8}{r['accepted']:>9}{r['results_ok']:>7}"
              f"{r['unanswered']:>7}{r['duplicate_results']:>5}{r['reruns']:>7}"
              f"{r['leaked_slots']:>7}{r['seconds']:>7.1f}{ratio:>8}  {codes or '-'}{flag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (within 5 minutes)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only these (repeatable; default all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    install_exit_on_sigterm()
    sizes = QUICK if args.quick else FULL
    results = []
    names = args.scenario or list(SCENARIOS)
    if BASELINE not in names:
        names = [BASELINE, *names]  # every run measures its baseline
    for name in names:
        print(f"  {name} ...", flush=True)
        results.append(run_scenario(name, sizes, args.seed, keep_logs=args.keep_logs))
    print()
    print(f"chaos ledger ({'quick' if args.quick else 'full'} sizes, seed {args.seed})")
    print_table(results)
    all_met = all(met(r) for r in results)
    print(f"targets (0 unanswered, duplicates, re-runs, leaked slots; rolling restart: "
          f"0 failed): {'met' if all_met else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "scenarios": [{k: r[k] for k in FIELDS if k in r} | {
                k: r[k] for k in ("error", "rerun_keys", "first_answers") if r.get(k)
            } for r in results],
            "quick": args.quick, "seed": args.seed, "targets_met": all_met,
        }, indent=2) + "\n")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Live speech sessions on one hub: audio ingest against a floor, real-time sessions,
cut-to-result overhead against a plain submit, memory per idle session.

Everything runs in separate processes on uvloop, over real sockets, speaking
MessagePack (`hub.v1.msgpack`: audio as `bin`): the hub (`hub serve`, local
mode, via benchmarks/_hub_proc.py), minimal raw-websockets nodes
(benchmarks/_live_nodes.py: `job_accept` at once, `job_result` after a
simulated compute), load generators (benchmarks/_live_load.py) and the floor
(benchmarks/_live_floor.py). On a machine with two cores or more, the hub (or
the floor) is pinned alone to core 0 and every other process of the benchmark
to the other core(s) (`--no-pin`: no pinning); the output says which.

Phases (`--phases`, all by default):

- ingest: `--ingest-conns` connections (one session each, `pause_ms: 0`,
  `max_utterance_ms: 600000`: cut only by the default `max_utterance_bytes`,
  one cut every 164 frames, answered at once by two nodes) write 100 ms PCM
  chunks (3,200 bytes) as fast as their sockets take them; the hub's
  `nodehub_audio_bytes_total` / 3,200 over a `--ingest-window` after a warmup
  is the frames it took per second. The floor, measured in the same run with
  the same load: a raw websockets server with the hub's settings that decodes
  each frame with msgspec (MessagePack) and counts it (`GET /count`). Rounds
  alternate which goes first; the medians of the rounds are reported, and
  the server's CPU share over each window (a floor under 100% of its core
  means the load, not the floor, was the limit).
- realtime: steps of S sessions (`--rt-steps`), a fresh hub each, every
  session its own connection, writing a 100 ms chunk every 100 ms at its own
  phase, utterances of 10-20 chunks (1-2 s, `is_final` on the last), nodes
  answering after `--compute-ms`. Cut lag: from writing an utterance's final
  chunk to reading its `utterance_cut`. A step is sustained when the cut lag
  p99 (after `--rt-warmup` s) is under 100 ms and nothing fell behind: every
  utterance cut and answered ok in order, every session closed cleanly at the
  end, the hub took every frame, and the load generators themselves kept
  their schedule (chunks written p99 < `--max-load-late-ms` late). It steps up
  until a step is not sustained; `sessions_realtime` is the largest sustained
  step (with `--rt-repeats N`, the median of N such searches). A step that is
  not sustained is tried again: once whatever happened, and up to `--rt-tries`
  times in all while others' processes took more than `--contended` of the
  hub's core (the machine is shared); the last try decides.
- overhead: one session, nodes answering at once; each round one utterance
  (10 chunks: 9 written, a 5 ms pause, then the final chunk, timed to its
  `utterance_result`: the hub's cut-to-result with no compute to subtract),
  one plain `submit` (payload "x", timed to its `result`) and one `submit`
  carrying the same audio as its payload, in rotating order, one in flight.
- memory: a fresh hub and one node; its VmRSS after a full collection, then
  `--memory-sessions` idle sessions (opened, never sent any audio), collection,
  VmRSS again: (after - before) / sessions. Three variants, each on a fresh
  hub: one session per connection (`idle_session_kb`: the session and the
  connection it came on), the same number of connections with no session
  (what a connection alone costs; the difference is `session_state_kb`), and
  `--memory-per-conn` sessions per connection.

Goals: ingest >= 0.5x the floor; >= 1,000 real-time sessions per hub process;
overhead p50 <= 1.3x a plain submit's round trip; <= 16 KB per idle session.
With `--profile`, each phase whose goal is missed (`--profile-all`: every phase)
runs again with py-spy on the hub (native frames too: the garbage collector shows
as itself; tracemalloc for memory) and the top entries are printed and saved.

Usage:
    python benchmarks/live.py [--quick] [--phases ingest,realtime,overhead,memory]
        [--rt-steps 250,500,1000,...] [--profile [--profile-all]] [--no-pin]
        [--keep-logs] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _live_phases import (
    Cpus,
    profile_ingest,
    profile_memory,
    profile_realtime,
    run_ingest,
    run_memory,
    run_overhead,
    run_realtime,
)
from _procs import ProcGroup, install_exit_on_sigterm, raise_nofile

GOALS = {
    "ingest_vs_floor": 0.5,
    "sessions_realtime": 1000,
    "overhead_vs_submit_p50": 1.3,
    "idle_session_kb": 16.0,
}
PHASES = ("ingest", "overhead", "realtime", "memory")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows, fewer rounds and steps (under 3 minutes)")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--generators", type=int, default=2,
                        help="load generator processes (ingest, realtime)")
    parser.add_argument("--ingest-conns", type=int, default=32)
    parser.add_argument("--ingest-rounds", type=int)
    parser.add_argument("--ingest-window", type=float)
    parser.add_argument("--ingest-warmup", type=float, default=2.0)
    parser.add_argument("--rt-steps", help="comma-separated session counts, stepping up")
    parser.add_argument("--rt-duration", type=float, help="seconds of streaming per step")
    parser.add_argument("--rt-warmup", type=float, default=2.0,
                        help="seconds at the start of a step left out of the figures")
    parser.add_argument("--rt-nodes", type=int, default=4)
    parser.add_argument("--rt-slots", type=int, default=256)
    parser.add_argument("--rt-sessions-per-conn", type=int, default=1)
    parser.add_argument("--rt-repeats", type=int, default=1,
                        help="real-time searches; sessions_realtime is their median")
    parser.add_argument("--rt-tries", type=int,
                        help="tries of a step that is not sustained (default 3, quick 2)")
    parser.add_argument("--contended", type=float, default=0.10,
                        help="others' share of the hub's core past which a try was contended")
    parser.add_argument("--rt-refine", action=argparse.BooleanOptionalAction, default=None,
                        help="try the middle of the last gap (default: full run)")
    parser.add_argument("--compute-ms", type=float, default=100.0,
                        help="realtime: the nodes' simulated compute per utterance")
    parser.add_argument("--min-chunks", type=int, default=10)
    parser.add_argument("--max-chunks", type=int, default=20)
    parser.add_argument("--max-cut-lag-ms", type=float, default=100.0)
    parser.add_argument("--max-load-late-ms", type=float, default=50.0)
    parser.add_argument("--overhead-count", type=int)
    parser.add_argument("--overhead-warmup", type=int, default=50)
    parser.add_argument("--overhead-chunks", type=int, default=10)
    parser.add_argument("--memory-sessions", type=int)
    parser.add_argument("--memory-per-conn", type=int, default=64,
                        help="the shared-connection variant (the hub's default limit)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy (tracemalloc for memory) on the hub in each missed phase")
    parser.add_argument("--profile-all", action="store_true",
                        help="with --profile: every phase, met or not (realtime: at the first "
                             "step not sustained)")
    parser.add_argument("--profile-dir", help="where the profiles go (default: a temp dir)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "ingest_rounds": 1 if quick else 3,
        "ingest_window": 4.0 if quick else 10.0,
        "rt_steps": "500,1000,1500,2000,2500,3000" if quick
        else "250,500,1000,1500,2000,2500,3000,3500,4000,5000",
        "rt_duration": 8.0 if quick else 20.0,
        "rt_tries": 2 if quick else 3,
        "rt_refine": not quick,
        "overhead_count": 300 if quick else 2000,
        "memory_sessions": 2000 if quick else 5000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.rt_steps = [int(x) for x in str(args.rt_steps).split(",") if x.strip()]
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def machine(cpus: Cpus) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "pinning": cpus.describe(),
    }


def summarize(args: argparse.Namespace, results: dict[str, Any],
              info: dict[str, Any], seconds: float) -> dict[str, Any]:
    ingest, overhead = results.get("ingest"), results.get("overhead")
    realtime, memory = results.get("realtime"), results.get("memory")
    out: dict[str, Any] = {
        "benchmark": "live",
        "ingest_frames_per_s": ingest and ingest["hub_frames_per_s"],
        "floor_frames_per_s": ingest and ingest["floor_frames_per_s"],
        "ingest_vs_floor": ingest and ingest["ratio"],
        "sessions_realtime": realtime and realtime["sessions_realtime"],
        "overhead_p50_ms": overhead and overhead["overhead_p50_ms"],
        "overhead_p99_ms": overhead and overhead["overhead_p99_ms"],
        "submit_rtt_p50_ms": overhead and overhead["submit_rtt_p50_ms"],
        "submit_rtt_p99_ms": overhead and overhead["submit_rtt_p99_ms"],
        "overhead_vs_submit_p50": overhead and overhead["ratio_p50"],
        "idle_session_kb": memory and memory["idle_session_kb"],
        "goals": GOALS,
        # Beside the goals' figures: the same ingest per second of the server's own CPU
        # (others' processes take a varying share of its core), the submit carrying the
        # same audio, and an idle session's memory without its connection's.
        "ingest_vs_floor_per_cpu_s": ingest and ingest["ratio_per_cpu_s"],
        "audio_submit_rtt_p50_ms": overhead and overhead["audio_submit_rtt_p50_ms"],
        "idle_session_state_kb": memory and memory["session_state_kb"],
        "shared_connection_session_kb": memory and memory["shared_connection_session_kb"],
    }
    met: dict[str, bool | None] = {}
    for key, goal in GOALS.items():
        value = out[key]
        if value is None:
            met[key] = None
        elif key in ("overhead_vs_submit_p50", "idle_session_kb"):
            met[key] = value <= goal
        else:
            met[key] = value >= goal
    out["met"] = met
    out["detail"] = results
    out["machine"] = {**info, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    out["settings"] = {
        "quick": args.quick, "phases": args.phases, "generators": args.generators,
        "ingest": {"conns": args.ingest_conns, "rounds": args.ingest_rounds,
                   "window_s": args.ingest_window, "warmup_s": args.ingest_warmup,
                   "chunk_bytes": 3200, "pause_ms": 0, "max_utterance_ms": 600000},
        "realtime": {"steps": args.rt_steps, "duration_s": args.rt_duration,
                     "warmup_s": args.rt_warmup, "nodes": args.rt_nodes,
                     "slots": args.rt_slots, "compute_ms": args.compute_ms,
                     "chunks_per_utterance": [args.min_chunks, args.max_chunks],
                     "sessions_per_conn": args.rt_sessions_per_conn,
                     "max_cut_lag_ms": args.max_cut_lag_ms,
                     "max_load_late_ms": args.max_load_late_ms,
                     "tries": args.rt_tries, "contended": args.contended,
                     "repeats": args.rt_repeats,
                     "refine": args.rt_refine},
        "overhead": {"rounds": args.overhead_count, "warmup": args.overhead_warmup,
                     "chunks": args.overhead_chunks},
        "memory": {"sessions": args.memory_sessions, "per_conn": args.memory_per_conn},
        "seconds": round(seconds, 1),
    }
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(out: dict[str, Any]) -> None:
    m, d, met = out["machine"], out["detail"], out["met"]

    def verdict(key: str) -> str:
        flag = met.get(key)
        return "" if flag is None else ("met" if flag else "MISSED")

    print()
    print(f"live sessions benchmark: {m['cpus']} CPUs ({m['cpu_model']}), shared and noisy: "
          f"load average {m['loadavg_start'][0]} at the start, {m['loadavg_end'][0]} at the end")
    print(f"  {m['pinning']}")
    print(f"{'figure':<44}{'value':>12}  {'goal':<18}")
    rows = [
        ("ingest: hub frames/s (100 ms chunks)", _fmt(out["ingest_frames_per_s"], ",.0f"), "", ""),
        ("ingest: floor frames/s", _fmt(out["floor_frames_per_s"], ",.0f"), "", ""),
        ("ingest: hub / floor", _fmt(out["ingest_vs_floor"], ".2f"), ">= 0.5",
         verdict("ingest_vs_floor")),
        ("real-time sessions (cut lag p99 < 100 ms)", _fmt(out["sessions_realtime"], ","),
         ">= 1,000", verdict("sessions_realtime")),
        ("overhead: cut-to-result p50 (ms)", _fmt(out["overhead_p50_ms"], ".3f"), "", ""),
        ("overhead: cut-to-result p99 (ms)", _fmt(out["overhead_p99_ms"], ".3f"), "", ""),
        ("plain submit round trip p50 (ms)", _fmt(out["submit_rtt_p50_ms"], ".3f"), "", ""),
        ("plain submit round trip p99 (ms)", _fmt(out["submit_rtt_p99_ms"], ".3f"), "", ""),
        ("overhead p50 / submit p50", _fmt(out["overhead_vs_submit_p50"], ".2f"), "<= 1.3",
         verdict("overhead_vs_submit_p50")),
        ("idle session, own connection (KB)", _fmt(out["idle_session_kb"], ".1f"), "<= 16",
         verdict("idle_session_kb")),
    ]
    for name, value, goal, flag in rows:
        print(f"{name:<44}{value:>12}  {goal:<10}{flag}")
    if d.get("ingest"):
        ing = d["ingest"]
        print("\ningest rounds (frames/s; cpu: the server's share of its core, others: what "
              "others' processes took of it; /cpu-s: frames a second of the server's CPU):")
        for i, r in enumerate(ing["rounds"], 1):
            cells = []
            for target in ("hub", "floor"):
                one = r[target]
                cpu = one["server_cpu"]
                cells.append(
                    f"{target} {one['frames_per_s']:>9,.0f} (cpu {cpu['cpu_share']:.2f}, others "
                    f"{_fmt(cpu.get('others_on_its_core'), '.2f')}, "
                    f"/cpu-s {_fmt(one['frames_per_cpu_s'], ',.0f')})"
                )
            print(f"  {i}: {'   '.join(cells)}   {r['ratio']:.2f}x")
        print(f"  medians: hub {ing['hub_frames_per_s']:,.0f}, floor "
              f"{ing['floor_frames_per_s']:,.0f} frames/s ({_fmt(ing['ratio'], '.2f')}x); per "
              f"CPU-second: hub {ing['hub_frames_per_cpu_s']:,.0f}, floor "
              f"{ing['floor_frames_per_cpu_s']:,.0f} ({_fmt(ing['ratio_per_cpu_s'], '.2f')}x)")
    if d.get("overhead"):
        o = d["overhead"]
        print(f"\noverhead ({o['rounds']} rounds, {o['utterance_chunks']}-chunk utterances of "
              f"{o['utterance_bytes']:,} bytes, nodes answering at once):")
        print(f"  utterance final chunk -> utterance_cut   p50 {_fmt(o['cut_lag_p50_ms'], '.3f')}"
              f"  p99 {_fmt(o['cut_lag_p99_ms'], '.3f')} ms")
        print(f"  utterance final chunk -> result          p50 {_fmt(o['overhead_p50_ms'], '.3f')}"
              f"  p99 {_fmt(o['overhead_p99_ms'], '.3f')} ms")
        print(f"  plain submit -> result                   p50 "
              f"{_fmt(o['submit_rtt_p50_ms'], '.3f')}  p99 "
              f"{_fmt(o['submit_rtt_p99_ms'], '.3f')} ms")
        print(f"  submit with the same audio -> result     p50 "
              f"{_fmt(o['audio_submit_rtt_p50_ms'], '.3f')}  p99 "
              f"{_fmt(o['audio_submit_rtt_p99_ms'], '.3f')} ms")
    if d.get("realtime"):
        rt = d["realtime"]
        print("\nreal-time steps (ms; cut: final chunk written -> utterance_cut read; res: "
              "-> utterance_result read, minus the compute, the nodes' own timer lateness "
              "included (they share the load's core); hub cpu: its share of its core, "
              "others: the share others' processes took of it; late: the load's own "
              "lateness):")
        if len(rt["searches"]) > 1:
            print(f"  {len(rt['searches'])} searches: {rt['per_search']} sessions; the "
                  f"median: {rt['sessions_realtime']}")
        print(f"  {'sessions':>8}{'cut p50':>9}{'cut p99':>9}{'cut max':>9}{'res p50':>9}"
              f"{'res p99':>9}{'hub cpu':>9}{'others':>8}{'late p99':>9}{'utts':>8}  verdict")
        steps = [(i, s) for i, search in enumerate(rt["searches"], 1) for s in search["steps"]]
        for i, s in steps:
            tag = (f" (try {s['try']})" if s.get("try", 1) > 1 else "") + (
                " (refine)" if s.get("refine") else "") + (
                f" [search {i}]" if len(rt["searches"]) > 1 else "")
            verdict_text = "sustained" if s["sustained"] else "; ".join(s["why_not"])
            print(f"  {s['sessions']:>8}{_fmt(s['cut_lag_p50_ms'], '.1f'):>9}"
                  f"{_fmt(s['cut_lag_p99_ms'], '.1f'):>9}{_fmt(s['cut_lag_max_ms'], '.0f'):>9}"
                  f"{_fmt(s['result_overhead_p50_ms'], '.1f'):>9}"
                  f"{_fmt(s['result_overhead_p99_ms'], '.1f'):>9}"
                  f"{s['hub_cpu']['cpu_share']:>9.2f}"
                  f"{_fmt(s['hub_cpu'].get('others_on_its_core'), '.2f'):>8}"
                  f"{_fmt(s['load_late_p99_ms'], '.1f'):>9}"
                  f"{s['utterances']:>8}  {verdict_text}{tag}")
    if d.get("memory"):
        mem = d["memory"]
        own, conn = mem["own_connection"], mem["connections_only"]
        shared = mem["shared_connections"]
        print("\nmemory (idle: opened, no audio ever sent; VmRSS after a full collection):")
        print(f"  {own['sessions']} sessions, one connection each: {own['kb_each']:.2f} KB a "
              f"session ({own['rss_before_kb']:,} -> {own['rss_after_kb']:,} KB)")
        print(f"  {conn['connections']} connections, no session:   {conn['kb_each']:.2f} KB a "
              f"connection -> a session's own state: {mem['session_state_kb']:.2f} KB")
        print(f"  {shared['sessions']} sessions, {shared['per_connection']} a connection: "
              f"{shared['kb_each']:.2f} KB a session")
    for phase, profile in (d.get("profiles") or {}).items():
        print(f"\nprofile of the hub under {phase}:")
        if "own_pct" in profile:
            print(f"  {profile['samples']} samples; top by own time (%):")
            for name, share in profile["own_pct"][:15]:
                print(f"    {share:>5.1f}  {name}")
            print("  top Python functions by time including callees (%):")
            inclusive = [(n, v) for n, v in profile["inclusive_pct"]
                         if v < 95 and not n.startswith(("main ", "<module> ", "run "))][:15]
            for name, share in inclusive:
                print(f"    {share:>5.1f}  {name}")
        elif profile.get("top_sites"):
            print(f"  tracemalloc, {profile['sessions']} idle sessions on their own "
                  f"connections: {profile['traced_bytes_per_session']:,} traced bytes a "
                  f"session; the sites that grew most (bytes, objects a session):")
            for site in profile["top_sites"][:15]:
                print(f"    {site['bytes_per_session']:>6}  {site['objects_per_session']:>6.2f}  "
                      f"{site['site']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_exit_on_sigterm()
    raise_nofile(65536)
    cpus = Cpus(pin=not args.no_pin)
    info = machine(cpus)
    started = time.monotonic()
    print(f"live benchmark{' (quick)' if args.quick else ''}: {info['cpus']} CPUs, load "
          f"average {info['loadavg_start']}; {cpus.describe()}", flush=True)
    results: dict[str, Any] = {}
    profile_dir = Path(args.profile_dir or tempfile.mkdtemp(prefix="nodehub-live-profile-"))
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        if "ingest" in args.phases:
            results["ingest"] = run_ingest(procs, cpus, args)
        if "overhead" in args.phases:
            results["overhead"] = run_overhead(procs, cpus, args)
            o = results["overhead"]
            print(f"  overhead: utterance p50 {o['overhead_p50_ms']} ms, submit p50 "
                  f"{o['submit_rtt_p50_ms']} ms: {o['ratio_p50']}x", flush=True)
        if "realtime" in args.phases:
            results["realtime"] = run_realtime(procs, cpus, args)
        if "memory" in args.phases:
            results["memory"] = run_memory(procs, cpus, args)
        out = summarize(args, results, info, time.monotonic() - started)
        if args.profile:
            profile_dir.mkdir(parents=True, exist_ok=True)
            profiles: dict[str, Any] = {}
            met = out["met"]
            if met.get("ingest_vs_floor") is False or (
                    args.profile_all and met.get("ingest_vs_floor") is not None):
                print("  profiling the hub under ingest...", flush=True)
                profiles["ingest"] = profile_ingest(procs, cpus, args, profile_dir)
            if met.get("overhead_vs_submit_p50") is False or (
                    args.profile_all and met.get("overhead_vs_submit_p50") is not None):
                print("  profiling the hub under the overhead rounds...", flush=True)
                profiles["overhead"] = run_overhead(procs, cpus, args, profile_dir)["profile"]
            if met.get("sessions_realtime") is False or (
                    args.profile_all and met.get("sessions_realtime") is not None):
                rt = results["realtime"]
                at = rt["first_not_sustained"] or rt["sessions_realtime"] or args.rt_steps[0]
                print(f"  profiling the hub at {at} real-time sessions...", flush=True)
                profiles["realtime"] = profile_realtime(procs, cpus, args, at, profile_dir)
            if met.get("idle_session_kb") is False or (
                    args.profile_all and met.get("idle_session_kb") is not None):
                print("  tracing the hub's allocations with idle sessions...", flush=True)
                profiles["memory"] = profile_memory(procs, cpus, args, profile_dir)
            results["profiles"] = profiles
            out = summarize(args, results, info, time.monotonic() - started)
    if args.keep_logs:
        print(f"logs kept in {procs.dir}", flush=True)
    if args.json:  # first: a figure is never lost to the table's printing
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

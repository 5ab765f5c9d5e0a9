"""Register churn against the hub's memory: does an ended session leave anything behind?

One `hub serve` (local mode, benchmarks/_hub_proc.py) and, in this process,
`--loops` node agents (raw websockets), each looping as fast as it can:
connect to `/v1/node`, `register` with `--entries` capability entries (the
largest valid register by default: `max_capability_entries`), wait for the
answer, close, wait for the hub's close. A new node id every cycle (`--same-id`:
one id per loop). For `--seconds`, then `--settle` seconds of quiet.

Printed (and written with `--json PATH`): cycles and cycles/s, the hub's RSS
before, at its peak and after the quiet (MiB, VmRSS), its growth, and what the
hub's collector holds before and after (SIGUSR2 of `_hub_proc.py`): objects
it tracks, objects frozen (`gc.freeze`, the GC pacer), full collections and
their durations during the churn. Target: the RSS grows by less than 32 MiB
over 45 s with `gc_pacing` on (the default; `--no-gc-pacing` to compare).

Usage:
    python benchmarks/gc_churn.py [--seconds 45] [--loops 1] [--entries 1024]
                                  [--same-id] [--no-gc-pacing] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from _procs import Child, ProcGroup, install_exit_on_sigterm, rss_kb
from _topology import _start_hub
from websockets.asyncio.client import connect

TARGET_GROWTH_MIB = 32.0


def register_frame(node_id: str, entries: int) -> str:
    """A `register` with `entries` capability entries spread over the four lists."""
    quarter, rest = divmod(entries, 4)
    return json.dumps({"type": "register", "node_id": node_id, "capabilities": {
        "max_concurrency": 1,
        "language_pairs": [{"src": f"s{i}", "tgt": f"t{i}"} for i in range(quarter + rest)],
        "asr_languages": [f"a{i}" for i in range(quarter)],
        "tts_languages": [f"b{i}" for i in range(quarter)],
        "features": [f"f{i}" for i in range(quarter)],
    }})


def gc_report(hub: Child) -> dict[str, Any]:
    hub.signal(signal.SIGUSR2)
    return dict(hub.expect("gc", timeout=30)["gc"])


async def churn(url: str, args: argparse.Namespace, hub_pid: int) -> dict[str, Any]:
    answers: dict[str, int] = {}
    cycles = 0
    peak = rss_kb(hub_pid)
    stop_at = time.monotonic() + args.seconds

    async def loop(index: int) -> None:
        nonlocal cycles
        same = register_frame(f"churn-{index}", args.entries)
        k = 0
        while time.monotonic() < stop_at:
            frame = same if args.same_id else register_frame(f"churn-{index}-{k}", args.entries)
            k += 1
            async with connect(url + "/v1/node", compression=None, ping_interval=None,
                               max_size=None, open_timeout=30, close_timeout=5) as ws:
                await ws.send(frame)
                reply = json.loads(await ws.recv())
            kind = reply.get("code") or reply["type"]
            answers[kind] = answers.get(kind, 0) + 1
            cycles += 1

    async def sample() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kb(hub_pid))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(loop(i) for i in range(args.loops)))
    sampler.cancel()
    peak = max(peak, rss_kb(hub_pid))
    return {"cycles": cycles, "answers": answers, "peak_kb": peak}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {"NODEHUB_BENCH_GCLOG": "1"}
    with ProcGroup(keep_logs=args.keep_logs) as procs:
        extra = ("--max-capability-entries", str(max(args.entries, 1)),
                 "--gc-pacing" if args.gc_pacing else "--no-gc-pacing")
        hub, url = _start_hub(procs, "hub", extra=extra, env=env)
        time.sleep(args.settle)
        gc_before = gc_report(hub)
        before_kb = rss_kb(hub.pid)
        started = time.monotonic()
        seen = uvloop.run(churn(url, args, hub.pid))
        took = time.monotonic() - started
        end_kb = rss_kb(hub.pid)
        time.sleep(args.settle)
        after_kb = rss_kb(hub.pid)
        gc_after = gc_report(hub)
    pauses = gc_after.pop("full_pauses_ms")
    growth = (after_kb - before_kb) / 1024
    return {
        "gc_pacing": args.gc_pacing,
        "seconds": round(took, 1),
        "loops": args.loops,
        "entries": args.entries,
        "same_id": args.same_id,
        "cycles": seen["cycles"],
        "cycles_per_s": round(seen["cycles"] / took, 1),
        "answers": seen["answers"],
        "rss_before_mib": round(before_kb / 1024, 1),
        "rss_end_mib": round(end_kb / 1024, 1),
        "rss_peak_mib": round(seen["peak_kb"] / 1024, 1),
        "rss_after_mib": round(after_kb / 1024, 1),
        "rss_growth_mib": round(growth, 1),
        "kib_per_cycle": round((after_kb - before_kb) / max(1, seen["cycles"]), 2),
        "target_met": growth < TARGET_GROWTH_MIB * args.seconds / 45,
        "gc_before": {k: v for k, v in gc_before.items() if k != "full_pauses_ms"},
        "gc_after": gc_after,
        "full_collections": len(pauses),
        "full_pause_p50_ms": _pct(pauses, 50),
        "full_pause_p99_ms": _pct(pauses, 99),
        "full_pause_max_ms": max(pauses, default=None),
        "full_pause_mean_ms": round(statistics.fmean(pauses), 3) if pauses else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--loops", type=int, default=1, help="agents churning at once")
    parser.add_argument("--entries", type=int, default=1024, help="capability entries")
    parser.add_argument("--same-id", action="store_true", help="one node id per loop")
    parser.add_argument("--gc-pacing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--settle", type=float, default=2.0, help="quiet before and after, s")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    install_exit_on_sigterm()
    result = run(args)
    print(f"# register churn: {args.loops} loop(s), {args.entries} capability entries, "
          f"{'same' if args.same_id else 'new'} node id, gc_pacing "
          f"{'on' if args.gc_pacing else 'off'}, {result['seconds']} s")
    print(f"{'cycles':>7} {'cyc/s':>6} {'RSS MiB before':>14} {'peak':>6} {'after':>6} "
          f"{'growth':>7} {'KiB/cyc':>8} {'tracked':>8} {'frozen':>8} {'full gcs':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  target")
    g = result["gc_after"]
    print(f"{result['cycles']:>7} {result['cycles_per_s']:>6.0f} "
          f"{result['rss_before_mib']:>14.1f} {result['rss_peak_mib']:>6.1f} "
          f"{result['rss_after_mib']:>6.1f} {result['rss_growth_mib']:>7.1f} "
          f"{result['kib_per_cycle']:>8.1f} {g['tracked']:>8} {g['frozen']:>8} "
          f"{result['full_collections']:>8} {result['full_pause_p50_ms'] or 0:>7.1f} "
          f"{result['full_pause_p99_ms'] or 0:>7.1f} {result['full_pause_max_ms'] or 0:>7.1f}  "
          f"growth < {TARGET_GROWTH_MIB:.0f} MiB per 45 s "
          f"{'met' if result['target_met'] else 'MISSED'}")
    print(f"  answers {result['answers']}; before: {result['gc_before']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

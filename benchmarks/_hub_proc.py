"""Run `hub serve` for the benchmarks: `python benchmarks/_hub_proc.py serve --port P ...`.

Before handing over to `hub.app.cli.main` it raises RLIMIT_NOFILE (to
`BENCH_HUB_NOFILE`, for the 10,000-node memory run) and makes SIGUSR1
run a full garbage collection (the memory measurement asks for one before it
reads VmRSS). With `NODEHUB_BENCH_PROFILE=PATH` the hub runs under cProfile
and the stats are dumped to PATH when it stops (SIGTERM stops it cleanly).
With `NODEHUB_BENCH_TRACEMALLOC=PATH` Python allocations are traced and every
SIGUSR1 also writes the top allocation sites to PATH (memory investigations).
With `NODEHUB_BENCH_GCLOG=1` every garbage collection of 5 ms or more is
written to stderr (generation, duration, objects collected), and the duration
of every full (generation 2) one is kept. SIGUSR2 prints (stdout, one JSON
line `{"gc": ...}`) the objects the collector tracks, those frozen
(`gc.freeze`), collections per generation, and the full collections' durations
(ms) kept since the last SIGUSR2 (empty without `NODEHUB_BENCH_GCLOG`).
With `NODEHUB_BENCH_LOOPLAG=1` a thread asks the hub's event loop to run a
callback every millisecond (as an I/O event would) and writes, every 5 s, how
late those callbacks ran (p50/p99/max, ms) to stderr: how long anything that
arrives waits for the hub's loop.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from types import FrameType
from typing import Any

from _procs import probe_loop_lag, raise_nofile

bench: dict[str, str] = {}
"""The harness's NODEHUB_BENCH_* settings (taken out of the environment)."""


def _collect(signum: int, frame: FrameType | None) -> None:
    collected = gc.collect()
    sys.stderr.write(f"bench: gc.collect() freed {collected} objects\n")
    sys.stderr.flush()
    trace_path = bench.get("NODEHUB_BENCH_TRACEMALLOC")
    if trace_path and tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")
        total = sum(stat.size for stat in stats)
        with open(trace_path, "a") as out:
            out.write(f"--- traced {total / 1024:.0f} KiB in {len(stats)} sites\n")
            out.writelines(f"{stat}\n" for stat in stats[:40])


_gc_started = 0.0
_full_pauses_ms: list[float] = []


def _gc_log(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took_ms = (time.perf_counter() - _gc_started) * 1000
    if info["generation"] == 2:
        _full_pauses_ms.append(round(took_ms, 3))
    if took_ms >= 5:
        sys.stderr.write(
            f"bench: gc generation {info['generation']} took {took_ms:.0f} ms "
            f"(collected {info['collected']})\n"
        )
        sys.stderr.flush()


def _gc_report(signum: int, frame: FrameType | None) -> None:
    pauses = list(_full_pauses_ms)
    _full_pauses_ms.clear()
    sys.stdout.write(json.dumps({"gc": {
        "tracked": len(gc.get_objects()),
        "frozen": gc.get_freeze_count(),
        "collections": [stat["collections"] for stat in gc.get_stats()],
        "full_pauses_ms": pauses,
    }}) + "\n")
    sys.stdout.flush()


def _with_loop_lag_probe() -> None:
    """Have `uvloop.run` (the hub's) start the probe on the loop it makes."""
    import uvloop

    run = uvloop.run

    def factory() -> Any:
        loop = uvloop.new_event_loop()
        probe_loop_lag(loop)
        return loop

    def probed_run(main: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("loop_factory", factory)
        return run(main, **kwargs)

    uvloop.run = probed_run


def main() -> int:
    # The hub refuses NODEHUB_* variables it does not know (a typo must not pass
    # silently): the harness's own are read here and taken out of its sight.
    bench.update(
        (k, os.environ.pop(k)) for k in list(os.environ) if k.startswith("NODEHUB_BENCH_")
    )
    wanted = int(os.environ.get("BENCH_HUB_NOFILE", "0") or 0)
    if wanted:
        raise_nofile(wanted)
    signal.signal(signal.SIGUSR1, _collect)
    signal.signal(signal.SIGUSR2, _gc_report)
    if bench.get("NODEHUB_BENCH_GCLOG"):
        gc.callbacks.append(_gc_log)
    if bench.get("NODEHUB_BENCH_TRACEMALLOC"):
        tracemalloc.start()
    if bench.get("NODEHUB_BENCH_LOOPLAG"):
        _with_loop_lag_probe()
    from hub.app.cli import main as hub_main

    profile_path = bench.get("NODEHUB_BENCH_PROFILE")
    if not profile_path:
        return hub_main(sys.argv[1:])
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(hub_main, sys.argv[1:]))
    finally:
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    sys.exit(main())

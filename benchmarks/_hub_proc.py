"""Run `hub serve` for the benchmarks: `python benchmarks/_hub_proc.py serve --port P ...`.

Before handing over to `hub.app.cli.main` it raises RLIMIT_NOFILE (to
`BENCH_HUB_NOFILE`, for the 10,000-node memory run) and makes SIGUSR1
run a full garbage collection (the memory measurement asks for one before it
reads VmRSS). With `NODEHUB_BENCH_PROFILE=PATH` the hub runs under cProfile
and the stats are dumped to PATH when it stops (SIGTERM stops it cleanly).
With `NODEHUB_BENCH_TRACEMALLOC=PATH` Python allocations are traced and every
SIGUSR1 also writes the top allocation sites to PATH (memory investigations).
With `NODEHUB_BENCH_GCLOG=1` every garbage collection of 5 ms or more is
written to stderr (generation, duration, objects collected).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import tracemalloc
from types import FrameType
from typing import Any

from _procs import raise_nofile


def _collect(signum: int, frame: FrameType | None) -> None:
    collected = gc.collect()
    sys.stderr.write(f"bench: gc.collect() freed {collected} objects\n")
    sys.stderr.flush()
    trace_path = os.environ.get("NODEHUB_BENCH_TRACEMALLOC")
    if trace_path and tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")
        total = sum(stat.size for stat in stats)
        with open(trace_path, "a") as out:
            out.write(f"--- traced {total / 1024:.0f} KiB in {len(stats)} sites\n")
            out.writelines(f"{stat}\n" for stat in stats[:40])


_gc_started = 0.0


def _gc_log(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took_ms = (time.perf_counter() - _gc_started) * 1000
    if took_ms >= 5:
        sys.stderr.write(
            f"bench: gc generation {info['generation']} took {took_ms:.0f} ms "
            f"(collected {info['collected']})\n"
        )
        sys.stderr.flush()


def main() -> int:
    wanted = int(os.environ.get("BENCH_HUB_NOFILE", "0") or 0)
    if wanted:
        raise_nofile(wanted)
    signal.signal(signal.SIGUSR1, _collect)
    if os.environ.get("NODEHUB_BENCH_GCLOG"):
        gc.callbacks.append(_gc_log)
    if os.environ.get("NODEHUB_BENCH_TRACEMALLOC"):
        tracemalloc.start()
    from hub.app.cli import main as hub_main

    profile_path = os.environ.get("NODEHUB_BENCH_PROFILE")
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

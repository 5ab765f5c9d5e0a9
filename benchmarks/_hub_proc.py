"""Run `hub serve` for the benchmarks: `python benchmarks/_hub_proc.py serve --port P ...`.

Before handing over to `hub.cli.main` it raises RLIMIT_NOFILE (to
`NODEHUB_BENCH_NOFILE`, for the 10,000-node memory run) and makes SIGUSR1
run a full garbage collection (the memory measurement asks for one before it
reads VmRSS). With `NODEHUB_BENCH_PROFILE=PATH` the hub runs under cProfile
and the stats are dumped to PATH when it stops (SIGTERM stops it cleanly).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from types import FrameType

from _procs import raise_nofile


def _collect(signum: int, frame: FrameType | None) -> None:
    collected = gc.collect()
    sys.stderr.write(f"bench: gc.collect() freed {collected} objects\n")
    sys.stderr.flush()


def main() -> int:
    wanted = int(os.environ.get("NODEHUB_BENCH_NOFILE", "0") or 0)
    if wanted:
        raise_nofile(wanted)
    signal.signal(signal.SIGUSR1, _collect)
    from hub.cli import main as hub_main

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

"""`agent-sim`: run a simulated fleet of node agents against one or more hubs.

Runs until SIGINT/SIGTERM or `--duration-s`, then drains gracefully (every
agent sends `drain`, finishes its jobs and closes); a second signal stops at
once. Logs connection events to stderr at INFO and prints a one-line summary
to stdout at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import uvloop
from loguru import logger

from agent_sim.agent import Token
from agent_sim.behaviour import get_profile, profile_names
from agent_sim.fleet import Fleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-sim", description="Run simulated GPU node agents against nodehub hubs."
    )
    parser.add_argument(
        "--hub",
        action="append",
        required=True,
        metavar="URL",
        help="hub URL, ws://host:port or ws://host:port/v1/node; repeat for failover",
    )
    parser.add_argument("--nodes", type=int, default=10, help="number of agents (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated fleet")
    parser.add_argument(
        "--profile", default="default", choices=profile_names(), help="behaviour profile"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="multiply simulated durations (e.g. 0.01 turns seconds into ms)",
    )
    parser.add_argument("--binary", action="store_true", help="speak MessagePack")
    parser.add_argument("--token", default=None, help="bearer token for the handshake")
    parser.add_argument(
        "--token-file", default=None,
        help="a file holding the bearer token, read again for every connect (rotation)",
    )
    parser.add_argument(
        "--ca-file", default=None, help="PEM CA bundle to verify wss:// hubs with"
    )
    parser.add_argument("--prefix", default="sim", help="node id prefix (default sim)")
    parser.add_argument(
        "--duration-s", type=float, default=None, help="stop after this many seconds"
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=30.0,
        help="longest wait for running jobs when stopping (default 30)",
    )
    parser.add_argument(
        "--stagger-ms", type=float, default=2.0, help="delay between agent launches (default 2)"
    )
    parser.add_argument(
        "--no-disconnects",
        action="store_true",
        help="do not inject the profile's random disconnects",
    )
    parser.add_argument("--log-level", default="INFO", help="loguru level on stderr (INFO)")
    return parser


def _raise_fd_limit(wanted: int) -> None:
    """One socket per agent: lift the soft open-files limit towards the hard one."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _token(args: argparse.Namespace) -> Token | None:
    """`--token`, or `--token-file` read afresh on every connect."""
    if args.token_file is None:
        return cast("str | None", args.token)
    path = Path(args.token_file)
    return lambda: path.read_text().strip()


def summary_line(stats: dict[str, int], *, drained: bool, elapsed_s: float) -> str:
    fields = " ".join(f"{key}={value}" for key, value in stats.items())
    return f"agent-sim: {fields} drained={'yes' if drained else 'no'} elapsed_s={elapsed_s:.1f}"


async def run(args: argparse.Namespace) -> str:
    """Run the fleet until a signal or the duration; return the summary line."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            force.set()
        else:
            stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    profile = get_profile(args.profile, time_scale=args.time_scale)
    started = loop.time()
    drained = False
    try:
        async with Fleet(
            hub_urls=args.hub,
            nodes=args.nodes,
            seed=args.seed,
            profile=profile,
            binary=args.binary,
            token=_token(args),
            ssl_context=ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None,
            prefix=args.prefix,
            connect_stagger_s=args.stagger_ms / 1000.0,
            inject_disconnects=not args.no_disconnects,
        ) as fleet:
            logger.info(
                "agent-sim: {} nodes, profile {}, seed {}, hubs {}",
                args.nodes,
                profile.name,
                args.seed,
                args.hub,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration_s)
            logger.info("agent-sim: draining {} agents", args.nodes)
            drain = asyncio.create_task(fleet.drain(timeout_s=args.drain_timeout_s))
            forced = asyncio.create_task(force.wait())
            try:
                await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (drain, forced):
                    task.cancel()
                await asyncio.wait({drain, forced})
            drained = not drain.cancelled() and drain.exception() is None and drain.result()
            if not drained:
                logger.warning("agent-sim: stopped before every job finished")
            stats = fleet.stats()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return summary_line(stats, drained=drained, elapsed_s=loop.time() - started)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 0:
        print("agent-sim: --nodes must be >= 0", file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    _raise_fd_limit(args.nodes + 256)
    line = uvloop.run(run(args))
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `hub` command: `hub serve` runs a hub; `hub demo` shows one at work.

Configuration for `serve`: `--config FILE` (TOML) < `NODEHUB_*` environment
variables < `--key-with-dashes` flags, one flag per key of `HubConfig`.
SIGTERM (or SIGINT) drains: no new work, running jobs finish within
`drain_timeout_ms`, then the hub stops (see `Hub.drain`, `Hub.aclose`); a
second SIGTERM or SIGINT stops at once. A bad configuration or an unreachable
store is one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import uvloop
from loguru import logger

from hub.app.settings import load_config
from hub.core.config import HubConfig
from hub.core.errors import ConfigError, StoreUnavailable

SHUTDOWN_TIMEOUT_S = 10.0


def configure_logging(level: str, *, json: bool) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=json, enqueue=False)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for f in fields(HubConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            parser.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper())


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(HubConfig) if hasattr(args, f.name)}


async def serve(config: HubConfig) -> None:
    """Run a hub until SIGINT or SIGTERM: drain, then stop (a second signal: at once)."""
    from hub.app.hub import Hub

    hub = Hub(config)
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            logger.warning("second signal: stopping now")
            hub.stop_now()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await hub.start()
    try:
        await stop.wait()
        logger.info("signal received: draining (a second signal stops at once)")
        await hub.drain()
    finally:
        closing = asyncio.create_task(hub.aclose())
        done, _ = await asyncio.wait({closing}, timeout=SHUTDOWN_TIMEOUT_S)
        if not done:
            # Never hang on the way out: say what was stuck, then leave anyway.
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    logger.error("still running at shutdown: {!r}\n{}", task, task.get_stack())
            closing.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run a hub")
    _add_config_flags(serve_cmd)
    demo_cmd = commands.add_parser(
        "demo", help="a hub, a simulated fleet and a client load in one process"
    )
    demo_cmd.add_argument("--nodes", type=int, default=50, help="simulated nodes (default 50)")
    demo_cmd.add_argument("--seconds", type=float, default=15.0, help="load duration (default 15)")
    demo_cmd.add_argument("--in-flight", type=int, default=32, help="concurrent jobs (default 32)")
    demo_cmd.add_argument("--seed", type=int, default=1, help="fleet and load seed")
    demo_cmd.add_argument(
        "--faults", action=argparse.BooleanOptionalAction, default=True,
        help="inject rejects, crashes and slow nodes (default on)",
    )
    demo_cmd.add_argument(
        "--hubs", type=int, default=1, choices=(1, 2),
        help="2: two hubs in cross-instance mode on a redis-server started for the demo",
    )
    demo_cmd.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(path=args.config, overrides=_overrides(args))
            configure_logging(config.log_level, json=config.log_json)
            uvloop.run(serve(config))
        else:
            from hub.app.demo import run_demo

            configure_logging(args.log_level, json=False)
            uvloop.run(
                run_demo(
                    nodes=args.nodes, seconds=args.seconds, in_flight=args.in_flight,
                    seed=args.seed, faults=args.faults, hubs=args.hubs,
                )
            )
    except (ConfigError, StoreUnavailable) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hub: cannot serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `hub` command: `hub serve` runs a hub; `hub demo` shows one at work; `hub token`
mints a token.

Configuration for `serve`: `--config FILE` (TOML) < `NODEHUB_*` environment
variables < `--key-with-dashes` flags, one flag per key of `HubConfig`.
SIGINT/SIGTERM stop gracefully (see `Hub.aclose`). A bad configuration or an
unreachable store is one clear line on stderr and exit status 2, never a
traceback.

`hub token --config FILE --role ROLE --sub SUB [--tenant T] [--node-ids GLOB ...]
[--ttl 24h]` prints an HS256 token signed with the configured secret
(`jwt_secret`, or the first secret of `jwt_secret_file`), for operators and
scripts.
traceback. `serve` raises the open-file limit to its hard limit first (every
connection is a descriptor), and logs without loguru's `diagnose` (which would
write the values of local variables, frame contents among them, into the log).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
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
from hub.core.principal import ROLES, ClaimsError

SHUTDOWN_TIMEOUT_S = 10.0


def configure_logging(level: str, *, json: bool) -> None:
    logger.remove()
    # Never `diagnose`: it prints every local variable of a traceback, peers' frames
    # included. The traceback itself is kept.
    logger.add(
        sys.stderr, level=level.upper(), serialize=json, enqueue=False, diagnose=False,
        backtrace=False,
    )


NOFILE_MARGIN = 256
"""Descriptors `hub serve` wants beyond `max_connections` (HTTP requests, Redis, logs)."""


def raise_open_file_limit(config: HubConfig) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (every connection holds a
    descriptor); warn when that is still short of `max_connections`.
    Returns (soft, hard) as set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from {} to {}: {}", soft, hard, exc)
    wanted = config.max_connections + NOFILE_MARGIN
    if soft != resource.RLIM_INFINITY and soft < config.max_connections:
        logger.warning(
            "the open-file limit is {} but max_connections is {}: past about {} connections "
            "new ones (and /healthz) fail; raise the hard limit (ulimit -Hn, LimitNOFILE) "
            "to at least {}",
            soft, config.max_connections, max(0, soft - NOFILE_MARGIN), wanted,
        )
    else:
        logger.info("open-file limit {} (max_connections {})", soft, config.max_connections)
    return soft, hard


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
    """Run a hub until SIGINT or SIGTERM."""
    from hub.app.hub import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    raise_open_file_limit(config)
    hub = Hub(config)
    await hub.start()
    try:
        await stop.wait()
        logger.info("signal received: stopping")
    finally:
        closing = asyncio.create_task(hub.aclose())
        done, _ = await asyncio.wait({closing}, timeout=SHUTDOWN_TIMEOUT_S)
        if not done:
            # Never hang on the way out: say what was stuck, then leave anyway.
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    logger.error("still running at shutdown: {!r}\n{}", task, task.get_stack())
            closing.cancel()


def _mint(args: argparse.Namespace) -> str:
    """`hub token`: a token from the configuration's HS256 secret."""
    from hub.net.auth import load_keys, mint_token, parse_duration

    config = load_config(path=args.config)
    secret = load_keys(config).signing_secret
    if secret is None:
        raise ConfigError(
            "hub token signs with HS256: set jwt_secret or jwt_secret_file (public keys "
            "only verify; sign RS256/ES256 tokens with your own private key)"
        )
    try:
        ttl_s = parse_duration(args.ttl)
    except ValueError as exc:
        raise ConfigError(f"--ttl: {exc}") from None
    return mint_token(
        secret, role=args.role, sub=args.sub, tenant=args.tenant, node_ids=args.node_ids,
        ttl_s=ttl_s,
    )


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
    demo_cmd.add_argument(
        "--port", type=int, default=0,
        help="the (first) hub's port (default: a free one); its console is at /ui",
    )
    demo_cmd.add_argument("--log-level", default="WARNING")
    token_cmd = commands.add_parser(
        "token", help="print an HS256 token signed with the configured secret"
    )
    token_cmd.add_argument("--config", metavar="FILE", help="TOML configuration file")
    token_cmd.add_argument("--role", required=True, choices=sorted(ROLES))
    token_cmd.add_argument("--sub", required=True, help="who the token speaks for")
    token_cmd.add_argument("--tenant", default="default", help="the tenant (default: default)")
    token_cmd.add_argument(
        "--node-ids", nargs="+", metavar="GLOB", default=[],
        help="role node: node ids it may register (globs; default: the sub)",
    )
    token_cmd.add_argument("--ttl", default="24h", help="lifetime: 90s, 30m, 24h, 7d (24h)")
    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            print(_mint(args))
        elif args.command == "serve":
            config = load_config(path=args.config, overrides=_overrides(args))
            configure_logging(config.log_level, json=config.log_json)
            uvloop.run(serve(config))
        else:
            from hub.app.demo import run_demo

            configure_logging(args.log_level, json=False)
            uvloop.run(
                run_demo(
                    nodes=args.nodes, seconds=args.seconds, in_flight=args.in_flight,
                    seed=args.seed, faults=args.faults, hubs=args.hubs, port=args.port,
                )
            )
    except (ConfigError, StoreUnavailable, ClaimsError) as exc:
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

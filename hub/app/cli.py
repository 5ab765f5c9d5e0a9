"""The `hub` command: `hub serve` runs a hub; `hub demo` shows one at work; `hub token`
mints a token; `hub config` prints the effective configuration; `hub nodes`, `hub jobs`,
`hub job`, `hub drain`, `hub undrain`, `hub cancel`, `hub stats` operate a running hub.

Configuration for `serve`: `--config FILE` (TOML) < `NODEHUB_*` environment
variables < `--key-with-dashes` flags, one flag per key of `HubConfig`.
SIGTERM (or SIGINT) drains: no new work, running jobs finish within
`drain_timeout_ms`, then the hub stops (see `Hub.drain`, `Hub.aclose`); a
second SIGTERM or SIGINT stops at once. A bad configuration or an unreachable
store is one clear line on stderr and exit status 2, never a traceback.
`serve` raises the open-file limit to its hard limit first (every connection
is a descriptor), and logs without loguru's `diagnose` (which would write the
values of local variables, frame contents among them, into the log).

`hub token --config FILE --role ROLE --sub SUB [--tenant T] [--node-ids GLOB ...]
[--ttl 24h]` prints an HS256 token signed with the configured secret
(`jwt_secret`, or the first secret of `jwt_secret_file`), for operators and
scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json as json_module
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NoReturn, get_args

import uvloop
from loguru import logger

from hub.app import admin_cli
from hub.app.logs import configure_logging
from hub.app.settings import load_config
from hub.app.version import version
from hub.core.config import (
    JOB_LOG_LEVELS,
    LOG_LEVELS,
    AuthMode,
    DeploymentMode,
    HubConfig,
    default_of,
    key_type,
)
from hub.core.config_help import KEY_HELP
from hub.core.errors import ConfigError, StoreUnavailable
from hub.core.principal import ROLES, ClaimsError

SHUTDOWN_TIMEOUT_S = 10.0


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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `hub serve: argument --auth: invalid
    choice: 'x' (choose from 'none', 'jwt')`, exit status 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _choices(name: str) -> tuple[str, ...] | None:
    kind = key_type(name)
    if kind == "DeploymentMode":
        return get_args(DeploymentMode)
    if kind == "AuthMode":
        return get_args(AuthMode)
    if name == "log_level":
        return LOG_LEVELS
    if name == "job_log_level":
        return JOB_LOG_LEVELS
    return None


def _default_text(name: str) -> str:
    if name == "hub_id":
        return "a random hub-…"
    default = default_of(name)
    if name == "jwt_secret" or default in ("", (), None):
        return "unset" if name != "selection_seed" else "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    keys = parser.add_argument_group(
        "configuration keys",
        "each also a NODEHUB_<KEY> variable and a key of the --config file; "
        "file < environment < flag",
    )
    for f in fields(HubConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        choices = _choices(f.name)
        text = f"{KEY_HELP.get(f.name, '')} [default: {_default_text(f.name)}]"
        text = text.replace("%", "%%")
        if kind == "bool":
            keys.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                help=text,
            )
        elif choices is not None:
            keys.add_argument(
                flag, dest=f.name, default=None, metavar="{" + ",".join(choices) + "}",
                type=_choice_type(f.name, choices), help=text,
            )
        else:
            keys.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                              help=text)


def _choice_type(name: str, choices: tuple[str, ...]) -> Any:
    """A flag value among `choices` (log levels in any case), or one clear error line."""
    upper = name in ("log_level", "job_log_level")

    def check(value: str) -> str:
        chosen = value.upper() if upper else value
        if chosen not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice {value!r} (choose from {', '.join(choices)})"
            )
        return chosen

    check.__name__ = name
    return check


def _print_config(config: HubConfig, *, as_json: bool) -> None:
    """`hub config`: the effective configuration, secrets redacted; TOML a file can take."""
    values = config.redacted()
    if as_json:
        print(json_module.dumps(
            {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}, indent=2
        ))
        return
    print("[hub]")
    for name, value in values.items():
        if value is None:
            print(f"# {name} = (unset)")
        elif isinstance(value, bool):
            print(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            print(f"{name} = {value}")
        elif isinstance(value, tuple):
            print(f"{name} = {json_module.dumps(list(value))}")
        else:
            print(f"{name} = {json_module.dumps(value)}")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(HubConfig) if hasattr(args, f.name)}


async def serve(config: HubConfig) -> None:
    """Run a hub until SIGINT or SIGTERM: drain, then stop (a second signal: at once)."""
    from hub.app.hub import Hub

    raise_open_file_limit(config)
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
                    stack = ", ".join(
                        f"{frame.f_code.co_filename}:{frame.f_lineno}"
                        for frame in task.get_stack()
                    )
                    logger.error("still running at shutdown: {!r} at {}", task, stack)
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
    parser = Parser(prog="hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"nodehub {version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    serve_cmd = commands.add_parser(
        "serve", help="run a hub", usage="hub serve [--config FILE] [--KEY VALUE ...]"
    )
    _add_config_flags(serve_cmd)
    config_cmd = commands.add_parser(
        "config", help="print the effective configuration (file < env < flags), secrets "
        "redacted", usage="hub config [--json] [--config FILE] [--KEY VALUE ...]"
    )
    _add_config_flags(config_cmd)
    config_cmd.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    admin_cli.add_commands(commands)
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
        "--linger", action="store_true",
        help="keep the hub(s) and the fleet up after the summary, until Ctrl-C",
    )
    demo_cmd.add_argument(
        "--port", type=int, default=0,
        help="the (first) hub's port (default: a free one); its console is at /ui",
    )
    demo_cmd.add_argument(
        "--log-level", default="WARNING", type=_choice_type("log_level", LOG_LEVELS),
        help="the demo's log level (default WARNING)",
    )
    demo_cmd.add_argument(
        "--live", action="store_true",
        help="live speech sessions: simulated speakers stream audio in real time, the hub "
             "cuts utterances, simulated recognisers answer",
    )
    demo_cmd.add_argument(
        "--room", action="store_true",
        help="a room: speakers in en, de, es, zh hear each other in their own language "
             "(with --hubs 2, spread over two hubs)",
    )
    demo_cmd.add_argument(
        "--speakers", type=int, default=None,
        help="--live/--room: simulated speakers (default 8, or 4 in a room)",
    )
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
    if args.command in admin_cli.COMMANDS:
        return admin_cli.run(args)
    try:
        if args.command == "token":
            print(_mint(args))
        elif args.command == "config":
            _print_config(
                load_config(path=args.config, overrides=_overrides(args)), as_json=args.as_json
            )
        elif args.command == "serve":
            config = load_config(path=args.config, overrides=_overrides(args))
            configure_logging(config.log_level, json=config.log_json, hub_id=config.hub_id)
            uvloop.run(serve(config))
        elif args.live or args.room:
            from hub.app.demo_live import run_live_demo

            configure_logging(args.log_level, json=False)
            uvloop.run(
                run_live_demo(
                    speakers=args.speakers or (4 if args.room else 8),
                    nodes=args.nodes if args.nodes != 50 else 8, seconds=args.seconds,
                    seed=args.seed, hubs=args.hubs, room=args.room, linger=args.linger,
                    port=args.port,
                )
            )
        else:
            from hub.app.demo import run_demo

            configure_logging(args.log_level, json=False)
            uvloop.run(
                run_demo(
                    nodes=args.nodes, seconds=args.seconds, in_flight=args.in_flight,
                    seed=args.seed, faults=args.faults, hubs=args.hubs, linger=args.linger,
                    port=args.port,
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

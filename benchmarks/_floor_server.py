"""The floors' WebSocket server (benchmarks/relay_floor.py, benchmarks/queue_floor.py):
the hub's websockets settings (no compression, no pings), `{"ready": port}` on stdout
once listening, served until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from _procs import emit
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def serve_until_stopped(
    handler: Callable[[ServerConnection], Awaitable[None]],
    process_request: Callable[[ServerConnection, Request], Response | None],
    host: str,
    port: int,
    **options: Any,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        handler, host, port, process_request=process_request,
        ping_interval=None, compression=None, **options,
    ):
        emit(ready=port)
        await stop.wait()


def serve_main(doc: str | None, run: Callable[[str, int], Awaitable[None]]) -> int:
    """A floor's command line: `--host`, `--port`, then `run(host, port)` on uvloop."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(run(args.host, args.port))
    return 0

"""The floors' WebSocket server (benchmarks/relay_floor.py, benchmarks/queue_floor.py):
the hub's websockets settings (no compression, no pings), `{"ready": port}` on stdout
once listening, served until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

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

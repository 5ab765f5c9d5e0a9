"""The bad peers of benchmarks/bad_peers.py, one process each (raw websockets).

Modes:
- `stall`: a client that stops reading. Again and again: connect to
  `URL/v1/client`, submit `--jobs` jobs (their results are big: the fleet
  serving `--src`/`--tgt` answers with `--output-bytes`), stop reading its
  socket, hold still for `--hold` seconds, then read again to see how the hub
  ended the session (close code 4006 expected) and start over.
- `churn`: a node registering at the capability limit every `--interval`
  seconds: connect to `URL/v1/node`, `register` with `--entries` capability
  entries over the four lists, wait for the answer, close.
- `idle`: `--count` client sessions that connect and then do nothing.

Prints `{"ready": ...}` once the bad behaviour is under way, and on SIGTERM a
`{"summary": ...}` line with what it saw, then exits.

Usage: python benchmarks/_bad_peers.py --url ws://127.0.0.1:P --mode stall
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from typing import Any

import uvloop
from _procs import emit, raise_nofile
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def _open(url: str) -> ClientConnection:
    return await connect(url, compression=None, ping_interval=None, max_size=None,
                         open_timeout=60, close_timeout=2)


async def stall(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    closes: Counter[str] = Counter()
    rounds = 0
    head = f'{{"type":"submit","src_lang":"{args.src}","tgt_lang":"{args.tgt}","request_id":"'
    while not stop.is_set():
        ws = await _open(args.url + "/v1/client")
        for i in range(args.jobs):
            await ws.send(f'{head}stall-{rounds}-{i}"}}')
        ws.transport.pause_reading()  # the process stops reading its socket
        rounds += 1
        if rounds == 1:
            emit(ready="stall")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.hold):
                await stop.wait()
        ws.transport.resume_reading()
        try:
            async with asyncio.timeout(5):
                async for _ in ws:
                    pass
        except (TimeoutError, ConnectionClosed, OSError):
            pass
        received = ws.protocol.close_rcvd  # none: dropped before it read the close frame
        closes[str(received.code) if received is not None else "none"] += 1
        ws.transport.abort()
    return {"rounds": rounds, "close_codes": dict(closes)}


def _register_frame(node_id: str, entries: int) -> str:
    quarter, rest = divmod(entries, 4)
    return json.dumps({"type": "register", "node_id": node_id, "capabilities": {
        "max_concurrency": 1,
        "language_pairs": [{"src": f"s{i}", "tgt": f"t{i}"} for i in range(quarter + rest)],
        "asr_languages": [f"a{i}" for i in range(quarter)],
        "tts_languages": [f"b{i}" for i in range(quarter)],
        "features": [f"f{i}" for i in range(quarter)],
    }})


async def churn(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    answers: Counter[str] = Counter()
    seconds: list[float] = []
    count = 0
    next_at = time.monotonic()
    while not stop.is_set():
        frame = _register_frame(f"churn-{count}", args.entries)
        ws = await _open(args.url + "/v1/node")
        started = time.perf_counter()
        await ws.send(frame)
        reply = json.loads(await ws.recv())
        seconds.append(time.perf_counter() - started)
        answers[reply.get("code") or reply["type"]] += 1
        await ws.close()
        count += 1
        if count == 1:
            emit(ready="churn")
        next_at += args.interval
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, next_at - time.monotonic())):
                await stop.wait()
    seconds.sort()
    return {
        "registers": count,
        "answers": dict(answers),
        "register_p50_ms": 1000 * seconds[len(seconds) // 2] if seconds else None,
        "register_max_ms": 1000 * seconds[-1] if seconds else None,
    }


async def idle(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    conns: list[ClientConnection] = []
    for first in range(0, args.count, args.batch):
        batch = min(args.batch, args.count - first)
        conns.extend(await asyncio.gather(
            *(_open(args.url + "/v1/client") for _ in range(batch))
        ))
    emit(ready="idle", connections=len(conns))
    await stop.wait()
    open_at_end = sum(1 for ws in conns if ws.close_code is None)
    for ws in conns:
        ws.transport.abort()
    return {"connections": len(conns), "open_at_end": open_at_end}


MODES = {"stall": stall, "churn": churn, "idle": idle}


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    summary = await MODES[args.mode](args, stop)
    emit(summary={"mode": args.mode, **summary})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the hub")
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--jobs", type=int, default=64, help="stall: jobs in flight")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="big")
    parser.add_argument("--hold", type=float, default=13.0,
                        help="stall: seconds without reading (past slow_peer_timeout_ms)")
    parser.add_argument("--entries", type=int, default=1024, help="churn: capability entries")
    parser.add_argument("--interval", type=float, default=0.1, help="churn: seconds")
    parser.add_argument("--count", type=int, default=2000, help="idle: connections")
    parser.add_argument("--batch", type=int, default=200, help="idle: concurrent handshakes")
    args = parser.parse_args()
    raise_nofile(args.count + 1024)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fleet of minimal raw-websockets no-op nodes, one process (not the agent SDK).

Modes:
- `hub`: connect to `URL/v1/node`, register, and on every `job_assign` write
  `job_accept` and an ok `job_result` at once (both frames in one write); with
  `--service-ms`, the accept at once and the result that much later. The
  result's output is "ok", or `--output-bytes` bytes of text.
- `echo`: connect to the relay floor's `URL/node` and send every frame back.
- `idle`: connect to `URL/v1/node`, register, then do nothing (the memory
  measurement); handshakes run `--batch` at a time.

Prints `{"ready": N}` once every node is connected (and registered), then
serves until SIGTERM. With `--start-at EPOCH` (wall clock) it waits until
then before the first connection (the storm benchmark starts several such
processes and lets them all go at once); `--batch` handshakes run at a time.

Usage: python benchmarks/_nodes.py --url ws://127.0.0.1:P --mode hub --count 8
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time
from typing import Any

import msgspec
import uvloop
from _procs import emit, raise_nofile
from websockets.asyncio.client import ClientConnection, connect


class Assign(msgspec.Struct):
    type: str
    job_id: str = ""
    attempt: int = 0


class Accept(msgspec.Struct, tag_field="type", tag="job_accept"):
    job_id: str
    attempt: int


class JobResult(msgspec.Struct, tag_field="type", tag="job_result"):
    job_id: str
    attempt: int
    ok: bool
    output: Any


_decode = msgspec.json.Decoder(Assign).decode
_encode = msgspec.json.Encoder().encode


async def _register(ws: ClientConnection, node_id: str, src: str, tgt: str, slots: int) -> None:
    register = {
        "type": "register",
        "node_id": node_id,
        "version": "bench",
        "capabilities": {
            "language_pairs": [{"src": src, "tgt": tgt}],
            "asr_languages": [src],
            "tts_languages": [tgt],
            "max_concurrency": slots,
        },
    }
    await ws.send(_encode(register).decode())
    reply = _decode(await ws.recv())
    if reply.type != "registered":
        raise RuntimeError(f"{node_id}: registration refused: {reply}")


async def _serve_jobs(ws: ClientConnection, output: str, service_s: float = 0.0) -> None:
    protocol = ws.protocol
    loop = asyncio.get_running_loop()

    sending: set[asyncio.Task[None]] = set()

    def finish(job_id: str, attempt: int) -> None:
        task = loop.create_task(ws.send(_encode(JobResult(job_id, attempt, True, output)).decode()))
        sending.add(task)
        task.add_done_callback(sending.discard)

    async for frame in ws:
        message = _decode(frame)
        if message.type != "job_assign":
            continue
        if service_s:
            await ws.send(_encode(Accept(message.job_id, message.attempt)).decode())
            loop.call_later(service_s, finish, message.job_id, message.attempt)
            continue
        accept = _encode(Accept(message.job_id, message.attempt))
        result = _encode(JobResult(message.job_id, message.attempt, True, output))
        # Both frames in one transport write, no await in between.
        async with ws.send_context():
            protocol.send_text(accept)
            protocol.send_text(result)


async def _echo(ws: ClientConnection) -> None:
    async for frame in ws:
        await ws.send(frame)


async def _open(url: str, node_id: str, args: argparse.Namespace) -> ClientConnection:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    tls = ssl.create_default_context(cafile=args.ca_file) if url.startswith("wss://") else None
    ws = await connect(url, compression=None, ping_interval=None, max_size=None,
                       open_timeout=60, additional_headers=headers, ssl=tls)
    if args.mode != "echo":
        await _register(ws, node_id, args.src, args.tgt, args.max_concurrency)
    return ws


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = args.url.rstrip("/")
    url = base + ("/node" if args.mode == "echo" else "/v1/node")
    conns: list[ClientConnection] = []
    ids = [f"{args.prefix}-{args.start + i}" for i in range(args.count)]
    if args.start_at:
        emit(waiting=len(ids))
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    for first in range(0, len(ids), args.batch):
        batch = ids[first:first + args.batch]
        conns.extend(await asyncio.gather(*(_open(url, node_id, args) for node_id in batch)))
        if args.mode == "idle" and len(ids) > args.batch:
            emit(connected=len(conns))
    workers: list[asyncio.Task[None]] = []
    if args.mode == "hub":
        output = "x" * args.output_bytes if args.output_bytes else "ok"
        workers = [
            asyncio.create_task(_serve_jobs(ws, output, args.service_ms / 1000)) for ws in conns
        ]
    elif args.mode == "echo":
        workers = [asyncio.create_task(_echo(ws)) for ws in conns]
    emit(ready=len(conns))
    await stop.wait()
    for task in workers:
        task.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the hub or relay")
    parser.add_argument("--mode", choices=("hub", "echo", "idle"), required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--start", type=int, default=0, help="first node index (node ids)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--batch", type=int, default=200, help="concurrent handshakes")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--service-ms", type=float, default=0.0,
                        help="hub mode: time from job_accept to job_result")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--token", default=None, help="bearer token (auth = jwt hubs)")
    parser.add_argument("--ca-file", default=None, help="CA of a wss:// hub")
    parser.add_argument("--output-bytes", type=int, default=0,
                        help="hub mode: each result's output, in bytes (default: \"ok\")")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (time.time()) of the first connection")
    args = parser.parse_args()
    raise_nofile(args.count + 1024)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fleet of minimal raw-websockets MessagePack nodes for the live benchmark, one process.

Each node connects to `URL/v1/node` with the `hub.v1.msgpack` subprotocol (an
utterance's audio arrives as MessagePack `bin`, as a speech node would take
it, not as base64 text), registers, and on every `job_assign` writes
`job_accept` at once and an ok `job_result` `--service-ms` later (the
simulated compute); with `--service-ms 0` both frames go out in one write,
no await in between. The payload (the utterance's audio) is skipped by the
decoder, never copied into a Python object.

Prints `{"ready": N}` once every node is registered, then serves until SIGTERM.

Usage: python benchmarks/_live_nodes.py --url ws://127.0.0.1:P --count 4
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import msgspec
import uvloop
from _nodes import Accept, Assign, JobResult
from _procs import emit, raise_nofile
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

MSGPACK = Subprotocol("hub.v1.msgpack")


_decode = msgspec.msgpack.Decoder(Assign).decode
_encode = msgspec.msgpack.Encoder().encode
OUTPUT = {"text": "ok"}


async def _open(url: str, node_id: str, args: argparse.Namespace) -> ClientConnection:
    ws = await connect(url, subprotocols=[MSGPACK], compression=None, ping_interval=None,
                       max_size=None, open_timeout=60)
    await ws.send(_encode({
        "type": "register",
        "node_id": node_id,
        "version": "bench",
        "capabilities": {
            "language_pairs": [{"src": args.src, "tgt": args.tgt}],
            "asr_languages": [args.src],
            "tts_languages": [args.tgt],
            "max_concurrency": args.max_concurrency,
        },
    }))
    reply = _decode(await ws.recv())
    if reply.type != "registered":
        raise RuntimeError(f"{node_id}: registration refused: {reply}")
    return ws


async def _serve(ws: ClientConnection, service_s: float) -> None:
    protocol = ws.protocol
    loop = asyncio.get_running_loop()

    def finish(job_id: str, attempt: int) -> None:
        # Written in the timer's own callback: a task would add a loop turn to the
        # compute the client sees.
        if ws.transport.is_closing():
            return
        protocol.send_binary(_encode(JobResult(job_id, attempt, True, OUTPUT)))
        ws.transport.writelines(protocol.data_to_send())

    async for frame in ws:
        message = _decode(frame)
        if message.type != "job_assign":
            continue
        accept = _encode(Accept(message.job_id, message.attempt))
        if service_s:
            protocol.send_binary(accept)
            ws.transport.writelines(protocol.data_to_send())
            loop.call_later(service_s, finish, message.job_id, message.attempt)
            continue
        result = _encode(JobResult(message.job_id, message.attempt, True, OUTPUT))
        async with ws.send_context():
            protocol.send_binary(accept)
            protocol.send_binary(result)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = args.url.rstrip("/") + "/v1/node"
    conns = await asyncio.gather(
        *(_open(url, f"{args.prefix}-{i}", args) for i in range(args.count))
    )
    workers = [asyncio.create_task(_serve(ws, args.service_ms / 1000)) for ws in conns]
    emit(ready=len(conns))
    await stop.wait()
    for task in workers:
        task.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the hub")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--prefix", default="live")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--service-ms", type=float, default=0.0,
                        help="simulated compute: job_accept at once, job_result this later")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    args = parser.parse_args()
    raise_nofile(args.count + 1024)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A fleet of minimal raw-websockets no-op nodes, one process (not the agent SDK).

Modes:
- `hub`: connect to `URL/v1/node`, register, and on every `job_assign` write
  `job_accept` and an ok `job_result` at once (both frames in one write); with
  `--service-ms`, the accept at once and the result that much later. The
  result's output is "ok", or `--output-bytes` bytes of text.
- `echo`: connect to the relay floor's `URL/node` and send every frame back.
- `idle`: connect to `URL/v1/node`, register, then do nothing (the memory
  measurement); handshakes run `--batch` at a time.

With `--service-ms`, SIGUSR1 prints the slots' figures since the last one and resets
them (`{"slot_stats": ...}`: service as run, idle gap from a freed slot to the next
assign; see `SlotStats`).

Prints `{"ready": N}` once every node is connected (and registered), then
serves until SIGTERM. With `--start-at EPOCH` (wall clock) it waits until
then before the first connection (the storm benchmark starts several such
processes and lets them all go at once); `--batch` handshakes run at a time.

Usage: python benchmarks/_nodes.py --url ws://127.0.0.1:P --mode hub --count 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
import time
from collections import deque
from typing import Any

import msgspec
import uvloop
from _procs import emit, probe_loop_lag, raise_nofile
from websockets.asyncio.client import ClientConnection, connect


class Assign(msgspec.Struct):
    """What a node needs of a `job_assign` (every other field, the payload too, is
    skipped by the decoder). The benchmarks' other nodes share these structs."""

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


class SlotStats:
    """With `--service-ms`: how the nodes' slots spent their time, to tell the hub's
    share of lost capacity from the rig's. Per job: its service as run (from the
    assign read to the result written: the timer's overshoot included), and the idle
    gap before it: from the moment a slot freed (a result written) to the next
    assign read (the hub's result-to-dispatch turnaround, both hops included).
    Reported and reset on SIGUSR1 (`{"slot_stats": ...}`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.freed: deque[float] = deque()
        self.gaps: list[float] = []
        self.services: list[float] = []

    def report(self, service_s: float) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

        def mean(values: list[float]) -> float:
            return sum(values) / len(values) * 1000 if values else 0.0

        return {
            "jobs": len(self.services), "gaps": len(self.gaps),
            "service_nominal_ms": service_s * 1000,
            "service_mean_ms": round(mean(self.services), 3),
            "service_p50_ms": round(pct(self.services, 0.5), 3),
            "service_p99_ms": round(pct(self.services, 0.99), 3),
            "gap_mean_ms": round(mean(self.gaps), 3),
            "gap_p50_ms": round(pct(self.gaps, 0.5), 3),
            "gap_p99_ms": round(pct(self.gaps, 0.99), 3),
        }


async def _serve_jobs(
    ws: ClientConnection, output: str, service_s: float = 0.0, stats: SlotStats | None = None
) -> None:
    protocol = ws.protocol
    loop = asyncio.get_running_loop()
    stats = stats or SlotStats()
    freed = stats.freed  # when this node's slots freed, oldest first (reset: a new deque)

    def finish(job_id: str, attempt: int, started: float) -> None:
        # Written in the timer's own callback, as a node that frees its slot sends its
        # result at once: a task would add a turn of this process's loop to the gap.
        now = time.monotonic()
        if ws.transport.is_closing():
            return
        protocol.send_text(_encode(JobResult(job_id, attempt, True, output)))
        ws.transport.writelines(protocol.data_to_send())
        stats.services.append(now - started)
        stats.freed.append(now)

    async for frame in ws:
        message = _decode(frame)
        if message.type != "job_assign":
            continue
        if service_s:
            now = time.monotonic()
            if freed is not stats.freed:
                freed = stats.freed
            if freed:
                stats.gaps.append(now - freed.popleft())
            await ws.send(_encode(Accept(message.job_id, message.attempt)).decode())
            loop.call_later(service_s, finish, message.job_id, message.attempt, now)
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
        per_node = [SlotStats() for _ in conns]

        def report() -> None:
            merged = SlotStats()
            for one in per_node:
                merged.gaps += one.gaps
                merged.services += one.services
                one.reset()
            emit(slot_stats=merged.report(args.service_ms / 1000))

        loop.add_signal_handler(signal.SIGUSR1, report)
        if os.environ.get("NODEHUB_BENCH_LOOPLAG"):
            probe_loop_lag(loop, "nodes loop")
        workers = [
            asyncio.create_task(_serve_jobs(ws, output, args.service_ms / 1000, stats))
            for ws, stats in zip(conns, per_node, strict=True)
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

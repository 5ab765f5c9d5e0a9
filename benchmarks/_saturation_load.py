"""The saturation benchmark's load: two clients offering an open-loop load for a while.

Each client is one `/v1/client` connection; client `i` submits at
`rate * weight_i / sum(weights)` jobs per second, paced on 2 ms ticks, for
`--duration` seconds, then waits (bounded) for every answer. Every job's
submit, accepted (`queued` or not) and result times are kept; one JSON line
with the per-job records' summary goes to stdout (`{"done": ...}`).

Usage: python benchmarks/_saturation_load.py --url ws://127.0.0.1:P --rate 6400
    --weights 1,4 --duration 10 [--queue-timeout-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import msgspec
import uvloop
from _procs import emit
from websockets.asyncio.client import ClientConnection, connect


class Answer(msgspec.Struct):
    type: str
    request_id: str = ""
    queued: bool = False
    ok: bool = False
    code: str = ""
    error: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(Answer).decode
_encode = msgspec.json.Encoder().encode


class Client:
    def __init__(self, name: str, ws: ClientConnection, rate: float, args: argparse.Namespace):
        self.name = name
        self.ws = ws
        self.rate = rate
        self.args = args
        self.submitted: dict[str, float] = {}
        self.queued: set[str] = set()
        self.results: list[tuple[str, float, float, bool, str]] = []
        """(request id, submitted at, answered at, ok, error code or rejected code)."""
        self.outstanding = 0
        self.all_answered = asyncio.Event()

    async def read(self) -> None:
        async for frame in self.ws:
            answer = _decode(frame)
            now = time.monotonic()
            if answer.type == "accepted":
                if answer.queued:
                    self.queued.add(answer.request_id)
                continue
            if answer.type not in ("result", "rejected"):
                continue
            sent = self.submitted.pop(answer.request_id, None)
            if sent is None:
                continue
            code = answer.code
            if answer.type == "result" and not answer.ok:
                code = (answer.error or {}).get("code", "failed")
            self.results.append(
                (answer.request_id, sent, now, answer.type == "result" and answer.ok, code)
            )
            self.outstanding -= 1
            if self.outstanding == 0 and self.finished_sending:
                self.all_answered.set()

    finished_sending = False

    async def offer(self, started: float) -> None:
        sent = 0
        tick = 0.002
        end = started + self.args.duration
        base: dict[str, Any] = {"type": "submit", "src_lang": "en", "tgt_lang": "de"}
        if self.args.queue_timeout_ms is not None:
            base["queue_timeout_ms"] = self.args.queue_timeout_ms
        while (now := time.monotonic()) < end:
            due = int((now - started) * self.rate)
            frames = []
            while sent < due:
                request_id = f"{self.args.run_id}-{self.name}-{sent}"
                self.submitted[request_id] = time.monotonic()
                frames.append(_encode({**base, "request_id": request_id}).decode())
                sent += 1
            self.outstanding += len(frames)
            for frame in frames:
                await self.ws.send(frame)
            await asyncio.sleep(tick)
        self.finished_sending = True
        if self.outstanding == 0:
            self.all_answered.set()


async def run(args: argparse.Namespace) -> None:
    weights = [float(w) for w in args.weights.split(",")]
    url = args.url.rstrip("/") + "/v1/client"
    clients = []
    for i, weight in enumerate(weights):
        ws = await connect(url, compression=None, ping_interval=None, max_size=None)
        clients.append(Client(f"c{i + 1}", ws, args.rate * weight / sum(weights), args))
    readers = [asyncio.create_task(c.read()) for c in clients]
    started = time.monotonic()
    await asyncio.gather(*(c.offer(started) for c in clients))
    with_drain = args.drain_s
    try:
        async with asyncio.timeout(with_drain):
            await asyncio.gather(*(c.all_answered.wait() for c in clients))
    except TimeoutError:
        pass
    for task in readers:
        task.cancel()
    emit(done={
        "started": started,
        "duration": args.duration,
        "clients": {
            c.name: {
                "rate": c.rate,
                "unanswered": len(c.submitted),
                "queued": len(c.queued),
                "results": [
                    (s - started, a - started, ok, code) for _, s, a, ok, code in c.results
                ],
            }
            for c in clients
        },
    })
    for c in clients:
        await c.ws.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="jobs/s offered in total")
    parser.add_argument("--weights", default="1,4")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain-s", type=float, default=60.0)
    parser.add_argument("--queue-timeout-ms", type=int, default=None)
    args = parser.parse_args()
    args.run_id = f"{os.getpid()}-{time.time_ns()}"  # request ids never repeat across runs
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The transport floor of one cross-hub round trip through Redis Streams.

In cross_instance mode a job that crosses hubs takes two Redis hops on its
critical path: hub A appends an entry to hub B's inbox stream, B (blocked in
XREADGROUP) reads it, and B's answer comes back the same way through A's
stream. This benchmark does exactly those two hops and nothing else, between
two processes on uvloop:

    A: XADD b-stream -> B: XREADGROUP, XADD a-stream, XACK -> A: XREADGROUP, XACK

one trip at a time (the next leaves when the previous came back), with two
client transports measured in the same run, rounds interleaved:

- `redis-py`: the stock `redis.asyncio.Redis` client (default pool), one
  awaited command at a time;
- `pipe`: the project's `hub.store.resp.RespPipe`, one pipe to send and one
  for the blocking read (XACK and the next XREADGROUP written back to back).

What is left is the floor the Redis client and server put under the hub's
cross-instance latency; compare its p50 with `benchmarks/dispatch.py --mode
cross_instance` minus `--mode local` to see how much of the cross-instance
cost is the transport itself.

Usage: python benchmarks/redis_hop.py [--rounds 3] [--trips 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import uvloop
from _procs import ProcGroup, emit, install_exit_on_sigterm, start_redis

TRANSPORTS = ("redis-py", "pipe")
GROUP = "hop"
SEQ_DIGITS = 10


class Transport(Protocol):
    async def create_group(self, stream: str) -> None: ...
    async def send(self, stream: str, payload: bytes) -> None: ...
    async def read(self, stream: str) -> list[bytes]:
        """The next entries' payloads (blocking); acknowledges the previous batch first."""
        ...
    async def close(self) -> None: ...


class RedisPy:
    def __init__(self, url: str, consumer: str) -> None:
        import redis.asyncio

        self.r = redis.asyncio.Redis.from_url(url)
        self.consumer = consumer
        self.unacked: list[bytes] = []

    async def create_group(self, stream: str) -> None:
        await self.r.xgroup_create(stream, GROUP, id="$", mkstream=True)

    async def send(self, stream: str, payload: bytes) -> None:
        await self.r.xadd(stream, {"e": payload}, maxlen=1000, approximate=True)

    async def read(self, stream: str) -> list[bytes]:
        if self.unacked:
            await self.r.xack(stream, GROUP, *self.unacked)
            self.unacked = []
        reply: Any = await self.r.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=100, block=1000
        )
        payloads: list[bytes] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.unacked.append(entry_id)
                payloads.append(fields[b"e"])
        return payloads

    async def close(self) -> None:
        await self.r.aclose()


class Pipe:
    def __init__(self, url: str, consumer: str) -> None:
        self.url = url
        self.consumer = consumer
        self.unacked: list[bytes] = []

    async def open(self) -> Pipe:
        from hub.store.resp import RespPipe

        self.sender = await RespPipe.open_url(self.url, timeout_s=2.0)
        self.reader = await RespPipe.open_url(self.url, timeout_s=2.0)
        return self

    async def create_group(self, stream: str) -> None:
        await self.sender.call("XGROUP", "CREATE", stream, GROUP, "$", "MKSTREAM")

    async def send(self, stream: str, payload: bytes) -> None:
        await self.sender.call("XADD", stream, "MAXLEN", "~", 1000, "*", "e", payload)

    async def read(self, stream: str) -> list[bytes]:
        ack = self.reader.call("XACK", stream, GROUP, *self.unacked) if self.unacked else None
        read = self.reader.call("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", 100,
                                "BLOCK", 1000, "STREAMS", stream, ">", timeout_s=5.0)
        self.unacked = []
        if ack is not None:
            await ack
        reply: Any = await read
        payloads: list[bytes] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.unacked.append(entry_id)
                payloads.append(fields[1])
        return payloads

    async def close(self) -> None:
        self.sender.close()
        self.reader.close()


async def open_transport(name: str, url: str, consumer: str) -> Transport:
    return RedisPy(url, consumer) if name == "redis-py" else await Pipe(url, consumer).open()


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def echo(args: argparse.Namespace) -> None:
    """Process B: every entry read from b-stream goes on to a-stream."""
    t = await open_transport(args.transport, args.url, "b")
    await t.create_group(f"{args.tag}:b")
    emit(ready=True)
    while True:
        for payload in await t.read(f"{args.tag}:b"):
            await t.send(f"{args.tag}:a", payload)


async def drive(args: argparse.Namespace) -> None:
    """Process A: one trip at a time; the time from XADD to reading the entry back."""
    loop = asyncio.get_running_loop()
    t = await open_transport(args.transport, args.url, "a")
    await t.create_group(f"{args.tag}:a")
    waiting: tuple[int, asyncio.Future[int]] | None = None
    stopping = False

    async def reader() -> None:
        while not stopping:
            payloads = await t.read(f"{args.tag}:a")
            now = time.perf_counter_ns()
            for payload in payloads:
                if (waiting is not None and int(payload[:SEQ_DIGITS]) == waiting[0]
                        and not waiting[1].done()):
                    waiting[1].set_result(now)

    task = asyncio.create_task(reader())
    pad = b"x" * max(0, args.payload_bytes - SEQ_DIGITS)
    samples: list[float] = []
    for seq in range(args.warmup + args.trips):
        waiting = (seq, loop.create_future())
        start = time.perf_counter_ns()
        await t.send(f"{args.tag}:b", b"%0*d" % (SEQ_DIGITS, seq) + pad)
        done = await asyncio.wait_for(waiting[1], 5.0)
        if seq >= args.warmup:
            samples.append((done - start) / 1000)
    # On Python 3.11 redis-py can swallow a cancellation (asyncio.wait_for around its
    # socket writes), so the reader also checks a flag: it stops within one BLOCK.
    stopping = True
    task.cancel()
    await asyncio.wait([task], timeout=3.0)
    await t.close()
    samples.sort()
    emit(result={"p50_us": percentile(samples, 0.50), "p99_us": percentile(samples, 0.99)})


def one_round(procs: ProcGroup, args: argparse.Namespace, url: str, transport: str,
              tag: str) -> dict[str, float]:
    return measure(procs, url, transport=transport, tag=tag, trips=args.trips,
                   warmup=args.warmup, payload_bytes=args.payload_bytes)


def measure(procs: ProcGroup, url: str, *, transport: str = "pipe", tag: str = "hop",
            trips: int = 2000, warmup: int = 200, payload_bytes: int = 300,
            ) -> dict[str, float]:
    """One measurement of the two hops (p50_us, p99_us) on the Redis at `url`, by two
    fresh processes of `procs` (streams named after `tag`). `benchmarks/dispatch.py
    --mode cross_instance` calls it on its own Redis: the floor in the same run."""
    common = ("--transport", transport, "--url", url, "--tag", tag,
              "--payload-bytes", str(payload_bytes))
    b = procs.spawn("echo", "redis_hop.py", "--role", "echo", *common)
    try:
        b.expect("ready", timeout=20)
        a = procs.spawn("drive", "redis_hop.py", "--role", "drive", *common,
                        "--trips", str(trips), "--warmup", str(warmup))
        try:
            result: dict[str, float] = a.expect("result", timeout=60)["result"]
            a.wait(10)
        finally:
            procs.stop(a)
    finally:
        procs.stop(b)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("main", "echo", "drive"), default="main")
    parser.add_argument("--transport", choices=TRANSPORTS, default="pipe")
    parser.add_argument("--url", default="")
    parser.add_argument("--tag", default="hop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.role != "main":
        uvloop.run(echo(args) if args.role == "echo" else drive(args))
        return 0
    program = shutil.which("redis-server")
    if program is None:
        print("redis_hop.py: needs redis-server on PATH", file=sys.stderr)
        return 2
    install_exit_on_sigterm()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in TRANSPORTS}
    with ProcGroup() as procs:
        url = f"redis://127.0.0.1:{start_redis(procs, program)}/0"
        for n in range(args.rounds):
            for transport in TRANSPORTS:
                tag = f"hop-{n}-{transport}"
                rounds[transport].append(one_round(procs, args, url, transport, tag))
    summary: dict[str, dict[str, Any]] = {
        name: {q: statistics.median(r[q] for r in results) for q in ("p50_us", "p99_us")}
        | {"rounds": results}
        for name, results in rounds.items()
    }
    print(f"redis stream round trip (2 hops, A -> Redis -> B -> Redis -> A), 2 processes, "
          f"medians of {args.rounds} rounds")
    print(f"{'transport':<12}{'p50 us':>8}{'p99 us':>9}")
    for name in TRANSPORTS:
        print(f"{name:<12}{summary[name]['p50_us']:>8.0f}{summary[name]['p99_us']:>9.0f}")
    ratio = [summary["pipe"][q] / summary["redis-py"][q] for q in ("p50_us", "p99_us")]
    print(f"{'pipe/redis-py':<13}{ratio[0]:>7.2f}{ratio[1]:>9.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "benchmark": "redis_hop", "rounds": args.rounds, "trips": args.trips,
            "payload_bytes": args.payload_bytes, "transports": summary, "cpus": os.cpu_count(),
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

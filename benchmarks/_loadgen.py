"""The load generator: one raw-websockets client connection, no-op jobs.

Against the hub (`--target hub`) it sends `submit` frames to `URL/v1/client`
and a job is done at its `result`; against the relay floor (`--target floor`)
it sends the same frames to `URL/client` and a job is done when its frame
comes back from an echo node. Both are matched on `request_id`.

Phases: RTT (1 job in flight; `--warmup` untimed jobs, then `--rtt-jobs`
sequential jobs, each timed submit -> done with perf_counter_ns), then
throughput (`--in-flight` jobs in flight until `--tp-jobs` are done; a new
submit is written as soon as one finishes). Prints one JSON line. With
`--cpu-pids` it also reports the CPU time those processes (the hub, or the
floor) ran during the throughput phase, per job (`server_cpu_us_per_job`, from
/proc/PID/schedstat), and during the RTT phase (`server_cpu_us_per_job_rtt`:
one job at a time, every frame a loop wakeup of its own): what a job costs the
server, whatever else shares the machine. Beside it, what the peers cost
(`peers_cpu_us_per_job`: this process and `--fleet-pid`'s, the node fleet),
which shares the same CPUs: on a 2-core machine a benchmark's throughput is
bounded by 2 s / (server + peers CPU per job) whatever the server does.

With `--handshakes N` it first opens and closes N client sessions one after the
other and reports the handshake time of each (connect until the session is
open: TCP, TLS with `--ca-file`, the HTTP upgrade and the hub's token check
with `--token`).

With `--redis-port P` (cross_instance mode) it also reads `INFO commandstats`
of that Redis right before and after each timed phase (after a short settle,
so the previous phase's trailing commands are not counted and this phase's
are) and reports the calls per command in between and the window's length.

Usage: python benchmarks/_loadgen.py --url ws://127.0.0.1:P --target hub
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import ssl
import sys
import time
from typing import Any

import msgspec
import uvloop
from _procs import calls_delta, cpu_ns, emit, redis_commandstats
from websockets.asyncio.client import ClientConnection, connect

REDIS_SETTLE_S = 0.05
"""Quiet time before a Redis snapshot: longer than the hubs' load publish interval."""

DONE_TYPES = frozenset(("result", "submit"))
FAILED_TYPES = frozenset(("rejected", "error"))


class Reply(msgspec.Struct):
    type: str
    request_id: str = ""
    ok: bool = True


_decode = msgspec.json.Decoder(Reply).decode


class Load:
    def __init__(self, ws: ClientConnection, args: argparse.Namespace) -> None:
        self.ws = ws
        self.prefix = args.prefix
        self.head = f'{{"type":"submit","src_lang":"{args.src}","tgt_lang":"{args.tgt}",'
        self.seq = 0
        self.waiter: asyncio.Future[None] | None = None
        self.failures = 0
        self.failure_sample: str | None = None
        # throughput phase
        self.remaining_to_send = 0
        self.outstanding = 0
        self.finished: asyncio.Future[None] | None = None

    def frame(self) -> str:
        self.seq += 1
        return f'{self.head}"request_id":"{self.prefix}{self.seq}","payload":"x"}}'

    async def read(self) -> None:
        async for frame in self.ws:
            reply = _decode(frame)
            if reply.type in DONE_TYPES:
                if not reply.ok:
                    self._fail(frame)
            elif reply.type in FAILED_TYPES:
                self._fail(frame)
            else:
                continue  # accepted, progress
            await self._done()

    def _fail(self, frame: str | bytes) -> None:
        self.failures += 1
        if self.failure_sample is None:
            self.failure_sample = frame if isinstance(frame, str) else frame.decode()

    async def _done(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set_result(None)
            return
        self.outstanding -= 1
        if self.remaining_to_send > 0:
            self.remaining_to_send -= 1
            self.outstanding += 1
            await self.ws.send(self.frame())
        elif self.outstanding == 0 and self.finished is not None:
            self.finished.set_result(None)

    async def one(self) -> int:
        """One job alone; its round trip in ns."""
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        started = time.perf_counter_ns()
        await self.ws.send(self.frame())
        await self.waiter
        return time.perf_counter_ns() - started

    async def flood(self, total: int, in_flight: int) -> float:
        """`total` jobs, `in_flight` at a time; the elapsed seconds."""
        self.finished = asyncio.get_running_loop().create_future()
        first = min(total, in_flight)
        self.remaining_to_send = total - first
        self.outstanding = first
        started = time.perf_counter()
        for _ in range(first):
            await self.ws.send(self.frame())
        await self.finished
        return time.perf_counter() - started


def _percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


QUANTILES = (
    0.001, *(i / 100 for i in range(1, 100)), 0.995, 0.999,
)
"""The RTT distribution each measurement reports (`rtt_quantiles_us`; benchmarks/report.py
draws it)."""


class RedisWindow:
    """Redis commands between `open()` and `close()` (a no-op without a port)."""

    def __init__(self, port: int | None) -> None:
        self.port = port
        self._before: dict[str, int] = {}
        self._started = 0.0

    async def open(self) -> None:
        if self.port is not None:
            await asyncio.sleep(REDIS_SETTLE_S)
            self._before = redis_commandstats(self.port)
            self._started = time.perf_counter()

    async def close(self) -> dict[str, Any] | None:
        if self.port is None:
            return None
        await asyncio.sleep(REDIS_SETTLE_S)
        calls = calls_delta(redis_commandstats(self.port), self._before)
        return {"seconds": time.perf_counter() - self._started, "calls": calls}


async def handshakes(url: str, count: int, options: dict[str, Any]) -> list[int]:
    """`count` sessions opened and closed one after the other; each one's open time (ns)."""
    times = []
    for _ in range(count):
        started = time.perf_counter_ns()
        ws = await connect(url, compression=None, ping_interval=None, **options)
        times.append(time.perf_counter_ns() - started)
        await ws.close()
    return sorted(times)


async def run(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/") + ("/v1/client" if args.target == "hub" else "/client")
    window = RedisWindow(args.redis_port)
    options: dict[str, Any] = {}
    if args.token:
        options["additional_headers"] = {"Authorization": f"Bearer {args.token}"}
    if url.startswith("wss://"):
        options["ssl"] = ssl.create_default_context(cafile=args.ca_file)
    shakes = await handshakes(url, args.handshakes, options) if args.handshakes else []
    async with connect(url, compression=None, ping_interval=None, max_size=None,
                       **options) as ws:
        load = Load(ws, args)
        reader = asyncio.create_task(load.read())
        try:
            for _ in range(args.warmup):
                await asyncio.wait_for(load.one(), args.timeout)
            gc.collect()
            rtts = []
            await window.open()
            cpu_before = cpu_ns(args.cpu_pids)
            for _ in range(args.rtt_jobs):
                rtts.append(await asyncio.wait_for(load.one(), args.timeout))
            rtt_cpu = cpu_ns(args.cpu_pids) - cpu_before
            redis_rtt = await window.close()
            rtts.sort()
            await asyncio.wait_for(load.flood(args.warmup, args.in_flight), args.timeout)
            gc.collect()
            await window.open()
            peers = [os.getpid(), *([args.fleet_pid] if args.fleet_pid else [])]
            cpu_before, peers_before = cpu_ns(args.cpu_pids), cpu_ns(peers)
            elapsed = await asyncio.wait_for(
                load.flood(args.tp_jobs, args.in_flight), args.timeout
            )
            cpu = cpu_ns(args.cpu_pids) - cpu_before
            peers_cpu = cpu_ns(peers) - peers_before
            redis_tp = await window.close()
        finally:
            reader.cancel()
    extra: dict[str, Any] = {}
    if redis_rtt is not None and redis_tp is not None:
        extra["redis"] = {"rtt": redis_rtt, "tp": redis_tp}
    extra["peers_cpu_us_per_job"] = peers_cpu / 1000 / args.tp_jobs
    if args.cpu_pids:
        extra["server_cpu_us_per_job"] = cpu / 1000 / args.tp_jobs
        extra["server_cpu_us_per_job_rtt"] = rtt_cpu / 1000 / args.rtt_jobs
    if shakes:
        extra["handshake_p50_us"] = _percentile(shakes, 0.50) / 1000
        extra["handshake_mean_us"] = sum(shakes) / len(shakes) / 1000
    emit(
        result=args.target,
        rtt_p50_us=_percentile(rtts, 0.50) / 1000,
        rtt_p90_us=_percentile(rtts, 0.90) / 1000,
        rtt_p99_us=_percentile(rtts, 0.99) / 1000,
        rtt_mean_us=sum(rtts) / len(rtts) / 1000,
        rtt_quantiles_us={
            "q": list(QUANTILES),
            "us": [round(_percentile(rtts, q) / 1000, 3) for q in QUANTILES],
        },
        jobs_per_s=args.tp_jobs / elapsed,
        tp_seconds=elapsed,
        failures=load.failures,
        failure_sample=load.failure_sample,
        **extra,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--target", choices=("hub", "floor"), required=True)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rtt-jobs", type=int, default=2000)
    parser.add_argument("--tp-jobs", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--prefix", default="r", help="request_id prefix (unique per run)")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    parser.add_argument("--cpu-pids", type=lambda v: [int(p) for p in v.split(",") if p],
                        default=[], help="the server's processes: their CPU time per job "
                        "in the throughput phase (server_cpu_us_per_job)")
    parser.add_argument("--fleet-pid", type=int, default=0,
                        help="the node fleet's process: with this one's, their CPU time per "
                        "job in the throughput phase (peers_cpu_us_per_job)")
    parser.add_argument("--redis-port", type=int, help="count this Redis's commands per phase")
    parser.add_argument("--token", default=None, help="bearer token (auth = jwt hubs)")
    parser.add_argument("--ca-file", default=None, help="CA of a wss:// hub")
    parser.add_argument("--handshakes", type=int, default=0,
                        help="first time this many session handshakes")
    args = parser.parse_args()
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

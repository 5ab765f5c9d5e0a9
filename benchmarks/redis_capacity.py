"""How many cross-hub jobs can one Redis core carry? Redis CPU, commands and bytes per job.

Replays the Redis side of a cross-hub job, through the hub's own store code
(`RedisStore`, its Lua scripts and pipelined connections) with real encoded
envelopes and records, against a throwaway `redis-server`: hub A binds the
request and dispatches to hub B (`BIND_MANY`), B reads its inbox
(`XREADGROUP` + `XACK` of the previous read), B sends the node's result back
(`SEND_MANY`), A reads it and archives the finished record (`XREADGROUP` +
`SAVE_MANY` + `XACK`, one write). Each step carries `--batch` jobs, as the
hubs batch one event-loop turn's work (1 = no batching possible; 16-64 is
what a loaded hub sends). `--pairs` hub pairs run at once (rising hub
counts) on one event loop.

Per job it reports what Redis itself spent: main-thread CPU (`INFO cpu`,
`used_cpu_sys_main_thread + used_cpu_user_main_thread`), commands
(`INFO commandstats`, scripts' inner calls included), and bytes in and out
(`INFO stats`, `total_net_input_bytes`/`total_net_output_bytes`). The
headline, `jobs_per_core_s` = 1 / (Redis CPU per job): the jobs per second
one Redis core sustains for this workload when the hubs keep it busy (Redis
executes commands on one thread). The baseline in the same run is batch 1.

Usage:
    python benchmarks/redis_capacity.py [--jobs 20000] [--batches 1,16,64]
                                        [--pairs 1,4] [--payload-bytes 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import uvloop
from _procs import ProcGroup, calls_delta, redis_command, redis_commandstats, start_redis

from hub.core.envelopes import Dispatch, NodeEvent, encode
from hub.core.job_state import AttemptRecord, JobRecord
from hub.core.messages import JobAssign, JobResult, Pipeline, Result
from hub.store.base import Binding, RecordBatch
from hub.store.redis import RedisStore


def _info(port: int, section: str) -> dict[str, str]:
    text = redis_command(port, "INFO", section).decode()
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def _cpu_s(port: int) -> float:
    info = _info(port, "cpu")
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _net(port: int) -> tuple[int, int]:
    info = _info(port, "stats")
    return int(info["total_net_input_bytes"]), int(info["total_net_output_bytes"])


def _payload(size: int) -> dict[str, str]:
    return {"audio_url": "s3://bucket/" + "u" * max(0, size - 30)}


class Pair:
    """Hub A (client side) and hub B (node side), each with its own store."""

    def __init__(self, url: str, prefix: str, index: int, payload_bytes: int) -> None:
        self.a = RedisStore(hub_id=f"a{index}", url=url, prefix=prefix)
        self.b = RedisStore(hub_id=f"b{index}", url=url, prefix=prefix)
        self.index = index
        self.payload = _payload(payload_bytes)
        self.seq = 0
        self.ack_a: list[str] = []
        self.ack_b: list[str] = []

    async def start(self) -> None:
        await self.a.start()
        await self.b.start()
        # As a hub's archive does after its first NOSCRIPT: SAVE_MANY is then cached for
        # the EVALSHA that rides with inbox reads.
        await self.a.save_jobs([(f"warm-{self.index}", b"{}")], 1000)

    async def aclose(self) -> None:
        await self.a.aclose()
        await self.b.aclose()

    async def round(self, batch: int) -> int:
        """`batch` jobs through the four steps; how many results A read back."""
        a, b = self.a.hub_id, self.b.hub_id
        bindings, records = [], []
        for _ in range(batch):
            self.seq += 1
            job_id = f"{a}.{self.seq}"
            request_id = f"req-{self.index}-{self.seq}"
            assign = JobAssign(
                job_id=job_id, attempt=1, session_id=f"{a}:c1", src_lang="en", tgt_lang="de",
                features=["emotion_detection"], pipeline=Pipeline(),
                deadline_ms=1_800_000_000_000, payload=self.payload,
            )
            envelope = encode(Dispatch(sender=a, node_id="gpu-01", request_id=request_id,
                                       assign=assign))
            bindings.append(Binding(request_id, job_id, 600_000, send_to=b, envelope=envelope))
            output = {"text": "hello world", "translation": "hallo Welt",
                      "audio_url": "s3://bucket/out-1.wav"}
            result = Result(request_id=request_id, job_id=job_id, node_id="gpu-01", ok=True,
                            attempts=1, output=output)
            record = JobRecord(
                job_id=job_id, request_id=request_id, status="done", node_id="gpu-01",
                hub_id=a, session_id=f"{a}:c1", attempt=1, src_lang="en", tgt_lang="de",
                features=["emotion_detection"], pipeline=Pipeline(), created_ms=1_700_000_000_000,
                timeout_ms=60_000, attempts=[AttemptRecord(1, "gpu-01", 1_700_000_000_000, "ok")],
                result=result,
            )
            records.append((job_id, json.dumps(_builtin(record)).encode()))
        await self.a.bind_requests(bindings)
        got_b: list[tuple[str, bytes]] = []
        while len(got_b) < batch:
            got = await self.b.read_inbox(block_ms=1000, count=batch, ack=self.ack_b)
            self.ack_b = [entry_id for entry_id, _ in got]
            got_b += got
        results = [
            (a, encode(NodeEvent(sender=b, node_id="gpu-01", request_id=f"r{i}",
                                 message=JobResult(job_id=f"{a}.{i}", attempt=1, ok=True,
                                                   output={"text": "hallo Welt"}))))
            for i in range(batch)
        ]
        await self.b.send_many(results)
        got_a: list[tuple[str, bytes]] = []
        pending = RecordBatch(records, 600_000)
        while len(got_a) < batch:
            got = await self.a.read_inbox(block_ms=1000, count=batch, ack=self.ack_a,
                                          records=pending)
            if pending is not None:
                assert pending.saved, "the records did not ride with the read"
            pending = None
            self.ack_a = [entry_id for entry_id, _ in got]
            got_a += got
        return len(got_a)


def _builtin(record: JobRecord) -> Any:
    import msgspec

    return msgspec.to_builtins(record)


async def run_case(url: str, port: int, pairs: int, batch: int, jobs: int,
                   payload_bytes: int) -> dict[str, Any]:
    prefix = f"cap-{uuid.uuid4().hex[:8]}"
    group = [Pair(url, prefix, i, payload_bytes) for i in range(pairs)]
    for pair in group:
        await pair.start()
    rounds = max(1, jobs // (batch * pairs))
    # Warm-up (scripts loaded, groups made), untimed.
    await asyncio.gather(*(pair.round(batch) for pair in group))
    await asyncio.sleep(0.05)
    stats0, cpu0, net0 = redis_commandstats(port), _cpu_s(port), _net(port)
    t0 = time.perf_counter()

    async def drive(pair: Pair) -> None:
        for _ in range(rounds):
            await pair.round(batch)

    await asyncio.gather(*(drive(pair) for pair in group))
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    stats1, cpu1, net1 = redis_commandstats(port), _cpu_s(port), _net(port)
    for pair in group:
        await pair.aclose()
    done = rounds * batch * pairs
    calls = calls_delta(stats1, stats0)
    cpu_us = (cpu1 - cpu0) * 1e6 / done
    return {
        "pairs": pairs, "batch": batch, "jobs": done, "wall_s": round(wall, 3),
        "client_jobs_per_s": round(done / wall, 1),
        "redis_cpu_us_per_job": round(cpu_us, 2),
        "jobs_per_core_s": round(1e6 / cpu_us, 0) if cpu_us > 0 else None,
        "commands_per_job": round(sum(calls.values()) / done, 2),
        "calls_per_job": {k: round(v / done, 2) for k, v in sorted(calls.items())},
        "bytes_in_per_job": round((net1[0] - net0[0]) / done, 1),
        "bytes_out_per_job": round((net1[1] - net0[1]) / done, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per case")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--pairs", default="1,4", help="hub pairs at once (comma-separated)")
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    program = shutil.which("redis-server")
    if program is None:
        raise SystemExit("redis_capacity.py needs redis-server")
    rows = []
    print(f"# cross-hub job's Redis side through RedisStore; {args.jobs} jobs per case; "
          f"payload {args.payload_bytes} B; Redis main-thread CPU per job -> jobs/s per core")
    print(f"{'pairs':>5} {'batch':>5} {'cmds/job':>8} {'in B/job':>9} {'out B/job':>9} "
          f"{'redis us/job':>12} {'jobs/s/core':>11} {'client jobs/s':>13}")
    with ProcGroup() as procs:
        port = start_redis(procs, program)
        url = f"redis://127.0.0.1:{port}/0"
        for pairs in (int(p) for p in args.pairs.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                row = uvloop.run(run_case(url, port, pairs, batch, args.jobs, args.payload_bytes))
                rows.append(row)
                print(f"{pairs:>5} {batch:>5} {row['commands_per_job']:>8.2f} "
                      f"{row['bytes_in_per_job']:>9.0f} {row['bytes_out_per_job']:>9.0f} "
                      f"{row['redis_cpu_us_per_job']:>12.1f} {row['jobs_per_core_s']:>11.0f} "
                      f"{row['client_jobs_per_s']:>13.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"payload_bytes": args.payload_bytes, "cases": rows}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

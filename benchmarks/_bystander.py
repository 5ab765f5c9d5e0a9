"""The storm benchmark's bystander: one client connection running jobs back to back.

`--in-flight` loops each submit a job (`--src`/`--tgt`, which only the
bystander nodes serve) and wait for its `result`, again and again, recording
the wall-clock time of each submit and its round trip. Prints `{"ready": 1}`
once connected; on SIGTERM prints `{"samples": [[t_submit, rtt_ms], ...],
"failures": n, "failure_sample": first failed answer or null}` and exits.
`--token`: its bearer token (`auth = "jwt"` hubs).

Usage: python benchmarks/_bystander.py --url ws://127.0.0.1:P
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time

import uvloop
from _procs import emit
from websockets.asyncio.client import connect


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    ws = await connect(args.url.rstrip("/") + "/v1/client", compression=None,
                       ping_interval=None, max_size=None, additional_headers=headers)
    waiting: dict[str, asyncio.Future[bool]] = {}
    samples: list[tuple[float, float]] = []
    failures = 0
    failure_sample: str | None = None
    seq = itertools.count()

    async def reader() -> None:
        nonlocal failure_sample
        async for frame in ws:
            msg = json.loads(frame)
            kind = msg.get("type")
            if kind in ("result", "rejected", "error"):
                ok = kind == "result" and msg.get("ok", False)
                if not ok and failure_sample is None:
                    failure_sample = frame if isinstance(frame, str) else frame.decode()
                future = waiting.pop(msg.get("request_id", ""), None)
                if future is not None and not future.done():
                    future.set_result(ok)

    async def worker() -> None:
        nonlocal failures
        while not stop.is_set():
            request_id = f"by-{next(seq)}"
            future = loop.create_future()
            waiting[request_id] = future
            wall, t0 = time.time(), time.perf_counter()
            await ws.send(json.dumps({"type": "submit", "request_id": request_id,
                                      "src_lang": args.src, "tgt_lang": args.tgt}))
            try:
                ok = await asyncio.wait_for(future, 30)
            except TimeoutError:
                ok = False
            samples.append((wall, (time.perf_counter() - t0) * 1000))
            if not ok:
                failures += 1
            await asyncio.sleep(args.pause_ms / 1000)

    read = asyncio.create_task(reader())
    emit(ready=1)
    workers = [asyncio.create_task(worker()) for _ in range(args.in_flight)]
    await stop.wait()
    for task in [*workers, read]:
        task.cancel()
    emit(samples=samples, failures=failures, failure_sample=failure_sample)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=5.0, help="between two jobs of a loop")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--token", default=None, help="bearer token (auth = jwt hubs)")
    uvloop.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

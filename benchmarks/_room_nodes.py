"""Raw-websockets translator nodes for benchmarks/rooms.py, one process.

Each node registers serving every pair of `--langs` (ASR and TTS in each), and
answers every `job_assign` at once: `job_accept` and an ok `job_result` whose
output names the job's target language. Prints `{"ready": N}` once registered,
then serves until SIGTERM.

Usage: python benchmarks/_room_nodes.py --url ws://127.0.0.1:P --count 2 --langs en,de,...
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import msgspec
import uvloop
from _procs import emit
from websockets.asyncio.client import connect


async def node(url: str, node_id: str, langs: list[str], slots: int, ready: asyncio.Event,
               started: list[int]) -> None:
    async with connect(url + "/v1/node", subprotocols=["hub.v1.msgpack"],  # type: ignore[list-item]
                       max_size=None, compression=None, ping_interval=None) as ws:
        await ws.send(msgspec.msgpack.encode({
            "type": "register", "node_id": node_id,
            "capabilities": {
                "max_concurrency": slots,
                "language_pairs": [{"src": a, "tgt": b} for a in langs for b in langs if a != b],
                "asr_languages": langs, "tts_languages": langs,
            },
        }))
        registered = msgspec.msgpack.decode(await ws.recv())
        assert registered["type"] == "registered", registered
        started[0] += 1
        if started[0] == started[1]:
            ready.set()
        async for frame in ws:
            message = msgspec.msgpack.decode(frame)
            if message.get("type") != "job_assign":
                continue
            job, attempt = message["job_id"], message["attempt"]
            await ws.send(msgspec.msgpack.encode(
                {"type": "job_accept", "job_id": job, "attempt": attempt}
            ))
            await ws.send(msgspec.msgpack.encode({
                "type": "job_result", "job_id": job, "attempt": attempt, "ok": True,
                "output": {"lang": message["tgt_lang"]},
            }))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--langs", required=True)
    args = parser.parse_args()
    langs = args.langs.split(",")
    ready = asyncio.Event()
    started = [0, args.count]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(node(args.url, f"room-node-{i}", langs, args.slots, ready,
                                      started)) for i in range(args.count)]
    await ready.wait()
    emit(ready=args.count)
    await stop.wait()
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    uvloop.run(main())

"""A fleet of agent SDK nodes in one process, for the chaos benchmark (`chaos.py`).

Each node is a real `NodeAgent` (agent_sim) with the hub URLs given, rotated
per node so that a fleet spreads over the hubs. It records every execution on
stdout as JSON lines (`{"ev": "start"|"done", "key", "node", "t"}`, `t` is
wall-clock seconds): `start` when the handler starts, `done` when the job's
result left the node (`NodeAgent(on_result=...)`), so that the benchmark can
tell a job that ran again after it had finished. A job's payload may name a `hold` group: it
then runs until the benchmark writes `release GROUP` on stdin; otherwise it
takes `--service-ms` (or the payload's `ms`).

stdin commands: `release GROUP`, `stats` (prints `{"stats": {node: {...}}}`),
`flap on|off` (with `--flap-ms`: every interval one node leaves its hub and
comes back to another, its URLs rotated), `quit`.

Prints `{"ready": N}` once every node is registered.

Usage: python benchmarks/_chaos_nodes.py --urls ws://a,ws://b --prefix n --count 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from functools import partial
from typing import Any

import uvloop
from _procs import emit

from agent_sim.agent import JobContext, NodeAgent
from hub.core.messages import Capabilities, JobResult, LanguagePair


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.urls = [u for u in args.urls.split(",") if u]
        self.rng = random.Random(args.seed)
        self.released: dict[str, asyncio.Event] = {}
        self.agents: dict[str, NodeAgent] = {}
        self.flapping = False
        self.caps = Capabilities(
            max_concurrency=args.slots,
            language_pairs=[LanguagePair("en", "zh")],
            asr_languages=["en"],
            tts_languages=["zh"],
        )

    def group(self, name: str) -> asyncio.Event:
        return self.released.setdefault(name, asyncio.Event())

    async def handle(self, ctx: JobContext) -> dict[str, Any]:
        payload = ctx.payload if isinstance(ctx.payload, dict) else {}
        key = str(payload.get("key", ctx.job_id))
        emit(ev="start", key=key, node=ctx.node_id, job=ctx.job_id, t=time.time())
        hold = payload.get("hold")
        if hold:
            await self.group(str(hold)).wait()
        else:
            await asyncio.sleep(float(payload.get("ms", self.args.service_ms)) / 1000)
        return {"key": key, "node": ctx.node_id}

    def sent(self, node_id: str, result: JobResult) -> None:
        """A result left the node (handed to its hub's connection): the run finished.
        (A handler that returned as its connection closed finished nothing anyone saw.)"""
        output = result.output if isinstance(result.output, dict) else {}
        emit(ev="done", key=str(output.get("key", result.job_id)), node=node_id,
             job=result.job_id, t=time.time())

    def agent(self, index: int, shift: int = 0) -> NodeAgent:
        node_id = f"{self.args.prefix}{index}"
        k = (index + shift) % len(self.urls)
        return NodeAgent(
            node_id=node_id, capabilities=self.caps, hub_urls=self.urls[k:] + self.urls[:k],
            handler=self.handle, reconnect_min_s=0.05, reconnect_max_s=0.5,
            rng=random.Random(self.args.seed * 1000 + index), ping_interval_s=None,
            on_result=partial(self.sent, node_id),
        )

    async def run(self) -> None:
        for i in range(self.args.count):
            self.agents[f"{self.args.prefix}{i}"] = agent = self.agent(i)
            await agent.start()
        for agent in self.agents.values():
            await agent.wait_registered(30)
        emit(ready=len(self.agents))
        tasks = [asyncio.create_task(self.commands())]
        if self.args.flap_ms > 0:
            tasks.append(asyncio.create_task(self.flap()))
        await tasks[0]
        for task in tasks:
            task.cancel()
        for agent in self.agents.values():
            await agent.aclose()

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            command, _, arg = line.partition(" ")
            if command == "release":
                self.group(arg).set()
                emit(released=arg)
            elif command == "stats":
                emit(stats={n: a.stats() for n, a in self.agents.items()})
            elif command == "flap":
                self.flapping = arg == "on"
                emit(flapping=self.flapping)
            elif command == "quit":
                return

    async def flap(self) -> None:
        """Every `--flap-ms`, one node leaves its hub (its running jobs fail over) and
        registers again through its URLs rotated: it moves to another hub."""
        shift = 0
        while True:
            await asyncio.sleep(self.args.flap_ms / 1000)
            if not self.flapping:
                continue
            shift += 1
            node_id = self.rng.choice(sorted(self.agents))
            index = int(node_id[len(self.args.prefix):])
            await self.agents[node_id].aclose()
            self.agents[node_id] = agent = self.agent(index, shift)
            await agent.start()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True, help="hub URLs, comma-separated")
    parser.add_argument("--prefix", default="n")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--service-ms", type=float, default=20)
    parser.add_argument("--flap-ms", type=float, default=0)
    parser.add_argument("--seed", type=int, default=1)
    uvloop.run(Fleet(parser.parse_args()).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

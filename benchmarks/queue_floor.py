"""The queue floor: the least work a hub that queues could do per job.

The saturation benchmark's baseline for what its rig allows on this machine
(the nodes' wake-ups, the loopback hops, the clients' load) with a hub that
costs next to nothing: it speaks just enough of the protocol for
benchmarks/_nodes.py and benchmarks/_saturation_load.py, and keeps nothing
but a FIFO of waiting submits and each node's free slots. No validation, no
selection beyond "a node with a free slot" (every node serves every job here),
no idempotency, no deadlines, no metrics, no archive.

- `/v1/node`: `register` is answered with `registered`; `job_result` frees
  the node's slot and, if a submit waits, the oldest goes to that node at
  once (`job_assign`, written before the result is passed on), then the
  result goes to its client as `result` `ok: true`. Everything else is
  ignored.
- `/v1/client`: `submit` goes to a node with a free slot (`accepted`), else
  waits (`accepted` `queued: true`) while fewer than `--max-queued` submits
  of that client wait (the hub's equal share of `max_queued_jobs` among two
  backlogged clients), else `rejected` `overloaded`.

Same websockets server settings as the hub (no compression, no pings), same
event loop (uvloop). `GET /healthz` answers with the number of registered
nodes.

Usage: python benchmarks/queue_floor.py --port P [--max-queued 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from http import HTTPStatus
from typing import Any

import msgspec
import uvloop
from _floor_server import serve_until_stopped
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


class Inbound(msgspec.Struct):
    type: str
    request_id: str = ""
    job_id: str = ""
    capabilities: dict[str, Any] = {}


_decode = msgspec.json.Decoder(Inbound).decode
_encode = msgspec.json.Encoder().encode


class Node:
    __slots__ = ("free", "ws")

    def __init__(self, ws: ServerConnection, slots: int) -> None:
        self.ws = ws
        self.free = slots


class Client:
    __slots__ = ("waiting", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.waiting = 0


class QueueFloor:
    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.nodes: list[Node] = []
        self.queue: deque[tuple[Client, str]] = deque()
        self.running: dict[str, tuple[Client, str]] = {}
        """job id -> (its client, its request id)."""
        self._jobs = 0

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path.startswith("/v1/node"):
                await self._node(ws)
            elif path.startswith("/v1/client"):
                await self._client(Client(ws))
            else:
                await ws.close(1008, "unknown endpoint")
        except ConnectionClosed:
            pass

    def _assign(self, node: Node, client: Client, request_id: str) -> None:
        self._jobs += 1
        job_id = f"j{self._jobs}"
        self.running[job_id] = (client, request_id)
        node.free -= 1
        # Written at once, as the hub writes a `job_assign`.
        protocol = node.ws.protocol
        protocol.send_text(_encode({"type": "job_assign", "job_id": job_id, "attempt": 1}))
        node.ws.transport.writelines(protocol.data_to_send())

    async def _node(self, ws: ServerConnection) -> None:
        node: Node | None = None
        try:
            async for frame in ws:
                message = _decode(frame)
                if message.type == "register":
                    node = Node(ws, int(message.capabilities.get("max_concurrency", 1)))
                    self.nodes.append(node)
                    await ws.send(_encode({"type": "registered"}).decode())
                elif message.type == "job_result" and node is not None:
                    owner = self.running.pop(message.job_id, None)
                    node.free += 1
                    if self.queue:
                        client, request_id = self.queue.popleft()
                        client.waiting -= 1
                        self._assign(node, client, request_id)
                    if owner is not None:
                        client, request_id = owner
                        await client.ws.send(_encode(
                            {"type": "result", "request_id": request_id, "ok": True}
                        ).decode())
        finally:
            if node is not None:
                self.nodes.remove(node)

    async def _client(self, client: Client) -> None:
        ws = client.ws
        async for frame in ws:
            message = _decode(frame)
            if message.type != "submit":
                continue
            request_id = message.request_id
            node = next((n for n in self.nodes if n.free > 0), None)
            if node is not None and not self.queue:
                self._assign(node, client, request_id)
                answer = {"type": "accepted", "request_id": request_id}
            elif client.waiting < self.max_queued:
                client.waiting += 1
                self.queue.append((client, request_id))
                answer = {"type": "accepted", "request_id": request_id, "queued": True}
            else:
                answer = {"type": "rejected", "request_id": request_id, "code": "overloaded"}
            await ws.send(_encode(answer).decode())

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return ws.respond(HTTPStatus.OK, json.dumps({"nodes": len(self.nodes)}) + "\n")
        return None


async def run(host: str, port: int, max_queued: int) -> None:
    floor = QueueFloor(max_queued)
    await serve_until_stopped(floor.handle, floor.process_request, host, port, max_size=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-queued", type=int, default=5000,
                        help="submits one client may have waiting")
    args = parser.parse_args()
    uvloop.run(run(args.host, args.port, args.max_queued))
    return 0


if __name__ == "__main__":
    sys.exit(main())

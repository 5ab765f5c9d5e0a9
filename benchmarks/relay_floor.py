"""The raw relay floor: the least work a WebSocket hub could do per job.

Echo nodes connect to `/node`, the load generator to `/client`. Every client
frame goes to the next node (round-robin), every node frame goes back to the
(single, latest) client connection, unchanged: no decoding, no tagging, no
bookkeeping. Same websockets server settings as the hub (no compression, no
pings), same event loop (uvloop). `GET /healthz` answers with the number of
connected nodes, so the benchmark can wait for its fleet.

Usage: python benchmarks/relay_floor.py --port P
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus

from _floor_server import serve_main, serve_until_stopped
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


class Relay:
    def __init__(self) -> None:
        self.nodes: list[ServerConnection] = []
        self.client: ServerConnection | None = None
        self._next = 0

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/node":
                await self._node(ws)
            elif path == "/client":
                await self._client(ws)
            else:
                await ws.close(1008, "unknown endpoint")
        except ConnectionClosed:
            pass

    async def _node(self, ws: ServerConnection) -> None:
        self.nodes.append(ws)
        try:
            async for frame in ws:
                client = self.client
                if client is not None:
                    await client.send(frame)
        finally:
            self.nodes.remove(ws)

    async def _client(self, ws: ServerConnection) -> None:
        self.client = ws
        nodes = self.nodes
        try:
            async for frame in ws:
                self._next += 1
                await nodes[self._next % len(nodes)].send(frame)
        finally:
            if self.client is ws:
                self.client = None

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return ws.respond(HTTPStatus.OK, json.dumps({"nodes": len(self.nodes)}) + "\n")
        return None


async def run(host: str, port: int) -> None:
    relay = Relay()
    await serve_until_stopped(relay.handle, relay.process_request, host, port)


if __name__ == "__main__":
    sys.exit(serve_main(__doc__, run))

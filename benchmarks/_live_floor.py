"""The live benchmark's ingest floor: a raw websockets server that only receives the
load's `audio` frames, decodes each one with msgspec (MessagePack, into a struct of
the `audio` message's fields, as the hub's codec does) and counts it.

Same websockets server settings as the hub (hub/net/server.py: no compression,
no pings, its `max_frame_bytes` as `max_size`, its write limit), same event
loop (uvloop). Nothing is answered, cut, buffered or sent on: the least a
server can do with the frames. `GET /count` answers `{"frames": N, "bytes": B}`
(frames decoded, audio bytes in them) so the benchmark reads the floor's
counter as it reads the hub's `nodehub_audio_bytes_total`.

Usage: python benchmarks/_live_floor.py --port P
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus

import msgspec
from _floor_server import serve_main, serve_until_stopped
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from hub.core.config import HubConfig
from hub.net.wslink import CLOSE_GRACE_S, WRITE_HIGH_WATER

_DEFAULTS = HubConfig()
MAX_FRAME_BYTES = _DEFAULTS.max_frame_bytes
WRITE_LIMIT = min(WRITE_HIGH_WATER, _DEFAULTS.max_outbound_bytes)
"""The hub's write limit (hub/net/server.py)."""


class Audio(msgspec.Struct, tag_field="type", tag="audio"):
    session_id: str
    seq: int
    data: bytes
    is_final: bool = False
    duration_ms: int | None = None


class Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self._decode = msgspec.msgpack.Decoder(Audio).decode

    async def handle(self, ws: ServerConnection) -> None:
        decode = self._decode
        try:
            async for frame in ws:
                audio = decode(frame)
                self.frames += 1
                self.bytes += len(audio.data)
        except ConnectionClosed:
            pass

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/count":
            body = json.dumps({"frames": self.frames, "bytes": self.bytes}) + "\n"
            return ws.respond(HTTPStatus.OK, body)
        return None


async def run(host: str, port: int) -> None:
    counter = Counter()
    await serve_until_stopped(counter.handle, counter.process_request, host, port,
                              max_size=MAX_FRAME_BYTES, write_limit=WRITE_LIMIT,
                              close_timeout=CLOSE_GRACE_S)


if __name__ == "__main__":
    sys.exit(serve_main(__doc__, run))

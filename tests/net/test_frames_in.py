"""The hub's own frame reading and writing, against RFC 6455 byte by byte.

The hub reads ordinary frames itself and hands anything else to websockets'
parser (hub/net/server.py, `_Connection`); it builds its frames' headers
itself (hub/net/wslink.py, `frame_header`). These tests speak WebSocket over a
raw TCP socket, with frames built by hand, so that they can split a frame
across segments, put a ping between two messages, fragment a message, omit the
mask or pass the size limit: what a real client's library would not do on
request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.frames import Frame, Opcode

from hub.app.hub import Hub
from hub.net.wslink import frame_header
from tests.conftest import MakeHub
from tests.support.hubtest import TIMEOUT_S

SUBMIT = {"type": "submit", "src_lang": "en", "tgt_lang": "de", "payload": {"text": "hi"}}


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client's frame (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    masked = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", first, masked | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, masked | 126, length)
    else:
        head = struct.pack("!BBQ", first, masked | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _submit(request_id: str, **extra: Any) -> bytes:
    return json.dumps({**SUBMIT, "request_id": request_id, **extra}).encode()


class RawPeer:
    """A WebSocket client over a plain TCP socket: frames go out as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, hub: Hub, path: str = "/v1/client") -> RawPeer:
        host, port = hub.url.removeprefix("ws://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, data: bytes, *, pieces: int = 1) -> None:
        """Write `data` in `pieces` segments, each one flushed to the kernel alone."""
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            self.writer.write(data[start:start + step])
            await self.writer.drain()
            if pieces > 1:
                await asyncio.sleep(0.001)  # a segment of its own, read on its own

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the hub (opcode, payload); the hub's are never masked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT_S)
        assert not second & 0x80, "a server's frames are not masked"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT_S)

    async def message(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == Opcode.TEXT.value, (opcode, payload)
        decoded: dict[str, Any] = json.loads(payload)
        return decoded

    async def close_code(self) -> int:
        """The code of the close frame the hub sends next (other frames skipped)."""
        while True:
            opcode, payload = await self.frame()
            if opcode == Opcode.CLOSE.value:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _reads_frames_itself(hub: Hub) -> list[Any]:
    """Whether each client connection's frames are read by the hub's own reader."""
    return [link.ws._reads for link in hub.service.home.clients.values()]  # type: ignore[attr-defined]


OpenPeer = Callable[..., Awaitable[tuple[Hub, RawPeer]]]


@pytest.fixture
async def open_peer(make_hub: MakeHub) -> AsyncIterator[OpenPeer]:
    """A hub (with the given settings) and a raw client of it, closed afterwards."""
    peers: list[RawPeer] = []

    async def factory(**overrides: Any) -> tuple[Hub, RawPeer]:
        hub = await make_hub(**overrides)
        peers.append(await RawPeer.open(hub))
        return hub, peers[-1]

    yield factory
    for peer in peers:
        await peer.aclose()


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_frame_headers_are_the_rfc_s_as_websockets_writes_them(
    length: int, opcode: Opcode
) -> None:
    payload = b"x" * length
    first_byte = 0x80 | opcode.value
    ours = frame_header(first_byte, length) + payload
    assert ours == Frame(opcode, payload).serialize(mask=False, extensions=[])


async def test_a_frame_split_across_many_segments_and_two_in_one_are_read(
    open_peer: OpenPeer,
) -> None:
    hub, peer = await open_peer()
    # One submit byte by byte: the header itself arrives in pieces.
    await peer.send(_frame(1, _submit("split")), pieces=40)
    answer = await peer.message()
    assert (answer["type"], answer["request_id"]) == ("rejected", "split")
    assert answer["code"] == "no_node"
    assert _reads_frames_itself(hub) == [True]
    # A large one (a 64-bit length) in 1 KiB segments, then two in one segment.
    big = _submit("big", payload={"text": "y" * 70_000})
    await peer.send(_frame(1, big), pieces=len(big) // 1024)
    assert (await peer.message())["request_id"] == "big"
    await peer.send(_frame(1, _submit("a")) + _frame(1, _submit("b")))
    assert [(await peer.message())["request_id"] for _ in range(2)] == ["a", "b"]
    assert _reads_frames_itself(hub) == [True]


async def test_a_ping_between_two_messages_gets_its_pong_in_order(open_peer: OpenPeer) -> None:
    hub, peer = await open_peer()
    await peer.send(
        _frame(1, _submit("before")) + _frame(9, b"are you there") + _frame(1, _submit("after"))
    )
    frames = [await peer.frame() for _ in range(3)]
    kinds = [
        ("pong", payload) if opcode == Opcode.PONG.value
        else ("message", json.loads(payload)["request_id"])
        for opcode, payload in frames
    ]
    # The pong is written as the ping is read: before the answer to "after".
    assert kinds.index(("pong", b"are you there")) < kinds.index(("message", "after"))
    assert sorted(k for k in kinds if k[0] == "message") == [
        ("message", "after"), ("message", "before"),
    ]
    # A pong from the client is taken quietly.
    await peer.send(_frame(10, b"unasked") + _frame(1, _submit("later")))
    assert (await peer.message())["request_id"] == "later"
    assert _reads_frames_itself(hub) == [True]


async def test_a_fragmented_message_goes_to_websockets_and_the_session_goes_on(
    open_peer: OpenPeer,
) -> None:
    hub, peer = await open_peer()
    data = _submit("fragmented")
    await peer.send(
        _frame(1, data[:10], fin=False) + _frame(0, data[10:20], fin=False)
        + _frame(0, data[20:])
    )
    assert (await peer.message())["request_id"] == "fragmented"
    assert _reads_frames_itself(hub) == [False]  # websockets' parser from there on
    await peer.send(_frame(1, _submit("next")))
    assert (await peer.message())["request_id"] == "next"


async def test_invalid_utf8_in_a_text_frame_is_bad_message_and_the_session_goes_on(
    open_peer: OpenPeer,
) -> None:
    _, peer = await open_peer()
    await peer.send(_frame(1, b'{"type": "submit", "request_id": "\xff\xfe"}'))
    answer = await peer.message()
    assert (answer["type"], answer["code"]) == ("error", "bad_message")
    await peer.send(_frame(1, _submit("fine")))
    assert (await peer.message())["request_id"] == "fine"


async def test_an_unmasked_frame_is_closed_1002(open_peer: OpenPeer) -> None:
    _, peer = await open_peer()
    await peer.send(_frame(1, _submit("ok")))
    assert (await peer.message())["request_id"] == "ok"
    await peer.send(_frame(1, _submit("unmasked"), mask=False))
    assert await peer.close_code() == 1002


async def test_a_frame_past_max_frame_bytes_is_closed_1009_before_it_is_read(
    open_peer: OpenPeer,
) -> None:
    _, peer = await open_peer(max_frame_bytes=4096)
    await peer.send(_frame(1, _submit("small")))
    assert (await peer.message())["request_id"] == "small"
    # Only the header of a 1 MB frame: the hub refuses it without waiting for it.
    header = _frame(1, _submit("huge", payload={"text": "z" * 1_000_000}))[:14]
    await peer.send(header)
    assert await peer.close_code() == 1009


async def test_a_close_frame_gets_the_closing_handshake(open_peer: OpenPeer) -> None:
    _, peer = await open_peer()
    await peer.send(_frame(1, _submit("first")))
    assert (await peer.message())["request_id"] == "first"
    await peer.send(_frame(8, struct.pack("!H", 1000)))
    assert await peer.close_code() == 1000


async def test_frames_after_the_hub_starts_closing_go_to_websockets(
    open_peer: OpenPeer,
) -> None:
    """Past `max_protocol_errors` the hub closes with 1008; what the peer sends after
    that (a ping, a submit, its close) gets no answer but websockets' own (a pong at
    most), and the connection ends."""
    hub, peer = await open_peer(max_protocol_errors=2)
    for _ in range(3):
        await peer.send(_frame(1, b"not json"))
    assert await peer.close_code() == 1008
    await peer.send(
        _frame(9, b"still there?") + _frame(1, _submit("late"))
        + _frame(8, struct.pack("!H", 1000))
    )
    after: list[int] = []
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            after.append((await peer.frame())[0])
    assert set(after) <= {Opcode.PONG.value}  # websockets may still answer the ping
    assert _reads_frames_itself(hub) in ([], [False])

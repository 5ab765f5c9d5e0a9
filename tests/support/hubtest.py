"""Helpers for the hub tests over real sockets: raw node agents and raw clients.

`TestNode` is a node agent written against docs/protocol.md with nothing but
`websockets.asyncio.client.connect`: it registers, keeps itself alive with
heartbeats (stoppable), queues every message the hub sends, and lets the test
answer each `job_assign` explicitly (accept, reject, progress, result) or just
close / abort its TCP connection. `TestClient` is the same for `/v1/client`.
Both speak JSON by default and MessagePack with `binary=True`.

Everything waits on messages with a timeout (`TIMEOUT_S`, generous for a
loaded CI box); "nothing arrives" checks use `quiet()` with a short bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hub.core.messages import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

TIMEOUT_S = 5.0
"""How long to wait for something that must happen."""
QUIET_S = 0.3
"""How long to wait for something that must NOT happen (a bound, not a guarantee)."""

Msg = dict[str, Any]


def caps(
    pairs: list[tuple[str, str]] | None = None,
    *,
    asr: list[str] | None = None,
    tts: list[str] | None = None,
    features: list[str] | None = None,
    max_concurrency: int = 4,
    pool: int | None = None,
    labels: dict[str, str] | None = None,
) -> Msg:
    """A wire `capabilities` object; by default a full en->de node."""
    pairs = [("en", "de")] if pairs is None else pairs
    out: Msg = {
        "language_pairs": [{"src": s, "tgt": t} for s, t in pairs],
        "asr_languages": sorted({s for s, _ in pairs}) if asr is None else asr,
        "tts_languages": sorted({t for _, t in pairs}) if tts is None else tts,
        "features": features or [],
        "max_concurrency": max_concurrency,
    }
    if pool is not None:
        out["pool"] = pool
    if labels is not None:
        out["labels"] = labels
    return out


async def wait_until(
    cond: Callable[[], bool], wait_s: float = TIMEOUT_S, what: str = ""
) -> None:
    """Poll `cond` (a cheap in-process check) until true, or fail after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


async def wait_until_async(
    cond: Callable[[], Awaitable[bool]], wait_s: float = TIMEOUT_S, what: str = ""
) -> None:
    deadline = time.monotonic() + wait_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


class Peer:
    """One raw WebSocket session: a reader task queues decoded messages."""

    def __init__(self, ws: ClientConnection, *, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self.received: list[Msg] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    message = msgspec.msgpack.decode(frame) if self.binary else json.loads(frame)
                else:
                    message = json.loads(frame)
                self.received.append(message)
                self.inbox.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, message: Msg) -> None:
        if self.binary:
            await self.ws.send(msgspec.msgpack.encode(message))
        else:
            await self.ws.send(json.dumps(message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self, wait_s: float = TIMEOUT_S) -> Msg:
        return await asyncio.wait_for(self.inbox.get(), wait_s)

    async def expect(self, type_: str, wait_s: float = TIMEOUT_S, **fields: Any) -> Msg:
        """The next message, which must be of `type_` (and match `fields`)."""
        message = await self.recv(wait_s)
        assert message.get("type") == type_, f"expected {type_}, got {message!r}"
        for key, value in fields.items():
            assert message.get(key) == value, f"{key}: expected {value!r} in {message!r}"
        return message

    async def quiet(self, wait_s: float = QUIET_S) -> None:
        """Assert nothing arrives within `wait_s` (a bounded check, see QUIET_S)."""
        try:
            message = await asyncio.wait_for(self.inbox.get(), wait_s)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message {message!r}")

    async def wait_closed(self, wait_s: float = TIMEOUT_S) -> int | None:
        """Wait for the connection to end; the close code the hub sent."""
        await asyncio.wait_for(self.closed.wait(), wait_s)
        rcvd = self.ws.protocol.close_rcvd
        return None if rcvd is None else rcvd.code

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a crash)."""
        transport = self.ws.transport
        transport.abort()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), TIMEOUT_S)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _subprotocols(binary: bool, offer: bool) -> list[Subprotocol] | None:
    if not offer:
        return None
    return [Subprotocol(MSGPACK_SUBPROTOCOL if binary else JSON_SUBPROTOCOL)]


def _auth(
    token: str | None, origin: str | None, tls: ssl.SSLContext | None
) -> dict[str, Any]:
    """`connect` arguments for a bearer token, an Origin header and a TLS context."""
    args: dict[str, Any] = {}
    if token is not None:
        args["additional_headers"] = {"Authorization": f"Bearer {token}"}
    if origin is not None:
        args["origin"] = origin
    if tls is not None:
        args["ssl"] = tls
    return args


async def open_peer(
    url: str, *, binary: bool = False, offer_subprotocol: bool = True, max_size: int | None = None
) -> Peer:
    ws = await asyncio.wait_for(
        connect(
            url, subprotocols=_subprotocols(binary, offer_subprotocol), max_size=max_size,
            compression=None, ping_interval=None,
        ),
        TIMEOUT_S,
    )
    return Peer(ws, binary=binary)


class TestNode(Peer):
    """A node agent driven step by step by the test."""

    __test__ = False  # not a pytest class

    def __init__(self, ws: ClientConnection, *, binary: bool, node_id: str) -> None:
        super().__init__(ws, binary=binary)
        self.node_id = node_id
        self.registered: Msg | None = None
        self._beat: asyncio.Task[None] | None = None

    async def register(self, capabilities: Msg, **extra: Any) -> Msg:
        await self.send(
            {"type": "register", "node_id": self.node_id, "capabilities": capabilities, **extra}
        )
        return await self.recv()

    def start_heartbeats(self, interval_s: float) -> None:
        self._beat = asyncio.create_task(self._heartbeats(interval_s))

    async def _heartbeats(self, interval_s: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.send({"type": "heartbeat"})
                await asyncio.sleep(interval_s)

    async def stop_heartbeats(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None

    async def assigned(self, wait_s: float = TIMEOUT_S) -> Msg:
        """The next message, which must be a `job_assign`."""
        return await self.expect("job_assign", wait_s)

    async def accept(self, assign: Msg) -> None:
        await self.send(
            {"type": "job_accept", "job_id": assign["job_id"], "attempt": assign["attempt"]}
        )

    async def reject(self, assign: Msg, reason: str = "busy") -> None:
        await self.send({
            "type": "job_reject", "job_id": assign["job_id"], "attempt": assign["attempt"],
            "reason": reason,
        })

    async def progress(self, assign: Msg, data: Any) -> None:
        await self.send({
            "type": "job_progress", "job_id": assign["job_id"], "attempt": assign["attempt"],
            "data": data,
        })

    async def result(
        self, assign: Msg, output: Any = None, *, ok: bool = True, error: Msg | None = None
    ) -> None:
        message: Msg = {
            "type": "job_result", "job_id": assign["job_id"], "attempt": assign["attempt"],
            "ok": ok,
        }
        if output is not None:
            message["output"] = output
        if error is not None:
            message["error"] = error
        await self.send(message)

    async def run_one(self, output: Any = "done") -> Msg:
        """Take the next job: accept it and report `output`; returns the assignment."""
        assign = await self.assigned()
        await self.accept(assign)
        await self.result(assign, output)
        return assign

    async def aclose(self) -> None:
        await self.stop_heartbeats()
        await super().aclose()


class AutoNode:
    """A background node that accepts every job and answers with its payload."""

    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.done: list[str] = []
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            message = await self.node.inbox.get()
            if message.get("type") == "job_assign":
                await self.node.accept(message)
                await self.node.result(message, {"echo": message.get("payload")})
                self.done.append(message["job_id"])

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class TestClient(Peer):
    """A submitter on `/v1/client`."""

    __test__ = False

    async def submit(
        self, request_id: str, src: str = "en", tgt: str = "de", **fields: Any
    ) -> None:
        await self.send(
            {"type": "submit", "request_id": request_id, "src_lang": src, "tgt_lang": tgt, **fields}
        )

    async def submitted(
        self, request_id: str, src: str = "en", tgt: str = "de", **fields: Any
    ) -> Msg:
        """Submit and return the `accepted` (fails on anything else)."""
        await self.submit(request_id, src, tgt, **fields)
        return await self.expect("accepted", request_id=request_id)

    async def cancel(self, job_id: str) -> None:
        await self.send({"type": "cancel", "job_id": job_id})


async def connect_node(
    url: str, node_id: str, capabilities: Msg | None = None, *, binary: bool = False,
    heartbeat_s: float | None = 0.05, register: bool = True, offer_subprotocol: bool = True,
    token: str | None = None, origin: str | None = None, tls: ssl.SSLContext | None = None,
) -> TestNode:
    """Connect to `url + /v1/node` and (by default) register and start heartbeats."""
    ws = await asyncio.wait_for(
        connect(
            url + "/v1/node", subprotocols=_subprotocols(binary, offer_subprotocol),
            max_size=None, compression=None, ping_interval=None, **_auth(token, origin, tls),
        ),
        TIMEOUT_S,
    )
    node = TestNode(ws, binary=binary, node_id=node_id)
    if register:
        reply = await node.register(capabilities if capabilities is not None else caps())
        assert reply["type"] == "registered", reply
        node.registered = reply
    if heartbeat_s is not None:
        node.start_heartbeats(heartbeat_s)
    return node


async def connect_client(
    url: str, *, binary: bool = False, offer_subprotocol: bool = True,
    token: str | None = None, origin: str | None = None, tls: ssl.SSLContext | None = None,
) -> TestClient:
    ws = await asyncio.wait_for(
        connect(
            url + "/v1/client", subprotocols=_subprotocols(binary, offer_subprotocol),
            max_size=None, compression=None, ping_interval=None, **_auth(token, origin, tls),
        ),
        TIMEOUT_S,
    )
    return TestClient(ws, binary=binary)


async def http_get(
    base_url: str, path: str, *, headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 GET over asyncio streams: (status, headers, body)."""
    return await http_request(base_url, "GET", path, headers=headers, tls=tls)


async def http_request(
    base_url: str, method: str, path: str, *,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 request without a body over asyncio streams: (status, headers,
    body). `headers` as a list may name a header twice."""
    host_port = base_url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, int(port), ssl=tls), TIMEOUT_S
    )
    pairs = list(headers.items()) if isinstance(headers, dict) else headers or []
    extra = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    empty_body = "" if method == "GET" else "Content-Length: 0\r\n"
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host_port}\r\n{extra}{empty_body}"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if status == 204:
            body = b""
        elif "content-length" in headers:
            body = await asyncio.wait_for(
                reader.readexactly(int(headers["content-length"])), TIMEOUT_S
            )
        else:
            body = await asyncio.wait_for(reader.read(), TIMEOUT_S)
        return status, headers, body
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def first_assigned(nodes: list[TestNode], wait_s: float = TIMEOUT_S) -> TestNode:
    """Wait until one of `nodes` has a message queued; that node (its message stays queued)."""
    await wait_until(
        lambda: any(not n.inbox.empty() for n in nodes), wait_s, "a node to get a message"
    )
    return next(n for n in nodes if not n.inbox.empty())

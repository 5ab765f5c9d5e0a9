"""`HubClient`: a small asyncio client of `/v1/client`, for the demo, benchmarks and tests.

One connection, many jobs in flight (`token` is sent as `Authorization: Bearer`;
`wss://` URLs use `ssl_context`, or the system's default trust): `submit()`
returns a `JobHandle` whose
`accepted` and `result` futures resolve as the hub answers; `rejected`
submits resolve `result` with the `Rejected` message. Progress messages are
collected per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Accepted,
    Cancel,
    Error,
    Pipeline,
    Progress,
    Rejected,
    Result,
    Submit,
    submitter_codec,
)


@dataclass
class JobHandle:
    request_id: str
    accepted: asyncio.Future[Accepted | Rejected]
    result: asyncio.Future[Result | Rejected]
    progress: list[Any] = field(default_factory=list)
    job_id: str | None = None


class HubClient:
    """`async with HubClient(url) as client: handle = await client.submit(...)`."""

    def __init__(
        self, url: str, *, binary: bool = False, token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/v1/client") else base + "/v1/client"
        self.binary = binary
        self.token = token
        self.ssl_context = ssl_context
        self._codec = submitter_codec(binary=binary)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._by_request: dict[str, JobHandle] = {}
        self._by_job: dict[str, JobHandle] = {}
        self.errors: asyncio.Queue[Error] = asyncio.Queue()
        self.result_counts: Counter[str] = Counter()
        """How many `result` messages arrived per request id (the contract says one)."""

    async def __aenter__(self) -> Self:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._ws = await connect(
            self.url,
            subprotocols=[MSGPACK_SUBPROTOCOL if self.binary else JSON_SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers,
            max_size=None,
            compression=None,
            ssl=self.ssl_context if self.url.startswith("wss://") else None,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._reader
        for handle in self._by_request.values():
            for fut in (handle.accepted, handle.result):
                if not fut.done():
                    fut.cancel()

    async def submit(
        self,
        src_lang: str,
        tgt_lang: str,
        *,
        request_id: str | None = None,
        payload: Any = None,
        features: list[str] | None = None,
        pipeline: Pipeline | None = None,
        preferred_node_id: str | None = None,
        preferred_pool: int | None = None,
        routing_key: str | None = None,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        priority: int = 0,
        queue_timeout_ms: int | None = None,
    ) -> JobHandle:
        assert self._ws is not None, "use `async with HubClient(...)`"
        request_id = request_id or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        handle = JobHandle(request_id, loop.create_future(), loop.create_future())
        self._by_request[request_id] = handle
        message = Submit(
            request_id=request_id,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            payload=payload,
            features=features or [],
            pipeline=pipeline or Pipeline(),
            preferred_node_id=preferred_node_id,
            preferred_pool=preferred_pool,
            routing_key=routing_key,
            session_id=session_id,
            timeout_ms=timeout_ms,
            priority=priority,
            queue_timeout_ms=queue_timeout_ms,
        )
        await self.send(message)
        return handle

    async def cancel(self, job_id: str) -> None:
        await self.send(Cancel(job_id=job_id))

    async def send(self, message: msgspec.Struct) -> None:
        assert self._ws is not None
        data = self._codec.encode(message)
        await self._ws.send(data, text=not self.binary)

    async def send_raw(self, frame: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(frame)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._read_frames()

    async def _read_frames(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            message = self._codec.decode(frame)
            match message:
                case Accepted():
                    handle = self._by_request.get(message.request_id)
                    if handle is not None:
                        handle.job_id = message.job_id
                        self._by_job[message.job_id] = handle
                        if not handle.accepted.done():
                            handle.accepted.set_result(message)
                case Rejected():
                    handle = self._by_request.pop(message.request_id, None)
                    if handle is not None:
                        for fut in (handle.accepted, handle.result):
                            if not fut.done():
                                fut.set_result(message)
                case Result():
                    self.result_counts[message.request_id] += 1
                    handle = self._by_request.pop(message.request_id, None)
                    self._by_job.pop(message.job_id, None)
                    if handle is not None and not handle.result.done():
                        handle.result.set_result(message)
                case Progress():
                    handle = self._by_job.get(message.job_id)
                    if handle is not None:
                        handle.progress.append(message.data)
                case Error():
                    self.errors.put_nowait(message)

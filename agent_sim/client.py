"""`HubClient`: a small asyncio client of `/v1/client`, for the demo, benchmarks and tests.

One connection at a time serves new submits, many jobs in flight (`token` is
sent as `Authorization: Bearer`; `wss://` URLs use `ssl_context`, or the
system's default trust): `submit()` returns a `JobHandle` whose `accepted` and
`result` futures resolve as the hub answers; `rejected` submits resolve
`result` with the `Rejected` message. Progress messages are collected per job.

Faults never leave a future hanging:

- Given several hub URLs, the client *fails over*: a hub that refuses a submit
  with `hub_shutdown` (it is draining) is left for the next URL, and that
  submit is sent there (it created no job, so this is a fresh submit); the
  draining hub's connection stays open for the results of what it accepted,
  until the hub closes it (1001).
- When a connection drops (or the hub closes it) with requests unanswered,
  those are resubmitted on the next reachable hub with the same request ids
  when `resubmit=True` (idempotency makes that safe: a duplicate watches the
  job, a finished job answers from its stored result). Otherwise, or when no
  hub can be reached within `reconnect_timeout_s`, their futures fail with
  `ConnectionLost`.

Live speech sessions (`live_session()`, a `LiveSession` of `agent_sim.live`)
share the connection: several per client. When the connection drops the
client reconnects at once (the same URL, or the next one) and each open
session reopens itself there and resends the audio the hub lacks; when no hub
can be reached within `reconnect_timeout_s`, the session fails with
`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from agent_sim.live import LiveSession
from hub.core.messages import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    Accepted,
    AudioFormat,
    Cancel,
    Error,
    Partial,
    Pipeline,
    Progress,
    Rejected,
    Result,
    RoomJoined,
    RoomResult,
    SessionClosed,
    SessionOpen,
    SessionOpened,
    Submit,
    UtteranceCut,
    UtteranceResult,
    submitter_codec,
)

CLIENT_PATH: Final = "/v1/client"
HUB_SHUTDOWN: Final = "hub_shutdown"
RETRY_MIN_S: Final = 0.05
RETRY_MAX_S: Final = 1.0


class ConnectionLost(Exception):
    """The connection to the hub dropped before this request was answered (and it was
    not, or could not be, resubmitted elsewhere)."""


@dataclass
class JobHandle:
    request_id: str
    accepted: asyncio.Future[Accepted | Rejected]
    result: asyncio.Future[Result | Rejected]
    progress: list[Any] = field(default_factory=list)
    job_id: str | None = None
    submit: Submit | None = None
    """The message, kept to resubmit it."""
    sends: int = 0
    """Times the submit was sent (1 unless it was resubmitted)."""

    @property
    def done(self) -> bool:
        return self.result.done()


def client_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith(CLIENT_PATH) else base + CLIENT_PATH


class _Connection:
    """One WebSocket session to one hub, with the requests it still owes answers to."""

    def __init__(self, url: str, ws: ClientConnection) -> None:
        self.url = url
        self.ws = ws
        self.owed: set[str] = set()
        """Request ids sent here and not answered with a result or a refusal yet."""
        self.draining = False
        """The hub refused a submit `hub_shutdown`: new submits go elsewhere."""
        self.reader: asyncio.Task[None] | None = None


class _LiveCarrier:
    """What a `LiveSession` needs from its client (`agent_sim.live.Carrier`)."""

    __slots__ = ("_client",)

    def __init__(self, client: HubClient) -> None:
        self._client = client

    async def connection(self) -> object:
        return await self._client._ready()

    async def send_on(self, conn: object, message: msgspec.Struct) -> bool:
        assert isinstance(conn, _Connection)
        return await self._client._send_frame(conn, message)

    def can_move(self, conn: object) -> bool:
        assert isinstance(conn, _Connection)
        return self._client._leave_draining(conn)

    def forget(self, session: LiveSession) -> None:
        if self._client._live.get(session.session_id) is session:
            del self._client._live[session.session_id]
        rooms = self._client._rooms
        for room in [r for r, s in rooms.items() if s is session]:
            del rooms[room]

    def route_room(self, room: str, session: LiveSession | None) -> None:
        rooms = self._client._rooms
        current = rooms.get(room)
        if session is None:
            rooms.pop(room, None)
            return
        if current is not None and current is not session:
            raise ValueError(
                f"room {room} is joined by session {current.session_id} of this client: "
                "a connection is in a room once"
            )
        rooms[room] = session


class HubClient:
    """`async with HubClient(url_or_urls) as client: handle = await client.submit(...)`."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        binary: bool = False,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resubmit: bool = False,
        reconnect_timeout_s: float = 30.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("HubClient needs at least one hub URL")
        self.urls: tuple[str, ...] = tuple(client_url(u) for u in urls)
        self.binary = binary
        self.token = token
        self.ssl_context = ssl_context
        self.resubmit = resubmit
        self.reconnect_timeout_s = reconnect_timeout_s
        self._codec = submitter_codec(binary=binary)
        self._active: _Connection | None = None
        self._connections: list[_Connection] = []
        self._index = 0
        self._by_request: dict[str, JobHandle] = {}
        self._by_job: dict[str, JobHandle] = {}
        self._to_resend: list[JobHandle] = []
        self._switching: asyncio.Task[None] | None = None
        self._unreachable: ConnectionLost | None = None
        """Why the last failover found no hub."""
        self._closing = False
        self._live: dict[str, LiveSession] = {}
        self._rooms: dict[str, LiveSession] = {}
        """Which session a room's messages go to (a connection is in a room once)."""
        """Open live sessions by id: the hub's messages about them go there."""
        self._carrier = _LiveCarrier(self)
        self.errors: asyncio.Queue[Error] = asyncio.Queue()
        self.result_counts: Counter[str] = Counter()
        """How many `result` messages arrived per request id (the contract says one)."""
        self.failovers = 0
        """Times the client moved to another hub (or reconnected)."""

    @property
    def url(self) -> str:
        """The hub URL new submits go to."""
        return self._active.url if self._active is not None else self.urls[self._index]

    async def __aenter__(self) -> Self:
        self._active = await self._connect(self._index, first=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. Open live sessions are not closed (the hub keeps them
        for `session_idle_ms`: `live_session` with `resume_after` reattaches one); their
        iteration ends with `ConnectionLost`."""
        self._closing = True
        sessions = list(self._live.values())
        for session in sessions:
            session.fail(ConnectionLost("the client is closed"))
        for session in sessions:
            await session.aclose()
        if self._switching is not None:
            self._switching.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await self._switching
        for conn in list(self._connections):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.close()
            if conn.reader is not None:
                conn.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await conn.reader
        for handle in self._by_request.values():
            for fut in (handle.accepted, handle.result):
                if not fut.done():
                    fut.cancel()

    # --- submitting -------------------------------------------------------------------

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
        langs: list[str] | None = None,
    ) -> JobHandle:
        """`src_lang` and `tgt_lang` `"auto"` with `langs` `[A, B]`: two-way (the node
        detects which of the two was spoken)."""
        request_id = request_id or uuid.uuid4().hex
        loop = asyncio.get_running_loop()
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
            langs=langs,
        )
        handle = JobHandle(request_id, loop.create_future(), loop.create_future(), submit=message)
        self._by_request[request_id] = handle
        await self._send_submit(handle)
        return handle

    async def live_session(
        self,
        session_id: str,
        src_lang: str,
        tgt_lang: str | None = None,
        *,
        langs: list[str] | None = None,
        pipeline: Pipeline | None = None,
        features: list[str] | None = None,
        preferred_pool: int | None = None,
        timeout_ms: int | None = None,
        audio_format: AudioFormat | None = None,
        pause_ms: int | None = None,
        max_utterance_ms: int | None = None,
        max_utterance_bytes: int | None = None,
        resume_after: int | None = None,
    ) -> LiveSession:
        """Open a live session (`session_open`) and return it once the hub answered
        `session_opened`. `src_lang` `"auto"` with `langs` `[A, B]` (and no `tgt_lang`)
        is a two-way session. Options left None take the hub's defaults (protocol v1.2);
        `resume_after` reattaches a session this client does not hold (after a restart
        of the caller: the index of the last result it has). Raises `SessionError`
        when the hub refuses (`no_node`, `session_limit`, ...), `ConnectionLost` when
        no hub can be reached, `ValueError` when this client holds that session id."""
        if session_id in self._live:
            raise ValueError(f"live session {session_id} is open on this client")
        options: dict[str, Any] = {
            "tgt_lang": tgt_lang, "langs": langs, "pipeline": pipeline, "features": features,
            "preferred_pool": preferred_pool,
            "timeout_ms": timeout_ms, "audio_format": audio_format, "pause_ms": pause_ms,
            "max_utterance_ms": max_utterance_ms, "max_utterance_bytes": max_utterance_bytes,
        }
        message = SessionOpen(
            session_id=session_id, src_lang=src_lang,
            **{k: v for k, v in options.items() if v is not None},
        )
        session = LiveSession(self._carrier, message, resume_after=resume_after)
        self._live[session_id] = session
        await session.start()
        return session

    def abort_connection(self) -> bool:
        """Fault injection: drop the current connection without a close frame, as a network
        failure would; the client reconnects as after any drop. Whether there was one."""
        conn = self._active
        if conn is None:
            return False
        conn.ws.transport.abort()
        return True

    async def cancel(self, job_id: str) -> None:
        await self.send(Cancel(job_id=job_id))

    async def send(self, message: msgspec.Struct) -> None:
        conn = await self._ready()
        await conn.ws.send(self._codec.encode(message), text=not self.binary)

    async def send_raw(self, frame: str | bytes) -> None:
        conn = await self._ready()
        await conn.ws.send(frame)

    async def _send_frame(self, conn: _Connection, message: msgspec.Struct) -> bool:
        """Send on `conn`; False when its connection is closed (its reader sees the end)."""
        try:
            await conn.ws.send(self._codec.encode(message), text=not self.binary)
        except ConnectionClosed:
            return False
        return True

    def _leave_draining(self, conn: _Connection) -> bool:
        """`conn`'s hub is shutting down: new work goes to the next URL, if there is one."""
        if len(self.urls) < 2 or self._closing:
            return False
        conn.draining = True
        return True

    async def _send_submit(self, handle: JobHandle) -> None:
        try:
            conn = await self._ready()
        except ConnectionLost as exc:
            self._fail(handle, exc)
            return
        await self._send_on(conn, handle)

    async def _send_on(self, conn: _Connection, handle: JobHandle) -> None:
        assert handle.submit is not None
        conn.owed.add(handle.request_id)
        handle.sends += 1
        with contextlib.suppress(ConnectionClosed):  # the reader resends or fails it
            await conn.ws.send(self._codec.encode(handle.submit), text=not self.binary)

    # --- connections -------------------------------------------------------------------

    async def _ready(self) -> _Connection:
        """The connection for new submits, once there is one (a failover may be under
        way); `ConnectionLost` when no hub could be reached."""
        if self._closing:
            raise ConnectionLost("the client is closed")
        conn = self._active
        if conn is not None and not conn.draining:
            return conn
        self._switch()
        assert self._switching is not None
        await asyncio.shield(self._switching)
        conn = self._active
        if conn is None or conn.draining or self._closing:
            raise self._unreachable or ConnectionLost("no hub reachable")
        return conn

    async def _connect(self, start: int, *, first: bool = False) -> _Connection:
        """A connection to the first hub that answers, trying the URLs in turn from
        `start` (with backoff) for up to `reconnect_timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout_s
        delay = RETRY_MIN_S
        last: Exception | None = None
        for attempt in range(1_000_000):
            index = (start + attempt) % len(self.urls)
            url = self.urls[index]
            try:
                ws = await asyncio.wait_for(self._open(url), max(0.1, deadline - loop.time()))
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                last = exc
                if first and len(self.urls) == 1:
                    raise
                if loop.time() >= deadline:
                    break
                if (attempt + 1) % len(self.urls) == 0:  # every hub tried once: wait
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
                continue
            self._index = index
            conn = _Connection(url, ws)
            self._connections.append(conn)
            conn.reader = asyncio.create_task(self._read(conn))
            return conn
        raise ConnectionLost(f"no hub reachable among {list(self.urls)}: {last!r}")

    async def _open(self, url: str) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return await connect(
            url,
            subprotocols=[MSGPACK_SUBPROTOCOL if self.binary else JSON_SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers,
            max_size=None,
            compression=None,
            proxy=None,
            ssl=self.ssl_context if url.startswith("wss://") else None,
        )

    def _switch(self) -> None:
        """Start moving new submits to the next hub (once), and resending what waits."""
        if self._switching is None or self._switching.done():
            self._switching = asyncio.create_task(self._failover())

    async def _failover(self) -> None:
        """Make sure new submits have a usable hub (the next one when the current one
        is draining or gone), then send what waits for one; within
        `reconnect_timeout_s`, else what waits fails with `ConnectionLost`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout_s
        while True:
            current = self._active
            if current is None or current.draining:
                start = self._index + 1 if len(self.urls) > 1 else self._index
                try:
                    if loop.time() > deadline:
                        raise ConnectionLost(f"no hub took the requests within "
                                             f"{self.reconnect_timeout_s} s")
                    self._active = await self._connect(start % len(self.urls))
                except ConnectionLost as exc:
                    self._active = None
                    self._unreachable = exc
                    waiting, self._to_resend = self._to_resend, []
                    for handle in waiting:
                        self._fail(handle, exc)
                    return
                self._unreachable = None
                self.failovers += 1
            if not self._to_resend:
                return
            waiting, self._to_resend = self._to_resend, []
            for handle in waiting:
                conn = self._active
                if handle.done:
                    continue
                if conn is None or conn.draining:
                    self._to_resend.append(handle)  # the next round finds another hub
                    continue
                await self._send_on(conn, handle)

    def _resend(self, handle: JobHandle) -> None:
        """Send a submit again on the next hub (after a failover, if one is needed)."""
        self._to_resend.append(handle)
        self._switch()

    # --- reading -------------------------------------------------------------------------

    async def _read(self, conn: _Connection) -> None:
        try:
            async for frame in conn.ws:
                self._received(conn, self._codec.decode(frame))
        except ConnectionClosed:
            pass
        finally:
            self._ended(conn)

    def _received(self, conn: _Connection, message: Any) -> None:
        match message:
            case Accepted():
                handle = self._by_request.get(message.request_id)
                if handle is not None:
                    handle.job_id = message.job_id
                    self._by_job[message.job_id] = handle
                    if not handle.accepted.done():
                        handle.accepted.set_result(message)
            case Rejected():
                conn.owed.discard(message.request_id)
                handle = self._by_request.get(message.request_id)
                if handle is None:
                    return
                if message.code == HUB_SHUTDOWN and len(self.urls) > 1 and not self._closing:
                    # That hub is draining: new submits go to the next one, starting with
                    # this one (no job was created, so this is a fresh submit there).
                    conn.draining = True
                    self._resend(handle)
                    return
                del self._by_request[message.request_id]
                for fut in (handle.accepted, handle.result):
                    if not fut.done():
                        fut.set_result(message)
            case Result():
                conn.owed.discard(message.request_id)
                self.result_counts[message.request_id] += 1
                handle = self._by_request.pop(message.request_id, None)
                self._by_job.pop(message.job_id, None)
                if handle is not None and not handle.result.done():
                    handle.result.set_result(message)
            case Progress():
                handle = self._by_job.get(message.job_id)
                if handle is not None:
                    handle.progress.append(message.data)
            case SessionOpened() | UtteranceCut() | Partial() | UtteranceResult():
                session = self._live.get(message.session_id)
                if session is not None:
                    session.received(conn, message)
            case SessionClosed():
                session = self._live.get(message.session_id)
                if session is not None:
                    session.received(conn, message)
            case RoomJoined() | RoomResult():
                session = self._rooms.get(message.room)
                if session is not None:
                    session.received(conn, message)
            case Error():
                if message.room is not None and message.room in self._rooms:
                    session = self._rooms.get(message.room)
                else:
                    session = None if message.session_id is None else self._live.get(
                        message.session_id
                    )
                if session is not None:
                    session.received(conn, message)
                else:
                    self.errors.put_nowait(message)

    def _ended(self, conn: _Connection) -> None:
        """A connection is gone: what it still owed is resubmitted or failed."""
        if conn in self._connections:
            self._connections.remove(conn)
        if conn is self._active:
            self._active = None
        if self._closing:
            return
        for session in list(self._live.values()):
            session.connection_lost(conn)
        owed = [self._by_request[r] for r in sorted(conn.owed) if r in self._by_request]
        conn.owed.clear()
        lost = ConnectionLost(f"the connection to {conn.url} dropped (code {conn.ws.close_code})")
        for handle in owed:
            if handle.done:
                continue
            if self.resubmit:
                self._resend(handle)
            else:
                self._fail(handle, lost)

    def _fail(self, handle: JobHandle, exc: Exception) -> None:
        self._by_request.pop(handle.request_id, None)
        if handle.job_id is not None:
            self._by_job.pop(handle.job_id, None)
        for fut in (handle.accepted, handle.result):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: an unawaited handle raises no warning

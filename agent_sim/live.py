"""`LiveSession`: the client side of a live speech session (protocol v1.2, "Live sessions").

A `HubClient` opens it (`HubClient.live_session`): the caller sends audio
chunks (`send_audio`, which numbers them) and iterates over what the hub
sends about the session, in the order it came: `UtteranceCut`, `Partial`,
`UtteranceResult` (in index order, once each), and last `SessionClosed`.

The session outlives its connection. When the connection drops, the client
reconnects (to the same URL, or the next one) and every open `LiveSession`
reopens itself with `resume_after` = the index of the last result it
received: the hub delivers every later result again, and says in
`session_opened.last_seq` which audio chunk it holds last; the session then
resends its chunks from `last_seq + 1`. So it keeps every chunk not yet known
to be cut into an utterance (an `utterance_cut` says up to which chunk), and
drops results it already has. Cuts and partials sent while the connection was
down are not sent again; results are.

This module does no I/O of its own: `Carrier` is what it needs from its
client (a connection, a send on one), so it never imports websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final, Protocol, Self

import msgspec

from hub.core.messages import (
    Audio,
    Error,
    Partial,
    RoomJoin,
    RoomJoined,
    RoomLeave,
    RoomResult,
    SessionClose,
    SessionClosed,
    SessionOpen,
    SessionOpened,
    UtteranceCut,
    UtteranceResult,
)

__all__ = ["Carrier", "LiveEvent", "LiveSession", "SessionError", "SessionMessage"]

HUB_SHUTDOWN: Final = "hub_shutdown"
SESSION_LOST: Final = "session_lost"

LiveEvent = UtteranceCut | Partial | UtteranceResult | RoomResult | SessionClosed
"""What iterating over a `LiveSession` yields."""
SessionMessage = (
    SessionOpened | UtteranceCut | Partial | UtteranceResult | SessionClosed | Error
    | RoomJoined | RoomResult
)
"""What the client hands a session: the hub's messages carrying its `session_id`."""


class SessionError(Exception):
    """The session cannot go on: the hub refused it (`error` with its `session_id`:
    `code` and `error` are the hub's), or a reopen found that the hub no longer has
    what the session had (`code` `session_lost`: a hub restarted without a shared
    store, an idle session expired)."""

    def __init__(self, code: str, message: str, error: Error | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.error = error


class Carrier(Protocol):
    """What a `LiveSession` needs from its `HubClient`."""

    async def connection(self) -> object:
        """The connection to use now, once there is one (a reconnect may be under way);
        raises `ConnectionLost` when no hub can be reached."""

    async def send_on(self, conn: object, message: msgspec.Struct) -> bool:
        """Send on `conn`; False when that connection is gone (the session hears of it)."""

    def can_move(self, conn: object) -> bool:
        """`conn`'s hub is shutting down: whether another hub may take the session (the
        client then sends nothing new there)."""

    def forget(self, session: LiveSession) -> None:
        """The session is over: the client stops routing messages to it."""

    def route_room(self, room: str, session: LiveSession | None) -> None:
        """Messages about `room` (`room_joined`, `room_result`, a room's `error`) go to
        `session` from now on (None: to nobody)."""


class _Dropped(Exception):
    """The connection a reopen was using ended: try the next one."""


class LiveSession:
    """One live session; see the module docstring. Build it with `HubClient.live_session`.

    `results` holds every `UtteranceResult` received, in index order, once each;
    `opened` is the hub's latest `session_opened`; `resumes` counts reopens after
    a dropped connection; `closed` is the `SessionClosed` once it came.
    """

    def __init__(
        self, carrier: Carrier, open_message: SessionOpen, *, resume_after: int | None = None
    ) -> None:
        self.session_id: str = open_message.session_id
        self.open = open_message
        self._carrier = carrier
        self.results: list[UtteranceResult] = []
        self.opened: SessionOpened | None = None
        self.closed: SessionClosed | None = None
        self.resumes = 0
        self._resume_after = resume_after
        """Given for the first open: the caller reattaches a session it had before."""
        self._last_result = -1 if resume_after is None else resume_after
        """The index of the last result received (a reopen resumes after it)."""
        self._last_cut = self._last_result
        self._next_seq = 0
        self._kept: deque[Audio] = deque()
        """Chunks sent or to send, not yet known to be cut: what a reopen may resend."""
        self._events: asyncio.Queue[LiveEvent | BaseException] = asyncio.Queue()
        self._conn: object | None = None
        """The connection the session is open (or opening) on."""
        self._attached = False
        """Opened on `_conn` and every kept chunk resent: new chunks go straight out."""
        self._opening: asyncio.Future[SessionOpened | Error] | None = None
        self._lost = asyncio.Event()
        """Set when `_conn` ends (a fresh one per connection)."""
        self._reopen: asyncio.Task[None] | None = None
        self._attaching = False
        """An open or a reopen is under way (one at a time)."""
        self._closing = False
        self._failure: BaseException | None = None
        self._iteration_over = False
        self.rooms: dict[str, tuple[str, bool]] = {}
        """Rooms joined: room -> (listen language, whether the session speaks into it);
        joined again after every reopen (a room membership ends with its connection)."""
        self._joining: dict[str, asyncio.Future[RoomJoined | Error]] = {}

    def __repr__(self) -> str:
        state = (
            "failed" if self._failure is not None else "closed" if self.closed is not None
            else "closing" if self._closing else "attached" if self._attached else "detached"
        )
        return (
            f"LiveSession({self.session_id!r}, {state}, sent={self._next_seq}, "
            f"kept={len(self._kept)}, results={len(self.results)}, resumes={self.resumes})"
        )

    @property
    def next_seq(self) -> int:
        """The `seq` the next chunk gets."""
        return self._next_seq

    @property
    def kept_chunks(self) -> int:
        """Chunks held for a resend (not yet known to be cut)."""
        return len(self._kept)

    @property
    def attached(self) -> bool:
        """Open on the client's connection with every kept chunk sent: new chunks go out at
        once (False while a reopen is under way)."""
        return self._attached

    @property
    def pending(self) -> int:
        """Events received and not yet taken by the iteration."""
        return self._events.qsize()

    @property
    def done(self) -> bool:
        """`session_closed` came, or the session failed."""
        return self.closed is not None or self._failure is not None

    # --- the caller's side ---------------------------------------------------------------

    async def send_audio(
        self, data: bytes, *, is_final: bool = False, duration_ms: int | None = None
    ) -> int:
        """Send the next chunk (`is_final` ends the utterance); its `seq`. While the
        connection is down the chunk is kept and goes out once the session is reopened.
        Raises `SessionError` or `ConnectionLost` once the session failed, and
        `RuntimeError` after `close()`."""
        if self._failure is not None:
            raise self._failure
        if self._closing or self.closed is not None:
            raise RuntimeError(f"live session {self.session_id} is closed")
        # Checked here, not by the hub: a refused chunk would leave a gap in the numbering.
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"audio data must be bytes, not {type(data).__name__}")
        if duration_ms is not None and duration_ms < 0:
            raise ValueError(f"duration_ms must be >= 0, got {duration_ms}")
        chunk = Audio(
            session_id=self.session_id, seq=self._next_seq, data=bytes(data),
            is_final=is_final, duration_ms=duration_ms,
        )
        self._next_seq += 1
        self._kept.append(chunk)
        if self._attached and self._conn is not None:
            # A failed send is not an error: the reopen resends the chunk.
            await self._carrier.send_on(self._conn, chunk)
        return chunk.seq

    async def join_room(self, room: str, listen_lang: str, *, speak: bool = True) -> RoomJoined:
        """Join `room` as a listener of `listen_lang` (its `room_result`s come through
        this session's iteration); with `speak`, this session's utterances are spoken
        into it too. The membership follows the session across reopens. Raises
        `SessionError` when the hub refuses (`room_limit`...)."""
        if self._failure is not None:
            raise self._failure
        self.rooms[room] = (listen_lang, speak)
        self._carrier.route_room(room, self)
        joined: asyncio.Future[RoomJoined | Error]
        if not self._attached or self._conn is None:
            # Joined when the session is reopened; answered then.
            joined = asyncio.get_running_loop().create_future()
            self._joining[room] = joined
        else:
            joined = await self._send_join(self._conn, room)
        answer: RoomJoined | Error = await joined
        if isinstance(answer, Error):
            self.rooms.pop(room, None)
            self._carrier.route_room(room, None)
            raise SessionError(answer.code, answer.message, answer)
        return answer

    async def leave_room(self, room: str) -> None:
        """Leave `room` (its results stop coming)."""
        if self.rooms.pop(room, None) is None:
            return
        if self._attached and self._conn is not None:
            await self._carrier.send_on(self._conn, RoomLeave(room=room))
        self._carrier.route_room(room, None)

    async def _send_join(self, conn: object, room: str) -> asyncio.Future[RoomJoined | Error]:
        listen_lang, speak = self.rooms[room]
        joined = self._joining.get(room)
        if joined is None or joined.done():
            joined = self._joining[room] = asyncio.get_running_loop().create_future()
        await self._carrier.send_on(conn, RoomJoin(
            room=room, listen_lang=listen_lang, session_id=self.session_id if speak else None
        ))
        return joined

    async def close(self) -> None:
        """Send `session_close`: the hub cuts what it buffered, delivers every result, then
        `session_closed` ends the iteration. Returns at once (iterate, or `finish`)."""
        if self._closing or self.done:
            return
        self._closing = True
        if self._attached and self._conn is not None:
            await self._carrier.send_on(self._conn, SessionClose(session_id=self.session_id))
        # Not attached: the reopen sends it once the kept audio is out.

    async def finish(self, timeout_s: float | None = None) -> list[UtteranceResult]:
        """Close, consume the remaining events, and return every result. For a caller
        who does not iterate itself (it takes the events an iteration would get)."""
        await self.close()

        async def drain() -> None:
            async for _ in self:
                pass

        await asyncio.wait_for(drain(), timeout_s)
        return self.results

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LiveEvent:
        if self._iteration_over:
            raise StopAsyncIteration
        event = await self._events.get()
        if isinstance(event, BaseException):
            self._iteration_over = True
            raise event
        if isinstance(event, SessionClosed):
            self._iteration_over = True
        return event

    # --- opening and reopening ---------------------------------------------------------

    async def start(self) -> None:
        """The first open: returns once the hub answered `session_opened` (and kept audio
        went out); raises `SessionError` when it refused, `ConnectionLost` when no hub
        could be reached."""
        try:
            await self._attach(self._resume_after)
        except BaseException:
            self._carrier.forget(self)
            raise

    async def _attach(self, resume_after: int | None) -> None:
        """Open the session on the client's connection (the next one if that one drops
        meanwhile), then resend the kept chunks the hub does not have."""
        self._attaching = True
        try:
            await self._attach_once_connected(resume_after)
        finally:
            self._attaching = False

    async def _attach_once_connected(self, resume_after: int | None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is not None:
                raise self._failure
            conn = await self._carrier.connection()
            self._conn = conn
            self._lost = lost = asyncio.Event()
            self._opening = opening = loop.create_future()
            message = msgspec.structs.replace(self.open, resume_after=resume_after)
            if not await self._carrier.send_on(conn, message):
                await lost.wait()
                continue
            try:
                answer = await opening
            except _Dropped:
                continue
            finally:
                self._opening = None
            if isinstance(answer, Error):
                if answer.code == HUB_SHUTDOWN and self._carrier.can_move(conn):
                    self._detach()
                    continue  # that hub is draining: the next one
                raise SessionError(answer.code, answer.message, answer)
            self._check_resumable(answer, resume_after, first=self.opened is None)
            self.opened = answer
            if await self._resend(conn, answer.last_seq + 1):
                return
            await lost.wait()

    def _check_resumable(
        self, opened: SessionOpened, resume_after: int | None, *, first: bool
    ) -> None:
        """A reopen must find what the session had: its utterances and its audio up to the
        first chunk kept. Otherwise the hub holds another session under this id (a hub
        restarted without a shared store, or the session expired), and going on would
        mix the two. A first open with `resume_after` (the caller reattaches a session
        it had) goes on from the hub's last chunk."""
        if resume_after is None:
            return
        if opened.next_index <= self._last_result:
            raise SessionError(
                SESSION_LOST,
                f"the hub's session {self.session_id} is at utterance {opened.next_index}, "
                f"the client has results up to {self._last_result}",
            )
        if first:
            self._next_seq = max(self._next_seq, opened.last_seq + 1)
            return
        first_kept = self._kept[0].seq if self._kept else self._next_seq
        if opened.last_seq + 1 < first_kept or opened.last_seq >= self._next_seq:
            raise SessionError(
                SESSION_LOST,
                f"the hub's session {self.session_id} holds audio up to chunk "
                f"{opened.last_seq}; the client sent {self._next_seq} and keeps from "
                f"{first_kept}",
            )

    async def _resend(self, conn: object, seq: int) -> bool:
        """Send the kept chunks from `seq` on, then the close if one is due; True once
        everything went out on `conn` and the session is attached, False if it dropped."""
        while True:
            if self._conn is not conn:
                return False
            if not self._kept:
                break  # every chunk was cut: the hub has them all
            seq = max(seq, self._kept[0].seq)  # chunks before it were cut: the hub has them
            if seq >= self._next_seq:
                break
            chunk = self._kept[seq - self._kept[0].seq]
            if not await self._carrier.send_on(conn, chunk):
                return False
            seq += 1
        if self._closing:  # no chunk can come after it: send_audio refuses
            if not await self._carrier.send_on(conn, SessionClose(session_id=self.session_id)):
                return False
            if self._conn is not conn:
                return False
        # No await between the last check and this: a chunk sent from now on goes out
        # after every kept one.
        self._attached = True
        for room in list(self.rooms):  # memberships ended with the old connection
            await self._send_join(conn, room)
        return True

    def _start_reopen(self) -> None:
        if self.done or self._attaching:
            return  # an attach under way moves to the next connection itself
        self._attaching = True  # from now: the task may start a loop turn later
        self._reopen = asyncio.create_task(self._reopen_loop(), name=f"live:{self.session_id}")

    async def _reopen_loop(self) -> None:
        self.resumes += 1
        try:
            await self._attach(self._last_result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionLost, SessionError: the session is over
            self.fail(exc)

    # --- what the client tells the session -----------------------------------------------

    def received(self, conn: object, message: SessionMessage) -> None:
        """A message about this session, read on `conn`."""
        if conn is not self._conn or self.done:
            return  # a connection the session left (it was replaced there, or moved)
        if isinstance(message, SessionOpened | Error) and self._opening is not None:
            if not self._opening.done():
                self._opening.set_result(message)
            return
        match message:
            case UtteranceCut():
                while self._kept and self._kept[0].seq <= message.last_seq:
                    self._kept.popleft()
                if message.index > self._last_cut:
                    self._last_cut = message.index
                    self._events.put_nowait(message)
            case Partial():
                if message.index > self._last_result:
                    self._events.put_nowait(message)
            case UtteranceResult():
                if message.index > self._last_result:  # else: a resume delivered it again
                    self._last_result = message.index
                    self._last_cut = max(self._last_cut, message.index)
                    self.results.append(message)
                    self._events.put_nowait(message)
            case SessionClosed():
                if message.reason == HUB_SHUTDOWN and not self._closing and (
                    self._carrier.can_move(conn)
                ):
                    # The hub let the session go: another one takes it (from the store).
                    self._detach()
                    self._start_reopen()
                    return
                self.closed = message
                self._attached = False
                self._events.put_nowait(message)
                self._carrier.forget(self)
            case Error() if message.room is not None:
                joined = self._joining.pop(message.room, None)
                if joined is not None and not joined.done():
                    joined.set_result(message)
            case Error():
                if message.code == HUB_SHUTDOWN and not self._closing:
                    # A draining hub refused a chunk: it is kept, and the next hub gets
                    # it. Without one, send no more here: this hub still delivers what
                    # runs, then `session_closed` `hub_shutdown` ends the iteration.
                    if self._carrier.can_move(conn):
                        self._detach()
                        self._start_reopen()
                    else:
                        self._attached = False
                    return
                # A chunk or a close refused: the hub's audio now has a gap.
                self.fail(SessionError(message.code, message.message, message))
            case RoomJoined():
                joined = self._joining.pop(message.room, None)
                if joined is not None and not joined.done():
                    joined.set_result(message)
            case RoomResult():
                if message.room in self.rooms:
                    self._events.put_nowait(message)
            case SessionOpened():
                pass  # an answer to an open the session stopped waiting for

    def connection_lost(self, conn: object) -> None:
        """`conn` ended: reopen on the client's next connection."""
        if conn is not self._conn or self.done:
            return
        self._detach()
        self._start_reopen()

    def _detach(self) -> None:
        self._conn = None
        self._attached = False
        self._lost.set()
        if self._opening is not None and not self._opening.done():
            self._opening.set_exception(_Dropped())

    def fail(self, exc: BaseException) -> None:
        """End the session with `exc`: the iteration raises it, and so does `send_audio`."""
        if self.done:
            return
        self._failure = exc
        self._detach()
        if self._opening is not None and not self._opening.done():
            self._opening.exception()  # retrieved: nobody waits on it any more
        self._events.put_nowait(exc)
        self._carrier.forget(self)

    async def aclose(self) -> None:
        """Stop a reopen under way (the client is closing)."""
        task, self._reopen = self._reopen, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


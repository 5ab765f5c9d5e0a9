"""In-memory stand-ins for the SDK's transport and time, to drive its parts without sockets.

`RecordingLink` is a `HubLink` that keeps every message the agent sends (each
one encoded with the real codec, so an unencodable message fails as it would
on a socket) and hands the agent what the test feeds it. `ScriptedConnector`
is a `Connector` that opens the links the test queues, one per connect.
`ManualClock` is a monotonic clock that moves only when the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import msgspec

from agent_sim.job import JobContext
from agent_sim.link import LinkClosed
from hub.core.messages import (
    Capabilities,
    JobAssign,
    LanguagePair,
    NodeOutbound,
    Pipeline,
    agent_codec,
)

TIMEOUT_S: Final = 5.0
"""The longest any awaited condition may take before the test fails."""
ABNORMAL: Final = 1006
"""The close code of a connection that ended without a close frame."""

M = TypeVar("M")

_CLOSED: Final = object()


class ManualClock:
    """Monotonic seconds that move only when the test advances them."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingLink:
    """A `HubLink` in memory: what the agent sent, in order, and what the hub says next."""

    def __init__(self, name: str = "link", *, binary: bool = False) -> None:
        self.name = name
        self._codec = agent_codec(binary=binary)
        self.sent: list[msgspec.Struct] = []
        self._read = 0
        """How many of `sent` `next_sent` has looked at."""
        self._grew = asyncio.Event()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        """The reason the agent closed the link with (None: it did not close it)."""
        self.aborted = False
        self.frozen = False
        """The hub stopped answering pings (`answers` says False)."""

    def __repr__(self) -> str:
        return f"RecordingLink({self.name!r}, close_code={self.close_code})"

    # --- the HubLink the agent sees -------------------------------------------------

    def encode(self, message: msgspec.Struct) -> str | bytes:
        return self._codec.encode_frame(message)

    async def send(self, message: msgspec.Struct) -> bool:
        self.encode(message)  # what the real link would fail on
        # A real aborted transport may not know yet that it is gone: writing to it
        # is the agent's bug (asyncio warns about it).
        assert not self.aborted, f"{message!r} written to an aborted connection"
        if self.close_code is not None:
            return False
        self.sent.append(message)
        self._grew.set()
        return True

    async def recv(self) -> NodeOutbound:
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # every later recv sees the end too
            raise LinkClosed
        if isinstance(item, str | bytes):
            return self._codec.decode(item)
        message: NodeOutbound = item
        return message

    async def close(self, reason: str = "") -> None:
        self.close_reason = reason
        self.ended(1000)

    def abort(self) -> None:
        self.aborted = True
        self.ended(ABNORMAL)

    async def answers(self, timeout_s: float) -> bool:
        """The hub answers while `frozen` is clear (a test freezes it to play a hub that
        stopped answering)."""
        if self.close_code is not None:
            return False
        if not self.frozen:
            return True
        await asyncio.sleep(0)
        return False

    # --- the hub's side, for the test -------------------------------------------------

    def feed(self, message: NodeOutbound | str | bytes) -> None:
        """The hub sends `message` (a raw frame is decoded by the link, as on a socket)."""
        self._inbox.put_nowait(message)

    def ended(self, code: int) -> None:
        """The connection ends with `code` (the first end counts)."""
        if self.close_code is None:
            self.close_code = code
            self.closed.set()
            self._inbox.put_nowait(_CLOSED)

    async def next_sent(self, cls: type[M]) -> M:
        """The next `cls` the agent sent after what this handed out last, waiting for it
        (the messages of other types it passes over stay in `sent`)."""
        while True:
            while self._read >= len(self.sent):
                self._grew.clear()
                await asyncio.wait_for(self._grew.wait(), TIMEOUT_S)
            message = self.sent[self._read]
            self._read += 1
            if isinstance(message, cls):
                return message

    def unread(self) -> list[msgspec.Struct]:
        """What the agent sent after what `next_sent` handed out last."""
        return self.sent[self._read:]


class ScriptedConnector:
    """A `Connector` whose connects get the links (or errors) the test queues, in order.

    A connect waits until the test queues something for it, so the test decides when
    the agent reconnects. A link is closed as the real one is when the agent leaves it:
    1000, or 1011 when it is left by an exception.
    """

    def __init__(self) -> None:
        self._next: asyncio.Queue[RecordingLink | Exception] = asyncio.Queue()
        self.opened: list[tuple[str, str | None]] = []
        """(url, token) of every connect that got a link."""
        self.attempts: asyncio.Queue[str] = asyncio.Queue()
        """The URL of every connect, as it starts."""

    def queue(self, item: RecordingLink | Exception) -> None:
        self._next.put_nowait(item)

    @asynccontextmanager
    async def open(self, url: str, token: str | None) -> AsyncIterator[RecordingLink]:
        self.attempts.put_nowait(url)
        item = await self._next.get()
        if isinstance(item, Exception):
            raise item
        self.opened.append((url, token))
        try:
            yield item
        except BaseException:
            item.ended(1011)
            raise
        item.ended(1000)

    async def next_attempt(self) -> str:
        return await asyncio.wait_for(self.attempts.get(), TIMEOUT_S)


class Gate:
    """A handler that holds each job until the test releases it (or all of them)."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.cancelled: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self.outputs: dict[str, Any] = {}

    def _event(self, job_id: str) -> asyncio.Event:
        return self._release.setdefault(job_id, asyncio.Event())

    def release(self, job_id: str, output: Any = None) -> None:
        self.outputs[job_id] = output if output is not None else {"done": job_id}
        self._event(job_id).set()

    async def __call__(self, ctx: JobContext) -> Any:
        self.started.put_nowait(ctx.job_id)
        try:
            await self._event(ctx.job_id).wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.job_id)
            raise
        return self.outputs[ctx.job_id]

    async def wait_started(self) -> str:
        return await asyncio.wait_for(self.started.get(), TIMEOUT_S)


CAPS = Capabilities(max_concurrency=2, language_pairs=[LanguagePair("en", "zh")])


def job_assign(job_id: str = "j1", attempt: int = 1, payload: Any = None) -> JobAssign:
    return JobAssign(
        job_id=job_id, attempt=attempt, session_id="s1", src_lang="en", tgt_lang="zh",
        features=[], pipeline=Pipeline(), deadline_ms=30_000, payload=payload,
    )

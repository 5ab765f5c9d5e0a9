"""`LiveSession` without sockets: a scripted `Carrier` plays the client and the hub, so
the paths a correct hub rarely takes are driven on purpose: duplicate results after a
resume, chunks dropped by cuts and resent from `last_seq + 1`, a hub that lost the
session, no hub at all, messages from a connection the session left, `hub_shutdown`."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from agent_sim.client import ConnectionLost
from agent_sim.live import LiveSession, SessionError
from hub.core.messages import (
    Audio,
    Error,
    Partial,
    SessionClose,
    SessionClosed,
    SessionOpen,
    SessionOpened,
    UtteranceCut,
    UtteranceResult,
)

TIMEOUT_S = 2.0
SID = "s1"


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True

    def __repr__(self) -> str:
        return f"Conn({self.name})"


class FakeCarrier:
    """Hands out the connections a test queues, records what is sent on which."""

    def __init__(self, *, can_move: bool = False) -> None:
        self.ready: asyncio.Queue[Conn | BaseException] = asyncio.Queue()
        self.sent: list[tuple[Conn, msgspec.Struct]] = []
        self.posted = asyncio.Event()
        self.forgotten: list[LiveSession] = []
        self.moves = can_move
        self.left: list[Conn] = []

    async def connection(self) -> object:
        conn = await self.ready.get()
        if isinstance(conn, BaseException):
            raise conn
        return conn

    async def send_on(self, conn: object, message: msgspec.Struct) -> bool:
        assert isinstance(conn, Conn)
        await asyncio.sleep(0)  # a send may suspend: let the test's other tasks run
        if not conn.alive:
            return False
        self.sent.append((conn, message))
        self.posted.set()
        return True

    def can_move(self, conn: object) -> bool:
        assert isinstance(conn, Conn)
        self.left.append(conn)
        return self.moves

    def forget(self, session: LiveSession) -> None:
        self.forgotten.append(session)

    def on(self, conn: Conn) -> list[msgspec.Struct]:
        return [m for c, m in self.sent if c is conn]

    async def sent_open(self, conn: Conn) -> SessionOpen:
        """Wait for the session_open sent on `conn`."""
        async def opened() -> SessionOpen:
            while True:
                for message in self.on(conn):
                    if isinstance(message, SessionOpen):
                        return message
                self.posted.clear()
                await self.posted.wait()

        return await asyncio.wait_for(opened(), TIMEOUT_S)


def seqs(messages: list[msgspec.Struct]) -> list[int]:
    return [m.seq for m in messages if isinstance(m, Audio)]


def opened(next_index: int, last_seq: int, *, resumed: bool = True) -> SessionOpened:
    return SessionOpened(session_id=SID, resumed=resumed, next_index=next_index,
                         last_seq=last_seq)


def cut(index: int, last_seq: int) -> UtteranceCut:
    return UtteranceCut(session_id=SID, index=index, job_id=f"j{index}", cut="final",
                        duration_ms=100, size=3200, last_seq=last_seq)


def result(index: int, **fields: Any) -> UtteranceResult:
    return UtteranceResult(session_id=SID, index=index, job_id=f"j{index}", node_id="n1",
                           ok=True, output={"i": index}, src_lang="en", tgt_lang="de",
                           **fields)


async def started(carrier: FakeCarrier, *, resume_after: int | None = None) -> tuple[
    LiveSession, Conn
]:
    """A session opened on a first connection (the hub answered as a new session)."""
    session = LiveSession(carrier, SessionOpen(session_id=SID, src_lang="en", tgt_lang="de"),
                          resume_after=resume_after)
    conn = Conn("a")
    carrier.ready.put_nowait(conn)
    start = asyncio.create_task(session.start())
    message = await carrier.sent_open(conn)
    assert message.resume_after == resume_after
    session.received(conn, opened(0, -1, resumed=False) if resume_after is None
                     else opened(resume_after + 1, 41))
    await asyncio.wait_for(start, TIMEOUT_S)
    return session, conn


async def drop_and_reopen(
    carrier: FakeCarrier, session: LiveSession, old: Conn, answer: SessionOpened | Error
) -> tuple[Conn, SessionOpen]:
    """`old` drops; the session reopens on a new connection, answered with `answer`."""
    old.alive = False
    new = Conn(f"after-{old.name}")
    carrier.ready.put_nowait(new)
    session.connection_lost(old)
    message = await carrier.sent_open(new)
    session.received(new, answer)
    return new, message


async def until_attached(carrier: FakeCarrier, session: LiveSession) -> None:
    for _ in range(100):
        if session.attached:
            return
        await asyncio.sleep(0)
    raise AssertionError("the session never attached")


async def drain_events(session: LiveSession) -> list[Any]:
    out: list[Any] = []
    while session.pending:
        out.append(await asyncio.wait_for(anext(session), TIMEOUT_S))
    return out


# --- tests -----------------------------------------------------------------------------


async def test_a_cut_releases_its_chunks_and_the_reopen_resends_from_last_seq() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    for i in range(6):
        await session.send_audio(bytes([i]))
    assert seqs(carrier.on(a)) == [0, 1, 2, 3, 4, 5] and session.kept_chunks == 6
    session.received(a, cut(0, 2))
    assert session.kept_chunks == 3  # 3, 4, 5: not known to be cut
    # The hub got chunks up to 4 before the drop; 5 is lost with the socket.
    b, reopen = await drop_and_reopen(carrier, session, a, opened(1, 4))
    assert reopen.resume_after == -1
    await session.send_audio(bytes([6]))  # while the resend is under way
    await until_attached(carrier, session)
    assert seqs(carrier.on(b)) == [5, 6]
    assert [m.data for m in carrier.on(b) if isinstance(m, Audio)] == [bytes([5]), bytes([6])]
    await session.send_audio(bytes([7]))
    assert seqs(carrier.on(b)) == [5, 6, 7] and session.resumes == 1


async def test_results_are_yielded_once_in_order_across_a_resume() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    await session.send_audio(b"x", is_final=True)
    session.received(a, cut(0, 0))
    session.received(a, Partial(session_id=SID, index=0, data="p"))
    session.received(a, result(0))
    session.received(a, result(0))  # the same index again: dropped
    b, reopen = await drop_and_reopen(carrier, session, a, opened(2, 0))
    assert reopen.resume_after == 0
    await until_attached(carrier, session)
    # A hub that delivers again what the client has (and a late partial of it): dropped.
    session.received(b, result(0))
    session.received(b, Partial(session_id=SID, index=0, data="late"))
    session.received(b, result(1))
    events = await drain_events(session)
    assert [type(e).__name__ for e in events] == [
        "UtteranceCut", "Partial", "UtteranceResult", "UtteranceResult",
    ]
    assert [r.index for r in session.results] == [0, 1]


async def test_a_close_while_away_is_sent_after_the_resent_audio() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    await session.send_audio(b"0")
    a.alive = False
    await session.send_audio(b"1")  # lost
    await session.close()  # lost too: the connection is dead
    b, _ = await drop_and_reopen(carrier, session, a, opened(0, 0))
    await until_attached(carrier, session)
    sent_b = carrier.on(b)
    assert [type(m).__name__ for m in sent_b] == ["SessionOpen", "Audio", "SessionClose"]
    assert seqs(sent_b) == [1]
    with pytest.raises(RuntimeError):
        await session.send_audio(b"2")
    session.received(b, SessionClosed(session_id=SID, reason="closed", utterances=1))
    assert [type(e) for e in await drain_events(session)] == [SessionClosed]
    with pytest.raises(StopAsyncIteration):
        await anext(session)
    assert carrier.forgotten == [session]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (opened(0, -1), "the hub's session is at utterance 0, the client has result 0"),
        (opened(1, 0), "the hub lacks chunk 1, which the client dropped at a cut"),
        (opened(1, 9), "the hub holds chunks the client never sent"),
    ],
)
async def test_a_reopen_that_finds_another_session_fails_it(
    answer: SessionOpened, why: str
) -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    for i in range(4):
        await session.send_audio(bytes([i]), is_final=i == 1)
    session.received(a, cut(0, 1))
    session.received(a, result(0))
    await drop_and_reopen(carrier, session, a, answer)
    events = [await asyncio.wait_for(anext(session), TIMEOUT_S) for _ in range(2)]
    assert [type(e) for e in events] == [UtteranceCut, UtteranceResult]
    with pytest.raises(SessionError) as lost:
        await asyncio.wait_for(anext(session), TIMEOUT_S)
    assert lost.value.code == "session_lost", why
    with pytest.raises(SessionError):
        await session.send_audio(b"more")
    assert carrier.forgotten == [session]


async def test_no_hub_to_come_back_to_fails_the_session_with_connection_lost() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    a.alive = False
    carrier.ready.put_nowait(ConnectionLost("no hub reachable"))
    session.connection_lost(a)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(anext(session), TIMEOUT_S)
    with pytest.raises(StopAsyncIteration):
        await anext(session)
    with pytest.raises(ConnectionLost):
        await session.send_audio(b"x")


async def test_messages_from_a_connection_the_session_left_are_ignored() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    b, _ = await drop_and_reopen(carrier, session, a, opened(0, -1))
    await until_attached(carrier, session)
    # The old connection was still alive at the hub: it says the session was replaced.
    session.received(a, SessionClosed(session_id=SID, reason="replaced", utterances=0))
    session.received(a, result(0))
    session.received(b, result(0))
    events = await drain_events(session)
    assert [type(e) for e in events] == [UtteranceResult] and not session.done


async def test_a_drop_during_the_reopen_moves_to_the_next_connection() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    await session.send_audio(b"0")
    a.alive = False
    b = Conn("b")
    carrier.ready.put_nowait(b)
    session.connection_lost(a)
    await carrier.sent_open(b)
    # b drops before the hub answers: the reopen goes on to c (one reopen, not two).
    b.alive = False
    c = Conn("c")
    carrier.ready.put_nowait(c)
    session.connection_lost(b)
    await carrier.sent_open(c)
    session.received(c, opened(0, -1))
    await until_attached(carrier, session)
    assert seqs(carrier.on(c)) == [0] and session.resumes == 1


async def test_hub_shutdown_moves_the_session_when_another_hub_may_take_it() -> None:
    carrier = FakeCarrier(can_move=True)
    session, a = await started(carrier)
    await session.send_audio(b"0")
    b = Conn("b")
    carrier.ready.put_nowait(b)
    session.received(a, SessionClosed(session_id=SID, reason="hub_shutdown", utterances=0))
    await carrier.sent_open(b)
    assert carrier.left == [a]
    session.received(b, opened(0, -1))
    await until_attached(carrier, session)
    assert seqs(carrier.on(b)) == [0] and not session.done
    # A draining hub refusing the reopen: the next one.
    b.alive = False
    c, d = Conn("c"), Conn("d")
    carrier.ready.put_nowait(c)
    session.connection_lost(b)
    await carrier.sent_open(c)
    carrier.ready.put_nowait(d)
    session.received(c, Error(code="hub_shutdown", message="draining", session_id=SID))
    await carrier.sent_open(d)
    session.received(d, opened(0, 0))
    await until_attached(carrier, session)
    assert seqs(carrier.on(d)) == [] and session.resumes == 2
    # A draining hub refusing a chunk: the chunk goes to the next hub.
    await session.send_audio(b"1")
    e = Conn("e")
    carrier.ready.put_nowait(e)
    session.received(d, Error(code="hub_shutdown", message="draining", session_id=SID))
    await carrier.sent_open(e)
    session.received(e, opened(0, 0))
    await until_attached(carrier, session)
    assert seqs(carrier.on(e)) == [1] and session.resumes == 3 and not session.done


async def test_hub_shutdown_ends_the_iteration_when_no_other_hub_may() -> None:
    carrier = FakeCarrier(can_move=False)
    session, a = await started(carrier)
    await session.send_audio(b"0", is_final=True)
    await session.send_audio(b"1")
    # The draining hub refuses chunk 1: nothing more is sent there, and what it still
    # delivers comes through until its session_closed.
    session.received(a, Error(code="hub_shutdown", message="draining", session_id=SID))
    await session.send_audio(b"2")
    assert seqs(carrier.on(a)) == [0, 1] and not session.attached and not session.done
    session.received(a, cut(0, 0))
    session.received(a, result(0))
    session.received(a, SessionClosed(session_id=SID, reason="hub_shutdown", utterances=1))
    events = await drain_events(session)
    assert [type(e) for e in events] == [UtteranceCut, UtteranceResult, SessionClosed]
    assert events[-1].reason == "hub_shutdown" and session.done


async def test_a_chunk_the_hub_would_refuse_is_refused_before_it_takes_a_seq() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    with pytest.raises(TypeError):
        await session.send_audio("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await session.send_audio(b"x", duration_ms=-1)
    assert await session.send_audio(bytearray(b"ok")) == 0
    assert [m.data for m in carrier.on(a) if isinstance(m, Audio)] == [b"ok"]


async def test_an_error_about_the_session_fails_it() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier)
    session.received(a, Error(code="invalid_field", message="seq gap", path="$.seq",
                              session_id=SID))
    with pytest.raises(SessionError) as failed:
        await asyncio.wait_for(anext(session), TIMEOUT_S)
    assert failed.value.code == "invalid_field" and failed.value.error is not None


async def test_a_first_open_with_resume_after_goes_on_from_the_hubs_chunks() -> None:
    carrier = FakeCarrier()
    session, a = await started(carrier, resume_after=3)  # the hub: next 4, last_seq 41
    assert await session.send_audio(b"x") == 42
    session.received(a, result(3))  # the caller had it already
    session.received(a, result(4))
    assert [r.index for r in session.results] == [4]
    assert [m.seq for m in carrier.on(a) if isinstance(m, Audio)] == [42]
    assert not any(isinstance(m, SessionClose) for m in carrier.on(a))

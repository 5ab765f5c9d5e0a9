"""The live layer on its own: `LiveSessions` over the job path and the memory store,
recording links for the client and the node, a manual clock for pauses and idleness.

No sockets and no timing: deadlines fire when the test advances the clock and
asks; the session's own tasks (persist, then submit) run to completion in
`settle` (the memory store never suspends).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from hub.core.config import HubConfig
from hub.core.envelopes import SessionTaken
from hub.core.errors import ProtocolError
from hub.core.messages import (
    Audio,
    JobAccept,
    JobAssign,
    JobProgress,
    JobResult,
    Partial,
    SessionClose,
    SessionClosed,
    SessionOpen,
    SessionOpened,
    UtteranceCut,
    UtteranceResult,
)
from hub.core.principal import ANONYMOUS
from hub.live.registry import LiveSessions
from tests.jobs.test_service import JobPath, RecordingLink

CONFIG = HubConfig(
    hub_id="home", accept_timeout_ms=1_000, job_timeout_ms=5_000, selection_seed=7,
    session_idle_ms=60_000,
)
MS100 = bytes(3200)


class LivePath(JobPath):
    def __init__(self) -> None:
        super().__init__(CONFIG)
        self.live = LiveSessions(
            config=CONFIG, home=self.service.home, store=self.store, peers=self.peers,
            fleet=self.fleet, metrics=self.metrics, clock=self.clock,
        )

    async def settle(self) -> None:
        """Run the sessions' tasks (persist, submit) to their end."""
        for _ in range(1000):
            if not any(s.tasks for s in self.live.sessions.values()):
                return
            await asyncio.sleep(0)
        raise AssertionError("session tasks did not end")

    async def open(self, conn: RecordingLink, sid: str = "s1", **fields: Any) -> SessionOpened:
        await self.live.open(conn, ANONYMOUS, SessionOpen(
            session_id=sid, src_lang="en", tgt_lang="de", **fields
        ))
        opened, *rest = conn.take()
        conn.sent = rest  # what followed it (a resume's results) stays for the test
        assert isinstance(opened, SessionOpened)
        return opened

    async def audio(self, conn: RecordingLink, seq: int, data: bytes = MS100,
                    sid: str = "s1", **fields: Any) -> None:
        self.live.audio(conn, Audio(sid, seq, data, **fields))
        await self.settle()

    async def fire(self, after_ms: int) -> None:
        self.clock.advance(after_ms)
        await self.live.timers.fire_due()
        await self.settle()


@pytest.fixture
def path() -> LivePath:
    return LivePath()


def kinds(messages: list[msgspec.Struct]) -> list[str]:
    return [type(m).__name__ for m in messages]


async def test_a_pause_cuts_without_a_timer_per_chunk(path: LivePath) -> None:
    node = await path.node("n1")
    conn = path.client()
    await path.open(conn, pause_ms=1_000)
    await path.audio(conn, 0)
    await path.fire(600)
    await path.audio(conn, 1)  # audio came: the pause restarts from here
    assert path.live.timers.heap_size == 1  # one deadline for the session, not one a chunk
    await path.fire(500)  # 1.1 s after the first chunk, 0.5 s after the last: no cut
    assert node.take() == [] and conn.take() == []
    await path.fire(500)
    assign = node.take()[0]
    assert isinstance(assign, JobAssign) and assign.payload["audio"] == MS100 * 2
    cut = conn.take()[0]
    assert isinstance(cut, UtteranceCut) and (cut.cut, cut.index, cut.last_seq) == ("pause", 0, 1)
    assert path.live.timers.heap_size == 0


async def test_partials_and_results_in_order(path: LivePath) -> None:
    node = await path.node("n1", slots=4)
    conn = path.client()
    await path.open(conn)
    for seq in range(3):
        await path.audio(conn, seq, is_final=True)
    assigns = node.take()
    assert [a.payload["utterance_index"] for a in assigns] == [0, 1, 2]
    assert kinds(conn.take()) == ["UtteranceCut"] * 3
    await path.from_node("n1", JobAccept(assigns[1].job_id, 1))
    await path.from_node("n1", JobProgress(assigns[1].job_id, 1, "interim"))
    partial = conn.take()[0]
    assert isinstance(partial, Partial) and (partial.index, partial.data) == (1, "interim")
    for assign in (assigns[2], assigns[1]):
        await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output=assign.job_id))
    assert conn.take() == []  # 0 has no result yet: 1 and 2 wait
    await path.from_node("n1", JobResult(assigns[0].job_id, 1, ok=True, output="first"))
    results = conn.take()
    assert [r.index for r in results] == [0, 1, 2]  # type: ignore[attr-defined]


async def test_a_refused_utterance_is_answered_in_its_place(path: LivePath) -> None:
    node = await path.node("n1")
    conn = path.client()
    await path.open(conn)
    await path.audio(conn, 0, is_final=True)
    assert len(node.take()) == 1
    await path.drop("n1")  # its job fails over to nothing; the next utterance finds no node
    await path.audio(conn, 1, is_final=True)
    messages = conn.take()
    cut = next(m for m in messages if isinstance(m, UtteranceCut) and m.index == 1)
    assert cut.job_id is None
    results = [m for m in messages if isinstance(m, UtteranceResult)]
    assert [(r.index, r.ok, r.error.code if r.error else None) for r in results] == [
        (0, False, "no_node"), (1, False, "no_node"),
    ]


async def test_a_detached_session_waits_for_its_utterances_then_idles_out(
    path: LivePath,
) -> None:
    node = await path.node("n1")
    conn = path.client()
    await path.open(conn)
    await path.audio(conn, 0, is_final=True)
    assign = node.take()[0]
    path.live.connection_lost(conn)
    await path.fire(CONFIG.session_idle_ms)
    assert len(path.live) == 1  # its utterance still runs
    await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output="x"))
    assert conn.take() == [UtteranceCut(
        session_id="s1", index=0, job_id=assign.job_id, cut="final", duration_ms=100,
        size=3200, last_seq=0,
    )]  # the result waits for a connection
    await path.fire(CONFIG.session_idle_ms - 1)
    assert len(path.live) == 1
    await path.fire(1)
    assert len(path.live) == 0
    assert path.service.home.clients == {"c1": conn}  # the session's link is gone


async def test_resume_on_the_same_hub_delivers_held_and_finished_results(
    path: LivePath,
) -> None:
    node = await path.node("n1", slots=4)
    conn = path.client()
    await path.open(conn)
    await path.audio(conn, 0, is_final=True)
    await path.audio(conn, 1, is_final=True)
    first, second = node.take()
    await path.from_node("n1", JobResult(first.job_id, 1, ok=True, output="one"))
    await path.audio(conn, 2)  # buffered
    path.live.connection_lost(conn)
    await path.from_node("n1", JobResult(second.job_id, 1, ok=True, output="two"))
    again = RecordingLink("c2")
    opened = await path.open(again, resume_after=-1)
    assert (opened.resumed, opened.next_index, opened.last_seq) == (True, 2, 2)
    results = again.take()
    assert [(r.index, r.output) for r in results] == [(0, "one"), (1, "two")]  # type: ignore[attr-defined]
    await path.audio(again, 3, is_final=True)
    third = node.take()[0]
    assert third.payload["audio"] == MS100 * 2  # the buffered chunk was kept


async def test_another_hub_taking_the_session_closes_it_here(path: LivePath) -> None:
    await path.node("n1")
    conn = path.client()
    await path.open(conn)
    path.live.taken(SessionTaken("other", tenant="default", session_id="s1"))
    assert conn.take() == [SessionClosed(session_id="s1", reason="replaced", utterances=0)]
    assert len(path.live) == 0
    with pytest.raises(ProtocolError) as info:
        path.live.audio(conn, Audio("s1", 0, MS100))
    assert info.value.code == "unknown_session" and info.value.session_id == "s1"


async def test_drain_cuts_what_is_buffered_and_refuses_new_sessions(path: LivePath) -> None:
    node = await path.node("n1")
    conn = path.client()
    await path.open(conn, pause_ms=0)
    await path.audio(conn, 0)
    await path.live.drain()
    assert node.take()[0].payload["audio"] == MS100
    assert conn.take()[0].cut == "close"  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError) as info:
        await path.live.open(conn, ANONYMOUS, SessionOpen(
            session_id="s2", src_lang="en", tgt_lang="de"
        ))
    assert info.value.code == "hub_shutdown"


async def test_closing_waits_for_every_result(path: LivePath) -> None:
    node = await path.node("n1")
    conn = path.client()
    await path.open(conn, pause_ms=0)
    await path.audio(conn, 0)
    await path.live.close(conn, SessionClose("s1"))
    await path.settle()
    assign = node.take()[0]
    assert kinds(conn.take()) == ["UtteranceCut"]
    await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output="x"))
    assert kinds(conn.take()) == ["UtteranceResult", "SessionClosed"]
    assert len(path.live) == 0

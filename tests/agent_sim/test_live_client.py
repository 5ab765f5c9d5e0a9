"""`HubClient.live_session` and the node's `JobContext.utterance` through a real hub over
real sockets: events in order, results in index order, close, refusals, a dropped
connection resumed with the missing audio resent, JSON and MessagePack on both sides."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from agent_sim import (
    Capabilities,
    ConnectionLost,
    HubClient,
    JobContext,
    LanguagePair,
    LiveEvent,
    LiveSession,
    NodeAgent,
    Partial,
    SessionClosed,
    SessionError,
    UtteranceCut,
    UtteranceResult,
)
from hub.app.hub import Hub
from hub.core.messages import AudioFormat
from hub.live.session import LiveSession as HubSession
from tests.agent_sim.proxy import Proxy
from tests.conftest import MakeHub
from tests.support.hubtest import wait_until

TIMEOUT_S = 5.0
CHUNK_BYTES = 3200  # 100 ms of 16 kHz mono 16-bit PCM
ENCODINGS = pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])


def chunk(i: int) -> bytes:
    """Chunk `i`: 100 ms whose bytes say which chunk it is (a lost or repeated chunk
    shows in the audio a node gets)."""
    return bytes([i % 251]) * CHUNK_BYTES


def chunks(first: int, last: int) -> bytes:
    return b"".join(chunk(i) for i in range(first, last + 1))


class Recogniser:
    """A node handler recording each utterance attempt's audio (`heard[session][index]`);
    with `gated`, each utterance waits for the gate of its index before answering."""

    def __init__(self, *, gated: bool = False) -> None:
        self.gated = gated
        self.heard: dict[str, dict[int, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        self.wire_types: list[type] = []
        self.gates: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.finished: list[int] = []

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        utterance = ctx.utterance
        assert utterance is not None and ctx.audio == utterance.audio
        self.heard[ctx.session_id][utterance.index].append(utterance.audio)
        self.wire_types.append(type(ctx.payload["audio"]))
        self.started.put_nowait(utterance.index)
        await ctx.progress({"heard": utterance.index})
        if self.gated:
            await self.gates[utterance.index].wait()
        self.finished.append(utterance.index)
        return {"index": utterance.index, "size": len(utterance.audio),
                "head": utterance.audio[:2]}


CAPS = Capabilities(
    max_concurrency=4, language_pairs=[LanguagePair(src="en", tgt="de")],
    asr_languages=["en"], tts_languages=["de"],
)


@contextlib.asynccontextmanager
async def node(
    hub: Hub, handler: Recogniser, *, node_id: str = "n1", binary: bool = False,
    capabilities: Capabilities = CAPS,
) -> AsyncIterator[NodeAgent]:
    async with NodeAgent(
        node_id=node_id, capabilities=capabilities, hub_urls=[hub.url], handler=handler,
        binary=binary, reconnect_min_s=0.01, reconnect_max_s=0.1,
    ) as agent:
        await agent.wait_registered(TIMEOUT_S)
        yield agent


async def next_event(session: LiveSession) -> LiveEvent:
    return await asyncio.wait_for(anext(session), TIMEOUT_S)


async def events_until(session: LiveSession, results: int) -> list[LiveEvent]:
    """Events up to and including the `results`-th result from now."""
    out: list[LiveEvent] = []
    while sum(isinstance(e, UtteranceResult) for e in out) < results:
        out.append(await next_event(session))
    return out


def check_order(events: list[LiveEvent]) -> None:
    """Per utterance: its cut, then its partials, then its result; results by index."""
    seen: dict[int, list[str]] = defaultdict(list)
    results = []
    for event in events:
        if isinstance(event, UtteranceCut | Partial | UtteranceResult):
            seen[event.index].append(type(event).__name__)
        if isinstance(event, UtteranceResult):
            results.append(event.index)
    assert results == sorted(results) and len(set(results)) == len(results), results
    for index, kinds in seen.items():
        assert kinds == ["UtteranceCut", "Partial", "UtteranceResult"], (index, kinds)


def hub_session(hub: Hub, session_id: str) -> HubSession:
    for (_, sid), session in hub.live.sessions.items():
        if sid == session_id:
            return session
    raise AssertionError(f"the hub holds no session {session_id}")


# --- a session, start to end ---------------------------------------------------------


@pytest.mark.parametrize(
    ("client_binary", "node_binary"),
    [(False, False), (True, True), (False, True), (True, False)],
    ids=["json-json", "msgpack-msgpack", "json-msgpacknode", "msgpack-jsonnode"],
)
async def test_a_session_yields_cuts_partials_results_then_closed(
    hub: Hub, client_binary: bool, node_binary: bool
) -> None:
    recogniser = Recogniser()
    async with (
        node(hub, recogniser, binary=node_binary),
        HubClient(hub.url, binary=client_binary) as client,
    ):
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        assert session.opened is not None
        assert (session.opened.resumed, session.opened.next_index) == (False, 0)
        for seq in range(5):
            assert await session.send_audio(chunk(seq), is_final=seq in (1, 4)) == seq
        events = await events_until(session, 2)
        await session.close()
        closed = await next_event(session)
        with pytest.raises(StopAsyncIteration):
            await next_event(session)
    check_order(events)
    cuts = [e for e in events if isinstance(e, UtteranceCut)]
    assert [(c.index, c.cut, c.duration_ms, c.size, c.last_seq) for c in cuts] == [
        (0, "final", 200, 2 * CHUNK_BYTES, 1), (1, "final", 300, 3 * CHUNK_BYTES, 4),
    ]
    partials = [e.data for e in events if isinstance(e, Partial)]
    assert partials == [{"heard": 0}, {"heard": 1}]
    assert [r.index for r in session.results] == [0, 1]
    assert all(r.ok and r.node_id == "n1" for r in session.results)
    # Bytes in an output stay bytes from a MessagePack node to a MessagePack client; a
    # JSON node sends base64 text, and the hub gives a JSON client base64 text.
    head = session.results[0].output["head"]
    assert head == (bytes([0, 0]) if client_binary and node_binary else "AAA=")
    assert isinstance(closed, SessionClosed)
    assert (closed.reason, closed.utterances) == ("closed", 2)
    # The node got each utterance's exact audio, as bytes, whatever its encoding.
    assert dict(recogniser.heard["s1"]) == {0: [chunks(0, 1)], 1: [chunks(2, 4)]}
    assert set(recogniser.wire_types) == {bytes if node_binary else str}
    assert session.kept_chunks == 0  # every chunk was cut: nothing held for a resend


async def test_results_come_in_index_order_when_jobs_end_out_of_order(hub: Hub) -> None:
    recogniser = Recogniser(gated=True)
    async with node(hub, recogniser) as agent, HubClient(hub.url) as client:
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        for seq in range(3):
            await session.send_audio(chunk(seq), is_final=True)
        started = {await asyncio.wait_for(recogniser.started.get(), TIMEOUT_S)
                   for _ in range(3)}
        assert started == {0, 1, 2}
        recogniser.gates[2].set()
        recogniser.gates[1].set()
        await wait_until(lambda: agent.completed == 2, TIMEOUT_S, "utterances 2 and 1 done")
        # Their results wait at the hub for utterance 0's: only cuts and partials came.
        early = [await next_event(session) for _ in range(6)]
        assert not any(isinstance(e, UtteranceResult) for e in early)
        recogniser.gates[0].set()
        late = await events_until(session, 3)
    assert recogniser.finished == [2, 1, 0]
    check_order(early + late)
    assert [r.index for r in session.results] == [0, 1, 2]
    assert [r.output["index"] for r in session.results] == [0, 1, 2]


async def test_close_cuts_the_buffered_audio_and_ends_the_iteration(hub: Hub) -> None:
    recogniser = Recogniser()
    async with node(hub, recogniser), HubClient(hub.url) as client:
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        await session.send_audio(chunk(0))
        await session.send_audio(chunk(1))
        results = await asyncio.wait_for(session.finish(), TIMEOUT_S)
        with pytest.raises(RuntimeError):
            await session.send_audio(chunk(2))
        assert session.done and session.closed is not None
        assert session.closed.reason == "closed" and session.closed.utterances == 1
        # The id is free again on this client: a new session under it starts after the
        # old one's utterances (the hub's record goes on counting).
        again = await client.live_session("s1", "en", "de", pause_ms=0)
        assert again.opened is not None and again.opened.next_index == 1
    assert [(r.index, r.ok, r.output["size"]) for r in results] == [(0, True, 2 * CHUNK_BYTES)]
    assert recogniser.heard["s1"][0] == [chunks(0, 1)]


async def test_refused_sessions_raise_session_error(make_hub: MakeHub) -> None:
    hub = await make_hub(max_sessions_per_connection=1)
    async with HubClient(hub.url) as client:
        with pytest.raises(SessionError) as refused:
            await client.live_session("s1", "en", "de")
        assert refused.value.code == "no_node"
        assert refused.value.error is not None and refused.value.error.reasons == {}
        async with node(hub, Recogniser()):
            session = await client.live_session("s1", "en", "de")
            with pytest.raises(ValueError):
                await client.live_session("s1", "en", "de")
            with pytest.raises(SessionError) as limit:
                await client.live_session("s2", "en", "de")
            assert limit.value.code == "session_limit"
            # The refusals left the open session working.
            await session.send_audio(chunk(0), is_final=True)
            result = [e for e in await events_until(session, 1)
                      if isinstance(e, UtteranceResult)]
            assert result[0].ok


# --- resume ------------------------------------------------------------------------------


@ENCODINGS
async def test_a_dropped_connection_resumes_and_resends_the_missing_audio(
    hub: Hub, binary: bool
) -> None:
    recogniser = Recogniser(gated=True)
    async with (
        node(hub, recogniser, binary=binary),
        HubClient(hub.url, binary=binary, reconnect_timeout_s=TIMEOUT_S) as client,
    ):
        s1 = await client.live_session("s1", "en", "de", pause_ms=0)
        s2 = await client.live_session("s2", "en", "de", pause_ms=0)
        # s1: utterance 0 delivered; utterance 1 (chunks 3-4) running; 5-6 buffered.
        for seq in range(3):
            await s1.send_audio(chunk(seq), is_final=seq == 2)
        recogniser.gates[0].set()
        before = await events_until(s1, 1)
        for seq in range(3, 7):
            await s1.send_audio(chunk(seq), is_final=seq == 4)
        # s2: its utterance 0 (gate 0 is open: it ends at once).
        await s2.send_audio(chunk(100), is_final=True)
        for _ in range(2):
            await asyncio.wait_for(recogniser.started.get(), TIMEOUT_S)
        await wait_until(lambda: hub_session(hub, "s1").cutter.last_seq == 6, TIMEOUT_S,
                         "the hub to hold s1's chunks 5 and 6")
        assert s1.kept_chunks == 2  # 5 and 6: not yet known to be cut
        # The connection drops; the next two chunks are written into the dead socket.
        assert client.abort_connection()
        await s1.send_audio(chunk(7))
        await s1.send_audio(chunk(8))
        # Both sessions reopen on the new connection by themselves.
        await wait_until(lambda: s1.resumes == 1 and s2.resumes == 1, TIMEOUT_S, "reopens")
        recogniser.gates[1].set()
        recogniser.gates[2].set()
        await s1.send_audio(chunk(9), is_final=True)
        after = await events_until(s1, 2)
        s2_events = await events_until(s2, 1)
    assert client.failovers == 1
    # The hub had chunks up to 6: the session resent 7 and 8 (lost with the socket).
    assert s1.opened is not None
    assert (s1.opened.resumed, s1.opened.last_seq, s1.opened.next_index) == (True, 6, 2)
    # Every result once, in order; the resent chunks continue the buffered utterance.
    assert [r.index for r in s1.results] == [0, 1, 2]
    assert [e.index for e in before + after if isinstance(e, UtteranceResult)] == [0, 1, 2]
    assert dict(recogniser.heard["s1"]) == {
        0: [chunks(0, 2)], 1: [chunks(3, 4)], 2: [chunks(5, 9)],
    }
    assert dict(recogniser.heard["s2"]) == {0: [chunk(100)]}
    assert [r.output["size"] for r in s1.results] == [3 * CHUNK_BYTES, 2 * CHUNK_BYTES,
                                                      5 * CHUNK_BYTES]
    s2_results = [e for e in s2_events if isinstance(e, UtteranceResult)]
    assert [(r.index, r.ok) for r in s2_results] == [(0, True)]
    assert s2.results == s2_results


async def test_results_made_while_the_client_is_away_come_once_after_the_resume(
    hub: Hub,
) -> None:
    recogniser = Recogniser(gated=True)
    async with (
        Proxy(hub.url) as proxy,
        node(hub, recogniser) as agent,
        HubClient(proxy.url, reconnect_timeout_s=TIMEOUT_S) as client,
    ):
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        for seq in range(3):
            await session.send_audio(chunk(seq), is_final=True)
        for _ in range(3):
            await asyncio.wait_for(recogniser.started.get(), TIMEOUT_S)
        recogniser.gates[0].set()
        first = await events_until(session, 1)
        # The connection drops and the client cannot come back yet: utterances 1 and 2
        # finish meanwhile, and the hub holds their results for the session.
        proxy.refusing = True
        proxy.drop()
        held = hub_session(hub, "s1")
        await wait_until(lambda: held.conn is None, TIMEOUT_S, "the hub to see the drop")
        recogniser.gates[1].set()
        recogniser.gates[2].set()
        await wait_until(lambda: agent.completed == 3, TIMEOUT_S, "every utterance done")
        await wait_until(lambda: held.results.has(2), TIMEOUT_S, "the results held")
        assert [r.index for r in session.results] == [0]
        proxy.refusing = False
        rest = await events_until(session, 2)
        await session.close()
        closed = await next_event(session)
    assert session.resumes == 1 and proxy.connections == 2
    assert session.opened is not None and session.opened.next_index == 3
    results = [e.index for e in first + rest if isinstance(e, UtteranceResult)]
    assert results == [0, 1, 2] and [r.index for r in session.results] == [0, 1, 2]
    # Partials and cuts made while away are not sent again: only results are.
    assert not any(isinstance(e, Partial | UtteranceCut) and e.index == 0 for e in rest)
    assert isinstance(closed, SessionClosed) and closed.utterances == 3


async def test_a_session_fails_with_connection_lost_when_no_hub_comes_back(
    hub: Hub,
) -> None:
    async with (
        Proxy(hub.url) as proxy,
        node(hub, Recogniser()),
        HubClient(proxy.url, reconnect_timeout_s=0.3) as client,
    ):
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        await session.send_audio(chunk(0))
        proxy.refusing = True
        proxy.drop()
        with pytest.raises(ConnectionLost):
            await next_event(session)
        with pytest.raises(ConnectionLost):
            await session.send_audio(chunk(1))
        assert session.done and session.resumes == 1


# --- encodings ---------------------------------------------------------------------------


@ENCODINGS
async def test_json_and_msgpack_nodes_get_the_same_audio_bytes(
    hub: Hub, binary: bool
) -> None:
    audio = bytes(range(256)) * 25  # every byte value: nothing survives by luck
    json_node, msgpack_node = Recogniser(), Recogniser()
    pool = {"json": 1, "msgpack": 2}
    async with (
        node(hub, json_node, node_id="json",
             capabilities=msgspec_replace(CAPS, pool=pool["json"])),
        node(hub, msgpack_node, node_id="msgpack", binary=True,
             capabilities=msgspec_replace(CAPS, pool=pool["msgpack"])),
        HubClient(hub.url, binary=binary) as client,
    ):
        fmt = AudioFormat(codec="opus", sample_rate_hz=48_000, channels=2)
        for name, number in pool.items():
            session = await client.live_session(
                name, "en", "de", preferred_pool=number, audio_format=fmt, pause_ms=0,
            )
            await session.send_audio(audio, is_final=True, duration_ms=640)
            results = await asyncio.wait_for(session.finish(), TIMEOUT_S)
            assert [(r.ok, r.node_id) for r in results] == [(True, name)]
    assert json_node.heard["json"][0] == msgpack_node.heard["msgpack"][0] == [audio]
    assert json_node.wire_types == [str] and msgpack_node.wire_types == [bytes]


def msgspec_replace(caps: Capabilities, **changes: Any) -> Capabilities:
    return msgspec.structs.replace(caps, **changes)


async def test_the_node_sees_the_format_index_and_duration(hub: Hub) -> None:
    seen: list[tuple[Any, ...]] = []

    async def handler(ctx: JobContext) -> str:
        utterance = ctx.utterance
        index = None if utterance is None else utterance.index
        duration = None if utterance is None else utterance.duration_ms
        seen.append((index, duration, ctx.audio_format, ctx.audio is None, ctx.session_id))
        return "ok"

    async with (
        NodeAgent(node_id="n1", capabilities=CAPS, hub_urls=[hub.url], handler=handler)
        as agent,
        HubClient(hub.url) as client,
    ):
        await agent.wait_registered(TIMEOUT_S)
        fmt = AudioFormat(sample_rate_hz=8000, channels=1)
        session = await client.live_session("talk", "en", "de", audio_format=fmt, pause_ms=0)
        await session.send_audio(bytes(1600), is_final=True)  # 100 ms at 8 kHz
        await session.send_audio(bytes(3200), is_final=True)
        await asyncio.wait_for(session.finish(), TIMEOUT_S)
        # A job submitted otherwise is no utterance, whatever its payload holds.
        plain = await client.submit("en", "de", session_id="chat",
                                    payload={"audio": "AAAA", "utterance_index": "0"})
        answer = await asyncio.wait_for(plain.result, TIMEOUT_S)
        assert answer.ok
    assert seen == [
        (0, 100, fmt, False, "talk"), (1, 200, fmt, False, "talk"),
        (None, None, None, True, "chat"),
    ]


async def test_a_draining_hub_delivers_what_runs_then_ends_the_iteration(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub()
    recogniser = Recogniser(gated=True)
    async with (
        node(hub, recogniser) as agent,
        HubClient(hub.url, reconnect_timeout_s=0.5) as client,
    ):
        session = await client.live_session("s1", "en", "de", pause_ms=0)
        await session.send_audio(chunk(0), is_final=True)
        first = await next_event(session)
        assert isinstance(first, UtteranceCut) and first.index == 0
        drain = asyncio.create_task(hub.drain())
        await wait_until(lambda: not hub.live.accepting, TIMEOUT_S, "the hub to drain")
        # The draining hub refuses audio: with no other hub the chunk stays with the
        # session, nothing more is sent, and the iteration goes on.
        await session.send_audio(chunk(1))
        await wait_until(lambda: not session.attached, TIMEOUT_S, "the refusal")
        assert not session.done and session.kept_chunks == 1  # chunk 1 (0 was cut)
        recogniser.gates[0].set()
        assert await asyncio.wait_for(drain, TIMEOUT_S)
        # The drained hub let the idle node go, and it keeps knocking: stop it first, so
        # that no handshake of its is under way while the hub closes.
        await agent.aclose()
        await hub.aclose()
        events = [first] + [event async for event in session]
    check_order(events)
    assert [type(e) for e in events][-2:] == [UtteranceResult, SessionClosed]
    assert [(r.index, r.ok) for r in session.results] == [(0, True)]
    closed = events[-1]
    assert isinstance(closed, SessionClosed) and closed.reason == "hub_shutdown"
    assert session.done and recogniser.heard["s1"] == {0: [chunk(0)]}


async def test_a_two_way_session_gets_the_direction_the_node_detected(hub: Hub) -> None:
    both_ways = msgspec_replace(CAPS, language_pairs=[
        LanguagePair(src="en", tgt="de"), LanguagePair(src="de", tgt="en"),
    ], asr_languages=["de", "en"], tts_languages=["de", "en"])
    seen: list[tuple[Any, ...]] = []

    async def handler(ctx: JobContext) -> dict[str, str]:
        assert ctx.utterance is not None
        seen.append((ctx.src_lang, ctx.tgt_lang, ctx.utterance.langs))
        return {"src_lang": "de" if ctx.utterance.index == 0 else "en"}

    async with (
        NodeAgent(node_id="n1", capabilities=both_ways, hub_urls=[hub.url], handler=handler)
        as agent,
        HubClient(hub.url) as client,
    ):
        await agent.wait_registered(TIMEOUT_S)
        session = await client.live_session("talk", "auto", langs=["en", "de"], pause_ms=0)
        await session.send_audio(chunk(0), is_final=True)
        await session.send_audio(chunk(1), is_final=True)
        results = await asyncio.wait_for(session.finish(), TIMEOUT_S)
    assert seen == [("auto", "auto", ["en", "de"])] * 2
    assert [(r.ok, r.src_lang, r.tgt_lang) for r in results] == [
        (True, "de", "en"), (True, "en", "de"),
    ]

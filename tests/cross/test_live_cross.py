"""Live sessions across hub processes on one redis-server: a session resumed on another
hub, and a hub SIGKILLed under live sessions (every cut utterance answered once)."""

from __future__ import annotations

import asyncio
import base64
import signal
from typing import Any

import pytest

from tests.support.hub_process import HubProcess
from tests.support.hubtest import (
    Msg,
    TestClient,
    TestNode,
    caps,
    connect_client,
    connect_node,
    wait_until_async,
)

pytestmark = pytest.mark.slow

WAIT_S = 15.0
CHUNK = bytes(range(256)) * 12 + bytes(128)  # 3,200 bytes: 100 ms of 16 kHz PCM


async def open_session(client: TestClient, sid: str, **fields: Any) -> Msg:
    await client.send({"type": "session_open", "session_id": sid, "src_lang": "en",
                       "tgt_lang": "de", "pause_ms": 0, **fields})
    return await client.expect("session_opened", WAIT_S, session_id=sid)


async def send_audio(client: TestClient, sid: str, seq: int, data: bytes, **fields: Any) -> None:
    value: Any = data if client.binary else base64.b64encode(data).decode()
    await client.send({"type": "audio", "session_id": sid, "seq": seq, "data": value, **fields})


def audio_of(assign: Msg) -> bytes:
    audio = assign["payload"]["audio"]
    return audio if isinstance(audio, bytes) else base64.b64decode(audio)


async def next_of(peer: TestClient | TestNode, kind: str, wait_s: float = WAIT_S) -> Msg:
    """The next message of `kind`, skipping others (kept in `peer.received`)."""
    async with asyncio.timeout(wait_s):
        while True:
            message = await peer.recv(wait_s)
            if message.get("type") == kind:
                return message


async def seen_by(hub: HubProcess, node_id: str) -> None:
    async def seen() -> bool:
        nodes = await asyncio.to_thread(hub.get_json, "/v1/nodes")
        return any(n["node_id"] == node_id for n in nodes)

    await wait_until_async(seen, WAIT_S, what=f"{hub.hub_id} to see {node_id}")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_a_session_resumed_on_another_hub_gets_its_running_utterance(
    start_hubs: Any, binary: bool
) -> None:
    home, other = start_hubs(2)
    node = await connect_node(other.url, "n1", caps(), binary=binary)
    try:
        await seen_by(home, "n1")
        client = await connect_client(home.url, binary=binary)
        await open_session(client, "s1")
        await send_audio(client, "s1", 0, CHUNK, is_final=True)
        assign = await node.assigned(WAIT_S)  # homed on `home`, running on `other`'s node
        assert audio_of(assign) == CHUNK
        await next_of(client, "utterance_cut")
        await send_audio(client, "s1", 1, CHUNK)  # buffered on `home`, uncut
        client.abort()

        moved = await connect_client(other.url, binary=binary)
        opened = await open_session(moved, "s1", resume_after=-1)
        # The record in the store says what was cut; uncut audio stayed on `home` (alive:
        # it is not lost, but this hub resumes from the last cut chunk).
        assert (opened["resumed"], opened["next_index"], opened["last_seq"]) == (True, 1, 0)
        await node.accept(assign)
        await node.result(assign, {"text": "moved"})
        result = await next_of(moved, "utterance_result")
        assert (result["index"], result["ok"], result["output"]) == (0, True, {"text": "moved"})
        await send_audio(moved, "s1", 1, CHUNK, is_final=True)
        second = await node.assigned(WAIT_S)
        assert second["payload"]["utterance_index"] == 1 and audio_of(second) == CHUNK
        await node.accept(second)
        await node.result(second, {"text": "two"})
        result = await next_of(moved, "utterance_result")
        assert result["index"] == 1
        await moved.quiet(0.3)
        assert sum(m["type"] == "utterance_result" for m in moved.received) == 2
        await moved.aclose()
    finally:
        await node.aclose()


async def test_a_hub_killed_under_live_sessions_loses_no_cut_utterance(
    start_hubs: Any,
) -> None:
    victim, survivor = start_hubs(2)
    node = await connect_node(survivor.url, "n1", caps(max_concurrency=8))
    try:
        await seen_by(victim, "n1")
        client = await connect_client(victim.url, binary=True)
        sessions = ["a", "b"]
        for sid in sessions:
            await open_session(client, sid)
        pending: list[Msg] = []
        for sid in sessions:
            for seq in range(2):
                await send_audio(client, sid, seq, CHUNK + bytes([seq]), is_final=True)
        for _ in range(4):
            pending.append(await node.assigned(WAIT_S))
        for assign in pending:
            await node.accept(assign)
        # One utterance finishes before the crash; the other three are cut off by it.
        done = pending[0]
        await node.result(done, {"first": True})
        await asyncio.sleep(0.2)  # let that result reach its home before the kill
        victim.kill()
        client.abort()

        back = await connect_client(survivor.url, binary=True)
        for sid in sessions:
            opened = await open_session(back, sid, resume_after=-1)
            assert opened["next_index"] == 2 and opened["last_seq"] == 1
        executions: dict[tuple[str, int], int] = {}

        async def serve() -> None:  # the node runs whatever the survivor sends it
            while True:
                sent = await node.inbox.get()
                if sent["type"] == "job_assign":
                    key = (sent["session_id"], sent["payload"]["utterance_index"])
                    executions[key] = executions.get(key, 0) + 1
                    await node.accept(sent)
                    await node.result(sent, {"rerun": True})

        server = asyncio.create_task(serve())
        results: dict[tuple[str, int], Msg] = {}
        try:
            async with asyncio.timeout(3 * WAIT_S):
                while len(results) < 4:
                    message = await back.recv(3 * WAIT_S)
                    if message["type"] == "utterance_result":
                        key = (message["session_id"], message["index"])
                        assert key not in results, f"{key} answered twice"
                        results[key] = message
            await back.quiet(0.3)
        finally:
            server.cancel()
        assert sum(m["type"] == "utterance_result" for m in back.received) == 4
        assert set(results) == {(s, i) for s in sessions for i in range(2)}
        assert all(r["ok"] for r in results.values()), results
        # Each utterance ran to its end once: the one finished before the crash is
        # answered from its record, the three cut off ran again on the survivor.
        finished_first = (done["session_id"], done["payload"]["utterance_index"])
        assert finished_first not in executions
        assert executions == {k: 1 for k in results if k != finished_first}
        await back.aclose()
    finally:
        await node.aclose()


async def test_sigterm_cuts_delivers_and_closes_live_sessions(start_hubs: Any) -> None:
    (hub,) = start_hubs(1, drain_timeout_ms=10_000)
    node = await connect_node(hub.url, "n1", caps(max_concurrency=4))
    try:
        client = await connect_client(hub.url)
        await open_session(client, "s1")
        await send_audio(client, "s1", 0, CHUNK, is_final=True)
        running = await node.assigned(WAIT_S)
        await send_audio(client, "s1", 1, CHUNK)  # buffered
        await next_of(client, "utterance_cut")
        hub.signal(signal.SIGTERM)
        cut_by_drain = await node.assigned(WAIT_S)
        assert audio_of(cut_by_drain) == CHUNK
        for assign in (running, cut_by_drain):
            await node.accept(assign)
            await node.result(assign, {"index": assign["payload"]["utterance_index"]})
        results = [await next_of(client, "utterance_result") for _ in range(2)]
        assert [(r["index"], r["ok"]) for r in results] == [(0, True), (1, True)]
        closed = await next_of(client, "session_closed")
        assert (closed["reason"], closed["utterances"]) == ("hub_shutdown", 2)
        cut = next(m for m in client.received if m.get("cut") == "close")
        assert cut["index"] == 1
        assert await asyncio.to_thread(hub.proc.wait, WAIT_S) == 0  # type: ignore[union-attr]
        await client.aclose()
    finally:
        await node.aclose()


EVERY_WAY = caps([(a, b) for a in ("en", "de", "fr") for b in ("en", "de", "fr") if a != b],
                 asr=["en", "de", "fr"], tts=["en", "de", "fr"], max_concurrency=32)


async def translate_all(node: TestNode, seen: list[Msg]) -> None:
    while True:
        message = await node.inbox.get()
        if message.get("type") == "job_assign":
            seen.append(message)
            await node.accept(message)
            await node.result(message, {"text": f"{message['tgt_lang']}:"
                                                 f"{message['payload']['utterance_index']}"})


async def join(client: TestClient, room: str, lang: str, **fields: Any) -> Msg:
    await client.send({"type": "room_join", "room": room, "listen_lang": lang, **fields})
    return await next_of(client, "room_joined")


async def test_a_room_spans_hubs_and_outlives_a_hub_with_members(start_hubs: Any) -> None:
    speaker_hub, listener_hub, doomed_hub = start_hubs(3)
    node = await connect_node(speaker_hub.url, "n1", EVERY_WAY)
    seen: list[Msg] = []
    server = asyncio.create_task(translate_all(node, seen))
    clients: list[TestClient] = []
    try:
        for hub in (listener_hub, doomed_hub):
            await seen_by(hub, "n1")
        alice = await connect_client(speaker_hub.url)
        clients.append(alice)
        await open_session(alice, "alice")
        await join(alice, "r", "en", session_id="alice")
        bob, bea = [await connect_client(listener_hub.url) for _ in range(2)]
        clients += [bob, bea]
        await join(bob, "r", "de")
        await join(bea, "r", "de")
        dora = await connect_client(doomed_hub.url)
        clients.append(dora)
        joined = await join(dora, "r", "fr")
        assert (joined["members"], joined["langs"]) == (4, ["de", "en", "fr"])
        await send_audio(alice, "alice", 0, CHUNK, is_final=True)
        for listener, lang in ((bob, "de"), (bea, "de"), (dora, "fr")):
            heard = await next_of(listener, "room_result")
            assert (heard["speaker"], heard["index"], heard["lang"]) == ("alice", 0, lang)
            assert heard["output"]["text"] == f"{lang}:0"
        doomed_hub.kill()

        async def dead() -> bool:  # the speaker's hub stops counting the killed hub
            stats = await asyncio.to_thread(speaker_hub.get_json, "/v1/stats?include=hubs")
            return not any(h["hub_id"] == doomed_hub.hub_id and h["live"]
                           for h in stats["hubs"])

        await wait_until_async(dead, WAIT_S, what="the killed hub to be excluded")
        before = len(seen)
        await send_audio(alice, "alice", 1, CHUNK, is_final=True)
        for listener in (bob, bea):
            heard = await next_of(listener, "room_result")
            assert (heard["index"], heard["lang"]) == (1, "de")
        await next_of(alice, "utterance_result")
        await next_of(alice, "utterance_result")
        assert sorted(j["tgt_lang"] for j in seen[before:]) == ["de", "de"]  # own + room
        for listener in (bob, bea):
            assert sum(m["type"] == "room_result" for m in listener.received) == 2
    finally:
        server.cancel()
        for client in clients:
            await client.aclose()
        await node.aclose()

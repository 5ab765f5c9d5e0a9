"""Rooms through a real hub over real sockets: each member gets every other speaker's
utterances in its own language, in order, exactly once; joining, leaving, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.live.test_live_sockets import CHUNK, open_session, send_audio
from tests.support.hubtest import Msg, TestClient, TestNode, caps

LANGS = ["en", "de", "fr"]
EVERY_WAY = caps([(a, b) for a in LANGS for b in LANGS if a != b], asr=LANGS, tts=LANGS,
                 max_concurrency=32)


@contextlib.asynccontextmanager
async def translator(node: TestNode) -> AsyncIterator[list[Msg]]:
    """Answers every job with `<tgt>:<speaker session>:<index>`; yields the assigns."""
    seen: list[Msg] = []

    async def serve() -> None:
        while True:
            message = await node.inbox.get()
            if message.get("type") != "job_assign":
                continue
            seen.append(message)
            await node.accept(message)
            text = (f"{message['tgt_lang']}:{message['session_id']}:"
                    f"{message['payload']['utterance_index']}")
            await node.result(message, {"text": text})

    task = asyncio.create_task(serve())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def join(client: TestClient, room: str, lang: str, **fields: Any) -> Msg:
    await client.send({"type": "room_join", "room": room, "listen_lang": lang, **fields})
    return await client.expect("room_joined", room=room)


async def room_results(client: TestClient, count: int) -> list[Msg]:
    out: list[Msg] = []
    while len(out) < count:
        message = await client.recv()
        if message["type"] == "room_result":
            out.append(message)
    return out


async def drain(client: TestClient, quiet_s: float = 0.2) -> None:
    """Read whatever arrives until nothing has for `quiet_s` (kept in `received`)."""
    with contextlib.suppress(TimeoutError):
        while True:
            await client.recv(quiet_s)


async def speak(client: TestClient, sid: str, seq: int) -> None:
    await send_audio(client, sid, seq, CHUNK, is_final=True)


@pytest.fixture
async def node(hub: Hub, net: Net) -> TestNode:
    return await net.node(hub, "all", EVERY_WAY)


async def test_a_three_language_room(hub: Hub, net: Net, node: TestNode) -> None:
    alice, bob, carol = [await net.client(hub) for _ in range(3)]
    await open_session(alice, "alice", tgt_lang="de", pause_ms=0)
    await open_session(bob, "bob", src_lang="de", tgt_lang="en", pause_ms=0)
    joined = await join(alice, "r", "en", session_id="alice")
    assert (joined["members"], joined["langs"]) == (1, ["en"])
    await join(bob, "r", "de", session_id="bob")
    joined = await join(carol, "r", "fr")
    assert (joined["members"], joined["langs"]) == (3, ["de", "en", "fr"])
    async with translator(node) as jobs:
        for seq in range(3):
            await speak(alice, "alice", seq)
        await speak(bob, "bob", 0)
        heard_by_bob = await room_results(bob, 3)
        heard_by_carol = await room_results(carol, 4)
        heard_by_alice = await room_results(alice, 1)
    assert [(r["speaker"], r["index"], r["lang"], r["output"]["text"]) for r in heard_by_bob] == [
        ("alice", i, "de", f"de:alice:{i}") for i in range(3)
    ]
    by_speaker: dict[str, list[int]] = {}
    for r in heard_by_carol:
        assert r["lang"] == "fr" and r["ok"] and r["output"]["text"].startswith("fr:")
        by_speaker.setdefault(r["speaker"], []).append(r["index"])
    assert by_speaker == {"alice": [0, 1, 2], "bob": [0]}  # in order per speaker
    assert [(r["speaker"], r["lang"]) for r in heard_by_alice] == [("bob", "en")]
    # Every utterance ran once per language needed: alice's own (de) plus de and fr for
    # the room; bob's own (en) plus en and fr. Nobody hears itself, nothing twice.
    assert len(jobs) == 3 * 3 + 3
    for client, me in ((alice, "alice"), (bob, "bob"), (carol, None)):
        await drain(client)
        heard = [(m["speaker"], m["index"]) for m in client.received
                 if m["type"] == "room_result"]
        assert me not in {speaker for speaker, _ in heard}
        assert len(heard) == len(set(heard))


async def test_listeners_of_the_speakers_language_get_its_transcript(
    hub: Hub, net: Net, node: TestNode
) -> None:
    alice, eve = await net.client(hub), await net.client(hub)
    await open_session(alice, "alice", tgt_lang="de", pause_ms=0)
    await join(alice, "r", "en", session_id="alice")
    await join(eve, "r", "en")
    async with translator(node) as jobs:
        await speak(alice, "alice", 0)
        (heard,) = await room_results(eve, 1)
    assert heard["lang"] == "en" and heard["output"]["text"] == "en:alice:0"
    transcript = next(j for j in jobs if j["tgt_lang"] == "en")
    assert transcript["pipeline"] == {"asr": True, "nmt": False, "tts": False}


async def test_joining_mid_conversation_and_leaving(hub: Hub, net: Net, node: TestNode) -> None:
    alice, bob, dave = [await net.client(hub) for _ in range(3)]
    await open_session(alice, "alice", tgt_lang="de", pause_ms=0)
    await join(alice, "r", "en", session_id="alice")
    await join(bob, "r", "de")
    async with translator(node) as jobs:
        await speak(alice, "alice", 0)
        await room_results(bob, 1)
        await join(dave, "r", "fr")  # after utterance 0: hears from 1 on
        await speak(alice, "alice", 1)
        (first_heard,) = await room_results(dave, 1)
        assert first_heard["index"] == 1
        await room_results(bob, 1)
        await bob.send({"type": "room_leave", "room": "r"})
        await bob.quiet(0.1)
        before = len(jobs)
        await speak(alice, "alice", 2)
        (heard,) = await room_results(dave, 1)
        assert heard["index"] == 2
        while not any(m["type"] == "utterance_result" and m["index"] == 2
                      for m in alice.received):
            await alice.recv()
        langs = sorted(j["tgt_lang"] for j in jobs[before:])
    assert langs == ["de", "fr"]  # alice's own (de) and dave's fr: bob's de is gone
    assert not any(m["type"] == "room_result" and m["index"] == 2 for m in bob.received)


async def test_room_limits(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_room_members=2, max_rooms_per_connection=1)
    await net.node(hub, "all", EVERY_WAY)
    a, b, c = [await net.client(hub) for _ in range(3)]
    await join(a, "r", "en")
    await join(b, "r", "de")
    await c.send({"type": "room_join", "room": "r", "listen_lang": "fr"})
    await c.expect("error", code="room_limit")
    await a.send({"type": "room_join", "room": "other", "listen_lang": "fr"})
    await a.expect("error", code="room_limit")
    await a.send({"type": "room_leave", "room": "r"})
    await join(c, "r", "fr")  # a's place was freed
    await a.send({"type": "room_join", "room": "r", "listen_lang": "x", "session_id": "nope"})
    await a.expect("error", code="unknown_session")


async def test_the_console_lists_rooms_with_members_and_languages(
    hub: Hub, net: Net, node: TestNode
) -> None:
    import json

    from tests.support.hubtest import http_get

    alice, bob = await net.client(hub), await net.client(hub)
    await open_session(alice, "alice", tgt_lang="de", pause_ms=0)
    await join(alice, "r1", "en", session_id="alice")
    await join(bob, "r1", "de")
    await join(bob, "r2", "fr")
    status, _, raw = await http_get(hub.http_url, "/v1/stats?include=rooms")
    body = json.loads(raw)
    assert status == 200
    assert body["live"] == {"sessions": 1, "rooms": 2}
    assert body["rooms"] == [
        {"room": "r1", "tenant": "default", "members": 2, "langs": ["de", "en"], "speakers": 1},
        {"room": "r2", "tenant": "default", "members": 1, "langs": ["fr"], "speakers": 0},
    ]

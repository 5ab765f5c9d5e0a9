"""Rooms from the SDK: `LiveSession.join_room` and the `RoomResult`s its iteration
yields, through a real hub over real sockets; the membership comes back after a
dropped connection."""

from __future__ import annotations

import asyncio
from typing import Any

from agent_sim import Capabilities, HubClient, JobContext, LanguagePair, NodeAgent
from agent_sim.live import LiveSession, SessionError
from hub.app.hub import Hub
from hub.core.messages import RoomResult, UtteranceResult
from tests.conftest import MakeHub
from tests.support.hubtest import wait_until

TIMEOUT_S = 5.0
LANGS = ["en", "de", "fr"]
EVERY_WAY = Capabilities(
    max_concurrency=16,
    language_pairs=[LanguagePair(src=a, tgt=b) for a in LANGS for b in LANGS if a != b],
    asr_languages=LANGS, tts_languages=LANGS,
)


async def translate(ctx: JobContext) -> dict[str, Any]:
    assert ctx.utterance is not None
    return {"text": f"{ctx.tgt_lang}:{ctx.session_id}:{ctx.utterance.index}"}


async def room_results(session: LiveSession, count: int) -> list[RoomResult]:
    out: list[RoomResult] = []
    while len(out) < count:
        event = await asyncio.wait_for(anext(session), TIMEOUT_S)
        if isinstance(event, RoomResult):
            out.append(event)
    return out


async def test_a_three_language_room_from_the_sdk(hub: Hub) -> None:
    async with (
        NodeAgent(node_id="n1", capabilities=EVERY_WAY, hub_urls=[hub.url],
                  handler=translate) as node,
        HubClient(hub.url) as alice_client, HubClient(hub.url) as bob_client,
        HubClient(hub.url) as carol_client,
    ):
        await node.wait_registered(TIMEOUT_S)
        # The docs/sdk.md example: three people, three languages, one room.
        alice = await alice_client.live_session("alice", "en", "de", pause_ms=0)
        bob = await bob_client.live_session("bob", "de", "en", pause_ms=0)
        carol = await carol_client.live_session("carol", "fr", "en", pause_ms=0)
        await alice.join_room("cafe", "en")
        await bob.join_room("cafe", "de")
        joined = await carol.join_room("cafe", "fr")
        assert (joined.members, joined.langs) == (3, ["de", "en", "fr"])
        await alice.send_audio(bytes(3200), is_final=True)
        await bob.send_audio(bytes(3200), is_final=True)
        to_bob = await room_results(bob, 1)
        to_carol = await room_results(carol, 2)
        to_alice = await room_results(alice, 1)
    assert [(r.speaker, r.lang, r.output["text"]) for r in to_bob] == [
        ("alice", "de", "de:alice:0")
    ]
    assert sorted((r.speaker, r.output["text"]) for r in to_carol) == [
        ("alice", "fr:alice:0"), ("bob", "fr:bob:0"),
    ]
    assert [(r.speaker, r.lang) for r in to_alice] == [("bob", "en")]
    assert isinstance(alice.results[0], UtteranceResult)  # its own result, as usual


async def test_a_membership_comes_back_after_a_dropped_connection(make_hub: MakeHub) -> None:
    hub = await make_hub()
    async with (
        NodeAgent(node_id="n1", capabilities=EVERY_WAY, hub_urls=[hub.url],
                  handler=translate) as node,
        HubClient(hub.url) as speaker_client, HubClient(hub.url) as listener_client,
    ):
        await node.wait_registered(TIMEOUT_S)
        speaker = await speaker_client.live_session("spk", "en", "de", pause_ms=0)
        listener = await listener_client.live_session("lis", "de", "en", pause_ms=0)
        await speaker.join_room("r", "en")
        await listener.join_room("r", "de", speak=False)
        await speaker.send_audio(bytes(3200), is_final=True)
        (first,) = await room_results(listener, 1)
        listener_client.abort_connection()
        await wait_until(lambda: listener.resumes == 1 and listener.attached,
                         what="the listener to reopen")
        await wait_until(lambda: len(hub.live.rooms.local.get(("default", "r"), {})) == 2,
                         what="the listener to be in the room again")
        await speaker.send_audio(bytes(3200), is_final=True)
        (second,) = await room_results(listener, 1)
    assert (first.index, second.index) == (0, 1)
    assert second.output["text"] == "de:spk:1"


async def test_a_full_room_is_a_session_error(make_hub: MakeHub) -> None:
    hub = await make_hub(max_room_members=1)
    async with (
        NodeAgent(node_id="n1", capabilities=EVERY_WAY, hub_urls=[hub.url],
                  handler=translate) as node,
        HubClient(hub.url) as one, HubClient(hub.url) as two,
    ):
        await node.wait_registered(TIMEOUT_S)
        first = await one.live_session("a", "en", "de")
        second = await two.live_session("b", "en", "de")
        await first.join_room("r", "en")
        try:
            await second.join_room("r", "de")
        except SessionError as exc:
            assert exc.code == "room_limit"
        else:
            raise AssertionError("a full room was joined")
        assert "r" not in second.rooms

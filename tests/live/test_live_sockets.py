"""Live sessions through a real hub over real sockets: cuts by every rule, results in
order, partials, resume, limits, refusals; JSON and MessagePack clients and nodes."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import Msg, TestClient, TestNode, caps

RATE = 16_000
CHUNK_MS = 100
CHUNK = bytes(RATE * 2 * CHUNK_MS // 1000)  # 100 ms of 16 kHz mono PCM silence


def pcm(ms: int, value: int = 0) -> bytes:
    return bytes([value & 0xFF]) * (RATE * 2 * ms // 1000)


def audio_of(assign: Msg) -> bytes:
    """The utterance's audio as the node got it: bytes from MessagePack, base64 text
    from JSON."""
    audio = assign["payload"]["audio"]
    return audio if isinstance(audio, bytes) else base64.b64decode(audio)


async def open_session(client: TestClient, sid: str = "s1", **fields: Any) -> Msg:
    await client.send({"type": "session_open", "session_id": sid, "src_lang": "en",
                       "tgt_lang": "de", **fields})
    return await client.expect("session_opened", session_id=sid)


async def send_audio(client: TestClient, sid: str, seq: int, data: bytes, **fields: Any) -> None:
    if client.binary:
        await client.send({"type": "audio", "session_id": sid, "seq": seq, "data": data,
                           **fields})
    else:
        await client.send({"type": "audio", "session_id": sid, "seq": seq,
                           "data": base64.b64encode(data).decode(), **fields})


async def answer(node: TestNode, assign: Msg, text: str) -> None:
    await node.accept(assign)
    await node.result(assign, {"text": text, "bytes": len(audio_of(assign))})


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_a_final_chunk_cuts_an_utterance_that_runs_as_a_job(
    hub: Hub, net: Net, binary: bool
) -> None:
    node = await net.node(hub, "n1", binary=binary)
    client = await net.client(hub, binary=binary)
    opened = await open_session(client)
    assert (opened["resumed"], opened["next_index"], opened["last_seq"]) == (False, 0, -1)
    for seq in range(3):
        await send_audio(client, "s1", seq, CHUNK, is_final=seq == 2)
    assign = await node.assigned()
    assert assign["session_id"] == "s1"
    assert audio_of(assign) == CHUNK * 3
    payload = assign["payload"]
    assert payload["utterance_index"] == 0 and payload["duration_ms"] == 300
    assert payload["audio_format"] == {"codec": "pcm_s16le", "sample_rate_hz": 16000,
                                       "channels": 1}
    cut = await client.expect("utterance_cut", index=0, cut="final", duration_ms=300)
    assert cut["bytes"] == len(CHUNK) * 3 and cut["job_id"] == assign["job_id"]
    await node.accept(assign)
    await node.progress(assign, {"partial": "hal"})
    await client.expect("partial", index=0, data={"partial": "hal"})
    await node.result(assign, {"text": "hallo"})
    result = await client.expect("utterance_result", index=0, ok=True, node_id="n1")
    assert result["output"] == {"text": "hallo"} and result["job_id"] == assign["job_id"]
    assert (result["src_lang"], result["tgt_lang"]) == ("en", "de")


async def test_results_go_out_in_index_order_whatever_order_jobs_end_in(
    hub: Hub, net: Net
) -> None:
    node = await net.node(hub, "n1", caps(max_concurrency=4))
    client = await net.client(hub)
    await open_session(client)
    assigns = []
    for index in range(3):
        await send_audio(client, "s1", index, CHUNK, is_final=True)
        assigns.append(await node.assigned())
    for index in range(3):
        await client.expect("utterance_cut", index=index)
    for assign in reversed(assigns):  # the last one finishes first
        await answer(node, assign, f"u{assign['payload']['utterance_index']}")
    results = [await client.expect("utterance_result") for _ in range(3)]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["output"]["text"] for r in results] == ["u0", "u1", "u2"]


async def test_cuts_by_duration_size_and_pause(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub()
    node = await net.node(hub, "n1", caps(max_concurrency=8))
    client = await net.client(hub)
    await open_session(client, "dur", max_utterance_ms=250, pause_ms=0)
    for seq in range(3):  # 300 ms: cut when 250 is reached, at the third chunk
        await send_audio(client, "dur", seq, CHUNK)
    assign = await node.assigned()
    assert assign["payload"]["duration_ms"] == 300
    await client.expect("utterance_cut", session_id="dur", cut="max_duration")
    await answer(node, assign, "d")
    await client.expect("utterance_result", session_id="dur", index=0)

    await open_session(client, "size", max_utterance_bytes=4096, pause_ms=0)
    await send_audio(client, "size", 0, CHUNK)  # 3200 bytes: under the limit
    await send_audio(client, "size", 1, CHUNK)  # 6400: over it
    assign = await node.assigned()
    assert len(audio_of(assign)) == 2 * len(CHUNK)
    await client.expect("utterance_cut", session_id="size", cut="max_bytes")
    await answer(node, assign, "s")
    await client.expect("utterance_result", session_id="size", index=0)

    await open_session(client, "pause", pause_ms=150)
    await send_audio(client, "pause", 0, CHUNK)
    await send_audio(client, "pause", 1, CHUNK)
    assign = await node.assigned(wait_s=5)  # cut by the pause timer, without more audio
    assert len(audio_of(assign)) == 2 * len(CHUNK)
    cut = await client.expect("utterance_cut", session_id="pause", cut="pause")
    assert cut["duration_ms"] == 200
    await answer(node, assign, "p")
    await client.expect("utterance_result", session_id="pause", index=0)


async def test_session_close_cuts_delivers_then_closes(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await open_session(client, pause_ms=0)
    await send_audio(client, "s1", 0, CHUNK)
    await client.send({"type": "session_close", "session_id": "s1"})
    assign = await node.assigned()
    await client.expect("utterance_cut", index=0, cut="close")
    await client.quiet()  # nothing closes while the utterance runs
    await answer(node, assign, "bye")
    await client.expect("utterance_result", index=0, ok=True)
    await client.expect("session_closed", session_id="s1", reason="closed", utterances=1)
    await send_audio(client, "s1", 1, CHUNK)
    error = await client.expect("error", code="unknown_session")
    assert error["session_id"] == "s1"


async def test_refusals_session_limit_no_node_gap_and_missing_target(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(max_sessions_per_connection=2)
    client = await net.client(hub)
    await client.send({"type": "session_open", "session_id": "a", "src_lang": "en",
                       "tgt_lang": "de"})
    error = await client.expect("error", code="no_node", session_id="a")
    assert error["reasons"] == {}  # no nodes at all
    await net.node(hub, "n1", caps([("en", "fr")]))
    await client.send({"type": "session_open", "session_id": "a", "src_lang": "en",
                       "tgt_lang": "de"})
    error = await client.expect("error", code="no_node", session_id="a")
    assert error["reasons"] == {"lang_pair_unsupported": 1}
    await client.send({"type": "session_open", "session_id": "a", "src_lang": "en"})
    await client.expect("error", code="missing_field", session_id="a")
    await open_session(client, "a", tgt_lang="fr")
    await open_session(client, "b", tgt_lang="fr")
    await client.send({"type": "session_open", "session_id": "c", "src_lang": "en",
                       "tgt_lang": "fr"})
    await client.expect("error", code="session_limit", session_id="c")
    await send_audio(client, "a", 0, CHUNK)
    await send_audio(client, "a", 2, CHUNK)  # seq 1 is missing
    error = await client.expect("error", code="invalid_field", session_id="a")
    assert error["path"] == "$.seq"
    await send_audio(client, "a", 0, CHUNK)  # a resend of what the hub has: ignored
    await client.quiet()


async def test_a_dropped_client_resumes_and_gets_what_it_missed(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1", caps(max_concurrency=4))
    client = await net.client(hub)
    await open_session(client, pause_ms=0)
    await send_audio(client, "s1", 0, CHUNK, is_final=True)
    first = await node.assigned()
    await answer(node, first, "one")
    await client.expect("utterance_cut", index=0)
    await client.expect("utterance_result", index=0)
    await send_audio(client, "s1", 1, CHUNK, is_final=True)
    second = await node.assigned()
    await send_audio(client, "s1", 2, CHUNK)  # buffered, not cut
    await client.expect("utterance_cut", index=1)
    client.abort()  # the connection drops; utterance 1 is still running
    await asyncio.sleep(0.1)
    await answer(node, second, "two")

    again = await net.client(hub)
    opened = await open_session(again, resume_after=-1)
    assert (opened["resumed"], opened["next_index"], opened["last_seq"]) == (True, 2, 2)
    results = [await again.expect("utterance_result") for _ in range(2)]
    assert [(r["index"], r["output"]["text"]) for r in results] == [(0, "one"), (1, "two")]
    # The buffered chunk is still there: the next chunk continues it.
    await send_audio(again, "s1", 3, CHUNK, is_final=True)
    third = await node.assigned()
    assert len(audio_of(third)) == 2 * len(CHUNK)
    await answer(node, third, "three")
    await again.expect("utterance_cut", index=2)
    result = await again.expect("utterance_result", index=2)
    assert result["output"]["text"] == "three"


async def test_opening_a_session_held_by_another_connection_replaces_it(
    hub: Hub, net: Net
) -> None:
    await net.node(hub, "n1")
    first = await net.client(hub)
    await open_session(first)
    second = await net.client(hub)
    opened = await open_session(second, resume_after=-1)
    assert opened["resumed"] is True
    await first.expect("session_closed", session_id="s1", reason="replaced")
    await send_audio(first, "s1", 0, CHUNK)
    await first.expect("error", code="unknown_session")


async def test_an_utterance_whose_only_node_rejects_once_lands_on_it_again(
    hub: Hub, net: Net
) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await open_session(client)
    await send_audio(client, "s1", 0, CHUNK, is_final=True)
    assign = await node.assigned()
    await node.reject(assign, "busy")
    retry = await node.assigned()
    assert retry["attempt"] == 2 and retry["job_id"] == assign["job_id"]
    await answer(node, retry, "ok")
    await client.expect("utterance_cut", index=0)
    result = await client.expect("utterance_result", index=0, ok=True)
    assert result["node_id"] == "n1"


async def test_a_draining_hub_cuts_delivers_then_closes_its_sessions(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub(drain_timeout_ms=5_000)
    node = await net.node(hub, "n1", caps(max_concurrency=4))
    client = await net.client(hub)
    await open_session(client, pause_ms=0)
    await send_audio(client, "s1", 0, CHUNK, is_final=True)
    first = await node.assigned()
    await send_audio(client, "s1", 1, CHUNK)  # buffered when the drain starts
    await client.expect("utterance_cut", index=0)
    drain = asyncio.create_task(hub.drain())
    second = await node.assigned()  # the drain cut it
    assert audio_of(second) == CHUNK
    await client.expect("utterance_cut", index=1, cut="close")
    await client.send({"type": "session_open", "session_id": "s2", "src_lang": "en",
                       "tgt_lang": "de"})
    await client.expect("error", code="hub_shutdown", session_id="s2")
    await answer(node, first, "one")
    await answer(node, second, "two")
    assert await asyncio.wait_for(drain, 5) is True  # every utterance finished
    await hub.aclose()
    results = [await client.expect("utterance_result") for _ in range(2)]
    assert [r["index"] for r in results] == [0, 1] and all(r["ok"] for r in results)
    await client.expect("session_closed", reason="hub_shutdown", utterances=2)


async def test_sessions_belong_to_their_tenant(make_hub: MakeHub, net: Net) -> None:
    from tests.support.auth import SECRET, token

    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    node = await net.node(hub, "n1", caps(max_concurrency=4), token=token(sub="n1", role="node"))
    acme = await net.client(hub, token=token(sub="a", role="client", tenant="acme"))
    globex = await net.client(hub, token=token(sub="g", role="client", tenant="globex"))
    for client in (acme, globex):
        await open_session(client, "shared-id")  # one id, two tenants: two sessions
    await send_audio(acme, "shared-id", 0, pcm(100, 1), is_final=True)
    await send_audio(globex, "shared-id", 0, pcm(100, 2), is_final=True)
    by_audio = {}
    for _ in range(2):
        assign = await node.assigned()
        by_audio[audio_of(assign)[0]] = assign
    await answer(node, by_audio[1], "for acme")
    await answer(node, by_audio[2], "for globex")
    assert (await acme.expect("utterance_cut"))["index"] == 0
    assert (await acme.expect("utterance_result"))["output"]["text"] == "for acme"
    assert (await globex.expect("utterance_cut"))["index"] == 0
    assert (await globex.expect("utterance_result"))["output"]["text"] == "for globex"
    # Resuming another tenant's session id is opening one's own.
    thief = await net.client(hub, token=token(sub="t", role="client", tenant="initech"))
    opened = await open_session(thief, "shared-id", resume_after=-1)
    assert opened["next_index"] == 0
    await thief.quiet()


async def test_a_node_failing_mid_session_moves_the_session(hub: Hub, net: Net) -> None:
    """The session's node drops during utterance 1: that attempt moves to the other
    node, and so do the next utterances (affinity follows the node that served);
    every utterance is answered once."""
    first = await net.node(hub, "n1")
    client = await net.client(hub)
    await open_session(client)
    await send_audio(client, "s1", 0, CHUNK, is_final=True)
    assign = await first.assigned()
    await answer(first, assign, "zero")
    second = await net.node(hub, "n2")
    await send_audio(client, "s1", 1, CHUNK, is_final=True)
    assign = await first.assigned()  # affinity: the node of the last utterance
    await first.accept(assign)
    first.abort()
    moved = await second.assigned()
    assert (moved["job_id"], moved["attempt"]) == (assign["job_id"], 2)
    await answer(second, moved, "one")
    await send_audio(client, "s1", 2, CHUNK, is_final=True)
    await answer(second, await second.assigned(), "two")
    results = []
    while len(results) < 3:
        message = await client.recv()
        if message["type"] == "utterance_result":
            results.append(message)
    assert [(r["index"], r["node_id"], r["output"]["text"]) for r in results] == [
        (0, "n1", "zero"), (1, "n2", "one"), (2, "n2", "two"),
    ]
    await client.quiet()


async def test_sessions_are_not_counted_as_client_connections(hub: Hub, net: Net) -> None:
    from tests.support.hubtest import http_get

    await net.node(hub, "n1")
    client = await net.client(hub)
    for sid in ("a", "b", "c"):
        await open_session(client, sid)
    _, _, text = await http_get(hub.http_url, "/metrics")
    metrics = text.decode()
    assert "\nnodehub_client_sessions 1\n" in metrics
    assert "\nnodehub_sessions 3\n" in metrics

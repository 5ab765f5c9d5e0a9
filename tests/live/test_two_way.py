"""Two-way mode (`src_lang: auto`, `langs: [A, B]`) over real sockets: sessions and plain
submits go only to nodes that serve every enabled stage both ways; the node's detected
language directs the result; an output without one is a failed attempt (`bad_output`)."""

from __future__ import annotations

from typing import Any

from hub.app.hub import Hub
from tests.conftest import Net
from tests.live.test_live_sockets import CHUNK, audio_of, send_audio
from tests.support.hubtest import Msg, TestClient, caps

BOTH = caps([("en", "de"), ("de", "en")], max_concurrency=4)
ONE_WAY = caps([("en", "de")], asr=["en", "de"], tts=["en", "de"], max_concurrency=4)
TWO_WAY = {"src_lang": "auto", "langs": ["en", "de"]}


async def open_two_way(client: TestClient, sid: str = "talk", **fields: Any) -> Msg:
    await client.send({"type": "session_open", "session_id": sid, **TWO_WAY, **fields})
    return await client.expect("session_opened", session_id=sid)


async def test_a_two_way_session_runs_on_a_node_serving_both_ways(hub: Hub, net: Net) -> None:
    await net.node(hub, "one-way", ONE_WAY)
    both = await net.node(hub, "both", BOTH)
    client = await net.client(hub)
    await open_two_way(client)
    for seq, spoken in enumerate(("de", "en")):
        await send_audio(client, "talk", seq, CHUNK, is_final=True)
        assign = await both.assigned()
        assert (assign["src_lang"], assign["tgt_lang"]) == ("auto", "auto")
        assert assign["payload"]["langs"] == ["en", "de"] and audio_of(assign) == CHUNK
        await both.accept(assign)
        await both.result(assign, {"src_lang": spoken, "text": f"heard {spoken}"})
        await client.expect("utterance_cut", index=seq)
        result = await client.expect("utterance_result", index=seq, ok=True, node_id="both")
        other = "en" if spoken == "de" else "de"
        assert (result["src_lang"], result["tgt_lang"]) == (spoken, other)


async def test_an_output_without_a_detected_language_is_a_failed_attempt(
    hub: Hub, net: Net
) -> None:
    both = await net.node(hub, "both", BOTH)
    client = await net.client(hub)
    await open_two_way(client)
    await send_audio(client, "talk", 0, CHUNK, is_final=True)
    first = await both.assigned()
    await both.accept(first)
    await both.result(first, {"text": "no language said"})
    retry = await both.assigned()  # the only node: soft exclusion sends it back
    assert (retry["job_id"], retry["attempt"]) == (first["job_id"], 2)
    await both.accept(retry)
    await both.result(retry, {"src_lang": "fr"})  # not one of the two: still bad
    third = await both.assigned()
    await both.accept(third)
    await both.result(third, "not even an object")
    await client.expect("utterance_cut", index=0)
    result = await client.expect("utterance_result", index=0, ok=False)
    assert result["error"]["code"] == "bad_output"
    assert (result["src_lang"], result["tgt_lang"]) == ("auto", "auto")


async def test_only_one_direction_served_is_no_node_with_reasons(hub: Hub, net: Net) -> None:
    await net.node(hub, "one-way", ONE_WAY)
    client = await net.client(hub)
    await client.send({"type": "session_open", "session_id": "talk", **TWO_WAY})
    error = await client.expect("error", code="no_node", session_id="talk")
    assert error["reasons"] == {"lang_pair_unsupported": 1}
    await client.submit("r1", "auto", "auto", langs=["en", "de"], payload={"text": "hallo"})
    rejected = await client.expect("rejected", request_id="r1", code="no_node")
    assert rejected["reasons"] == {"lang_pair_unsupported": 1}


async def test_a_two_way_submit_gets_langs_in_its_payload(hub: Hub, net: Net) -> None:
    both = await net.node(hub, "both", BOTH)
    client = await net.client(hub)
    await client.submitted("r1", "auto", "auto", langs=["de", "en"], payload={"text": "hi"})
    assign = await both.assigned()
    assert assign["payload"] == {"text": "hi", "langs": ["de", "en"]}
    await both.accept(assign)
    await both.result(assign, {"src_lang": "en", "text": "hallo"})
    result = await client.expect("result", request_id="r1", ok=True)
    assert result["output"]["src_lang"] == "en"


async def test_malformed_two_way_requests_are_refused(hub: Hub, net: Net) -> None:
    await net.node(hub, "both", BOTH)
    client = await net.client(hub)
    for request_id, fields, path in (
        ("same", {"langs": ["en", "en"]}, "$.langs"),
        ("none", {}, "$.langs"),
        ("target", {"langs": ["en", "de"], "tgt_lang": "de"}, "$.tgt_lang"),
        ("payload", {"langs": ["en", "de"], "payload": [1, 2]}, "$.payload"),
    ):
        tgt = fields.pop("tgt_lang", "auto")
        await client.submit(request_id, "auto", tgt, **fields)
        rejected = await client.expect("rejected", request_id=request_id, code="invalid_field")
        assert path in rejected["message"] or rejected["message"], rejected
    await client.submit("one-way", "en", "de", langs=["en", "de"])
    await client.expect("rejected", request_id="one-way", code="invalid_field")
    await client.send({"type": "session_open", "session_id": "x", "src_lang": "auto",
                       "langs": ["en"]})
    await client.expect("error", code="invalid_field", session_id="x")

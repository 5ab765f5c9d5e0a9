"""The job path through a real hub: selection, failover, timeouts, idempotency, cancel."""

from __future__ import annotations

from hub.app.hub import Hub
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, first_assigned, http_get, wait_until

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
    await net.node(hub, "nmt-only", caps([("en", "de")], asr=[], tts=[], max_concurrency=20))
    await net.node(hub, "full", caps([("en", "de")], max_concurrency=20))
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
    other = await net.client(hub)
    accepted = await other.submitted("delta0", routing_key="delta")
    node = next(n for n in nodes if n.node_id == accepted["node_id"])
    while (assign := await node.assigned())["job_id"] != accepted["job_id"]:
        pass  # an earlier key's job on the same node
    await node.accept(assign)
    await node.result(assign, "x")
    await other.expect("result", request_id="delta0", ok=True)
    again = await other.submitted("delta1", routing_key="delta")
    assert again["node_id"] == node.node_id


async def test_session_affinity_routes_by_session_id(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub(session_affinity=True)
    nodes = [await net.node(hub, f"n{i}", caps(max_concurrency=50)) for i in range(5)]
    client = await net.client(hub)
    for session in ("s1", "s2", "s3"):
        chosen = {
            (await client.submitted(f"{session}-{i}", session_id=session))["node_id"]
            for i in range(5)
        }
        assert len(chosen) == 1, (session, chosen)
    first = await first_assigned(nodes)
    assign = await first.assigned()
    assert assign["session_id"] in {"s1", "s2", "s3"}


async def test_no_node_rejection_counts_reasons(make_hub: MakeHub, net: Net) -> None:
    # The v1 rule, kept with `queue_timeout_ms = 0`: a full fleet refuses at once
    # (tests/net/test_queue.py has the waiting rules).
    hub = await make_hub(queue_timeout_ms=0)
    client = await net.client(hub)
    await client.submit("empty")
    rejected = await client.expect("rejected", code="no_node", request_id="empty")
    assert rejected["reasons"] == {} and rejected["message"]
    emotion = ["emotion_detection"]
    await net.node(hub, "fr", caps([("en", "fr")], features=emotion))
    await net.node(hub, "fr2", caps([("en", "fr")], features=emotion))
    await net.node(hub, "plain", caps([("en", "de")]))
    busy = await net.node(hub, "busy", caps([("en", "de")], features=emotion, max_concurrency=1))
    drained = await net.node(hub, "drained", caps([("en", "de")], features=emotion))
    await drained.send({"type": "drain"})
    await wait_until(
        lambda: hub.fleet.snapshot.get("drained").status == "draining",  # type: ignore[union-attr]
        what="drain",
    )
    await client.submitted("fill", features=emotion)  # takes busy's only slot
    await busy.assigned()
    await client.submit("r1", features=emotion)
    rejected = await client.expect("rejected", code="no_node", request_id="r1")
    assert rejected["reasons"] == {
        "lang_pair_unsupported": 2, "feature_missing": 1, "draining": 1, "at_capacity": 1,
    }
    assert "draining=1" in rejected["message"]
    # The request id was not used up by the rejection: it can be submitted again.
    await client.submit("r1")
    accepted = await client.expect("accepted", request_id="r1", duplicate=False)
    assert accepted["node_id"] == "plain"


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
    nodes = [await net.node(hub, n) for n in ("a", "b", "c", "d")]
    client = await net.client(hub)
    await client.submitted("r1")
    pending = list(nodes)
    for attempt in range(1, 4):
        node = await first_assigned(pending)
        assign = await node.assigned()
        assert assign["attempt"] == attempt
        pending.remove(node)
        await node.reject(assign)
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "attempts_exhausted"
    assert result["attempts"] == 3
    [last] = pending
    await last.quiet()  # bounded: the fourth node was never asked
    await client.quiet(0.1)  # bounded: exactly one result


async def test_the_only_node_gets_the_job_again_after_it_rejected_it(
    hub: Hub, net: Net
) -> None:
    """Soft exclusion: no other node can serve it, so the retries go back to `a` (up to
    `max_attempts`), and the job ends with the budget, not `no_node`."""
    a = await net.node(hub, "a")
    client = await net.client(hub)
    await client.submitted("r1")
    for attempt in (1, 2, 3):
        assign = await a.assigned()
        assert assign["attempt"] == attempt
        await a.reject(assign)
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "attempts_exhausted" and result["attempts"] == 3


async def test_a_node_that_failed_a_job_is_avoided_while_another_can_serve_it(
    hub: Hub, net: Net
) -> None:
    a = await net.node(hub, "a")
    client = await net.client(hub)
    await client.submitted("r1")
    first = await a.assigned()
    b = await net.node(hub, "b")
    await a.reject(first)
    second = await b.assigned()
    assert (second["job_id"], second["attempt"]) == (first["job_id"], 2)
    await a.quiet(0.1)


async def test_node_killed_mid_job_fails_over(hub: Hub, net: Net) -> None:
    a = await net.node(hub, "a")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="a")
    first = await a.assigned()
    await a.accept(first)
    await a.progress(first, "half")
    await client.expect("progress", data="half")
    b = await net.node(hub, "b")
    a.abort()  # the TCP connection drops without a closing handshake
    second = await b.assigned()
    assert second["job_id"] == first["job_id"] and second["attempt"] == 2
    await b.accept(second)
    await b.result(second, "whole")
    result = await client.expect("result", request_id="r1", ok=True, node_id="b")
    assert result["attempts"] == 2 and result["output"] == "whole"
    await wait_until(lambda: "a" not in hub.fleet.snapshot, what="a to leave")


async def test_node_failure_result_is_the_outcome(hub: Hub, net: Net) -> None:
    a = await net.node(hub, "a")
    await net.node(hub, "b")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="a")
    assign = await a.assigned()
    await a.accept(assign)
    await a.result(assign, ok=False, error={"code": "model_crashed", "message": "oom"})
    result = await client.expect("result", request_id="r1", ok=False, node_id="a")
    assert result["error"] == {"code": "model_crashed", "message": "oom"}
    assert result["attempts"] == 1


# --- timeouts ----------------------------------------------------------------------------


async def test_accept_timeout_cancels_and_moves_on(make_hub: MakeHub, net: Net) -> None:
    # The helper has accept_timeout_ms to accept attempt 2: 500 ms, ample even on a busy box.
    hub = await make_hub(accept_timeout_ms=500)
    mute = await net.node(hub, "mute")
    helper = await net.node(hub, "helper")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="mute")
    first = await mute.assigned()
    cancel = await mute.expect("job_cancel", job_id=first["job_id"], attempt=1)
    assert cancel["reason"] == "accept_timeout"
    second = await helper.assigned()
    assert second["attempt"] == 2
    await helper.accept(second)
    await helper.result(second, "ok")
    result = await client.expect("result", request_id="r1", ok=True, node_id="helper")
    assert result["attempts"] == 2
    # A late accept from the timed-out node is refused and changes nothing.
    await mute.accept(first)
    await mute.expect("error", code="not_your_job")


async def test_job_timeout_after_accept(make_hub: MakeHub, net: Net) -> None:
    # The attempt deadline is accept_timeout_ms + job_timeout_ms after the assignment;
    # timeout_ms lifts the overall deadline (by default job_timeout_ms * max_attempts).
    hub = await make_hub(accept_timeout_ms=1000, job_timeout_ms=300)
    slow = await net.node(hub, "slow")
    helper = await net.node(hub, "helper")
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="slow", timeout_ms=20_000)
    first = await slow.assigned()
    await slow.accept(first)
    cancel = await slow.expect("job_cancel", job_id=first["job_id"], attempt=1)
    assert cancel["reason"] == "timeout"
    second = await helper.assigned()
    assert second["attempt"] == 2
    await helper.accept(second)
    await helper.result(second, "fast")
    await client.expect("result", request_id="r1", ok=True, node_id="helper", attempts=2)


async def test_submit_timeout_ms_is_the_overall_deadline(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    await client.submitted("r1", timeout_ms=300)
    assign = await node.assigned()
    await node.accept(assign)
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "timeout"
    cancel = await node.expect("job_cancel", job_id=assign["job_id"])
    assert cancel["reason"] == "timeout"
    # The late result is refused; the client hears nothing more.
    await node.result(assign, "late")
    await node.expect("error")
    await client.quiet(0.1)  # bounded: still exactly one result


# --- idempotency ------------------------------------------------------------------------


async def test_resubmit_while_running_gets_the_single_result(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    first_client = await net.client(hub)
    second_client = await net.client(hub)
    accepted = await first_client.submitted("same")
    assign = await node.assigned()
    await node.accept(assign)
    dup = await second_client.submitted("same")
    assert dup["duplicate"] is True and dup["job_id"] == accepted["job_id"]
    assert dup["node_id"] == "n1"
    await node.progress(assign, 1)
    for client in (first_client, second_client):
        await client.expect("progress", job_id=accepted["job_id"], data=1)
    await node.result(assign, "once")
    for client in (first_client, second_client):
        result = await client.expect("result", request_id="same", ok=True, output="once")
        assert result["job_id"] == accepted["job_id"]
        await client.quiet(0.1)  # bounded: one result per submit
    await node.quiet(0.1)  # bounded: the node saw exactly one job_assign
    assert [m["type"] for m in node.received].count("job_assign") == 1


async def test_resubmit_on_the_same_connection(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("same")
    dup = await client.submitted("same")
    assert dup["duplicate"] is True and dup["job_id"] == accepted["job_id"]
    await node.run_one("once")
    # One result per submit: two submits, two results.
    for _ in range(2):
        await client.expect("result", request_id="same", ok=True, output="once")
    await client.quiet(0.1)  # bounded
    assert [m["type"] for m in node.received].count("job_assign") == 1


async def test_resubmit_after_finish_gets_the_stored_result(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("done-once")
    await node.run_one({"text": "fertig"})
    await client.expect("result", request_id="done-once", ok=True)
    later = await net.client(hub)
    dup = await later.submitted("done-once")
    assert dup["duplicate"] is True and dup["job_id"] == accepted["job_id"]
    result = await later.expect("result", request_id="done-once", ok=True, node_id="n1")
    assert result["output"] == {"text": "fertig"} and result["attempts"] == 1
    await node.quiet()  # bounded: no second job_assign for a finished request
    assert [m["type"] for m in node.received].count("job_assign") == 1


# --- cancel --------------------------------------------------------------------------------


async def test_cancel_running_job(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    client = await net.client(hub)
    accepted = await client.submitted("r1")
    assign = await node.assigned()
    await node.accept(assign)
    await client.cancel(accepted["job_id"])
    cancel = await node.expect("job_cancel", job_id=assign["job_id"], attempt=1)
    assert cancel["reason"] == "cancelled"
    result = await client.expect("result", request_id="r1", ok=False)
    assert result["error"]["code"] == "cancelled"
    # The slot is free again and the late result changes nothing.
    await node.result(assign, "late")
    await node.expect("error")
    accepted = await client.submitted("r2")
    await node.run_one()
    await client.expect("result", request_id="r2", ok=True)
    # Cancelling a finished job is refused.
    await client.cancel(accepted["job_id"])
    error = await client.expect("error", job_id=accepted["job_id"])
    assert error["code"] == "job_finished"


async def test_cancel_someone_elses_job_or_an_unknown_one(hub: Hub, net: Net) -> None:
    node = await net.node(hub, "n1")
    owner = await net.client(hub)
    stranger = await net.client(hub)
    accepted = await owner.submitted("r1")
    assign = await node.assigned()
    await stranger.cancel(accepted["job_id"])
    error = await stranger.expect("error", code="not_your_job")
    assert error["job_id"] == accepted["job_id"]
    await stranger.cancel("no-such-job")
    await stranger.expect("error", code="unknown_job")
    # Nothing changed: the job runs to completion for its owner.
    await node.accept(assign)
    await node.result(assign, "mine")
    await owner.expect("result", request_id="r1", ok=True, output="mine")
    assert "job_cancel" not in [m["type"] for m in node.received]

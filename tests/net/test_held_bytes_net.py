"""`max_held_payload_bytes` over real sockets: the payloads of unfinished jobs (and what
slow peers hold) count against one budget for the whole hub, with a fair share."""

from __future__ import annotations

import json

from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, http_get

PAYLOAD = {"blob": "x" * 50_000}  # a ~50 KB frame


async def held(hub_url: str) -> dict[str, int]:
    status, _, body = await http_get(hub_url, "/v1/stats")
    assert status == 200
    return json.loads(body)["held_bytes"]  # type: ignore[no-any-return]


async def test_payloads_held_by_unfinished_jobs_are_bounded_and_freed(
    make_hub: MakeHub, net: Net
) -> None:
    """A node that accepts and never answers: the jobs' payloads stay held, and a submit
    that would pass the session's part of the budget (half of it, alone: room is kept
    for the next party) is refused `overloaded`; results free them."""
    hub = await make_hub(max_held_payload_bytes=440_000)
    node = await net.node(hub, "n1", caps(max_concurrency=100))
    client = await net.client(hub)
    assigns = []
    for i in range(4):
        await client.submitted(f"r{i}", payload=PAYLOAD)
        assigns.append(await node.assigned())
    stats = await held(hub.http_url)
    assert 200_000 <= stats["jobs"] <= 220_000 and stats["limit"] == 440_000
    await client.submit("r4", payload=PAYLOAD)
    refused = await client.expect("rejected", request_id="r4", code="overloaded")
    assert "max_held_payload_bytes" in refused["message"]
    for assign in assigns:
        await node.accept(assign)
        await node.result(assign, "ok")
    for _ in assigns:
        await client.expect("result", ok=True)
    assert (await held(hub.http_url))["jobs"] == 0
    await client.submitted("r5", payload=PAYLOAD)  # free again


async def test_past_half_the_budget_a_session_holds_only_its_share(
    make_hub: MakeHub, net: Net
) -> None:
    """Without auth each client session is a party: one that filled half the budget
    cannot take the rest from another that arrives."""
    hub = await make_hub(max_held_payload_bytes=420_000)
    node = await net.node(hub, "n1", caps(max_concurrency=100))
    greedy, modest = await net.client(hub), await net.client(hub)
    taken = 0
    while True:
        await greedy.submit(f"g{taken}", payload=PAYLOAD)
        answer = await greedy.recv()
        if answer["type"] == "rejected":
            break
        await node.assigned()
        taken += 1
    # Alone, the greedy session stops at half the budget...
    assert answer["code"] == "overloaded" and taken == 4, (taken, answer)
    assert "share" in answer["message"]
    # ...so the other one still gets in.
    await modest.submitted("m0", payload=PAYLOAD)
    await modest.submitted("m1", payload=PAYLOAD)

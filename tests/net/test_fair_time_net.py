"""Expensive frames pay for themselves, over real sockets: a client whose submits each
take milliseconds of hub time waits before its next frame is read while another client
is active (`nodehub_peer_pause_seconds_total`), and never when it is alone; the other
client's jobs go on, and the flooder's submits are all answered."""

from __future__ import annotations

from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps

# A payload of 300,000 small values (~600 KB of JSON): its decode and ingress checks take
# milliseconds, many turns of hub time.
HEAVY = {"values": [0] * 300_000}
TRIES = 20


async def test_a_heavy_sender_waits_while_others_are_active(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub()
    node = await net.node(hub, "n1", caps(max_concurrency=100))
    heavy, bystander = await net.client(hub), await net.client(hub)
    paused = hub.metrics.peer_pauses
    sent = 0
    while paused.get("client") == 0 and sent < TRIES:
        # The bystander's frame, then the heavy one right after: the hub is contended.
        await bystander.submit(f"b{sent}")
        await heavy.submit(f"h{sent}", payload=HEAVY)
        for who in (bystander, heavy):
            await who.expect("accepted")
            assign = await node.assigned()
            await node.accept(assign)
            await node.result(assign, "ok")
            await who.expect("result", ok=True)
        sent += 1
    assert paused.get("client") > 0, f"no pause after {sent} heavy submits"
    assert paused.get("node") == 0  # the node's frames were all cheap


async def test_alone_a_heavy_sender_never_waits(make_hub: MakeHub, net: Net) -> None:
    hub = await make_hub()
    heavy = await net.client(hub)
    for i in range(5):
        await heavy.submit(f"h{i}", payload=HEAVY)
    for _ in range(5):
        await heavy.expect("rejected", code="no_node")
    assert hub.metrics.peer_pauses.get("client") == 0

"""Paged, filtered `/v1/nodes` and `/v1/stats` on a real hub (protocol-v1.1 "Admin surface")."""

from __future__ import annotations

import json
from typing import Any

from hub.app.hub import Hub
from hub.net import http as http_api
from tests.conftest import Net
from tests.support.hubtest import caps, http_get


async def _get(hub: Hub, path: str) -> tuple[int, dict[str, str], Any]:
    status, headers, body = await http_get(hub.http_url, path)
    return status, headers, json.loads(body)


async def _walk(hub: Hub, query: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = ""
    for _ in range(100):
        status, headers, page = await _get(hub, f"/v1/nodes?{query}&after={after}")
        assert status == 200
        out.extend(page)
        if "x-next-after" not in headers:
            return out
        after = headers["x-next-after"]
        assert not page or after >= page[-1]["node_id"]
    raise AssertionError("paging did not end")


async def test_nodes_pages_in_node_id_order_with_filters(hub: Hub, net: Net) -> None:
    ids = [f"gpu-{i:02d}" for i in range(23)]
    nodes = {}
    for i, node_id in enumerate(reversed(ids)):  # joined out of order
        nodes[node_id] = await net.node(hub, node_id, caps(pool=i % 3, max_concurrency=2))
    for node_id in ids[::5]:
        await nodes[node_id].send({"type": "drain"})
    client = await net.client(hub)
    for node_id in ids[::5]:  # a barrier: the drains were handled before these answers
        await client.submit(f"r-{node_id}", preferred_node_id=node_id)
        accepted = await client.expect("accepted")
        assert accepted["node_id"] != node_id
    # Everything, 4 a page, in node_id order.
    everything = await _walk(hub, "limit=4")
    assert [n["node_id"] for n in everything] == ids
    status, headers, first = await _get(hub, "/v1/nodes?limit=4")
    assert status == 200
    assert [n["node_id"] for n in first] == ids[:4] and headers["x-next-after"] == ids[3]
    # The last page has no continuation.
    status, headers, last = await _get(hub, f"/v1/nodes?limit=4&after={ids[19]}")
    assert status == 200
    assert [n["node_id"] for n in last] == ids[20:] and "x-next-after" not in headers
    # Filters.
    pool1 = await _walk(hub, "limit=3&pool=1")
    assert {n["node_id"] for n in pool1} == {
        n for i, n in enumerate(reversed(ids)) if i % 3 == 1}
    assert all(n["pool"] == 1 for n in pool1)
    draining = await _walk(hub, "limit=2&status=draining")
    assert [n["node_id"] for n in draining] == ids[::5]
    both = await _walk(hub, "status=online&pool=0")
    assert all(n["pool"] == 0 and n["status"] == "online" for n in both)
    assert len(both) == sum(
        1 for i, n in enumerate(reversed(ids)) if i % 3 == 0 and n not in ids[::5])


async def test_nodes_scan_limit_bounds_a_page(hub: Hub, net: Net, monkeypatch: Any) -> None:
    """A filter that matches little returns short pages with a continuation, never a
    page that looks at more than SCAN_LIMIT nodes; following them finds everything."""
    monkeypatch.setattr(http_api, "SCAN_LIMIT", 3)
    for i in range(10):
        await net.node(hub, f"n{i}", caps(pool=7 if i in (2, 8) else 0))
    status, headers, page = await _get(hub, "/v1/nodes?pool=7")
    assert status == 200 and [n["node_id"] for n in page] == ["n2"]
    assert headers["x-next-after"] == "n2"
    status, headers, page = await _get(hub, "/v1/nodes?pool=7&after=n2")
    assert status == 200 and page == [] and headers["x-next-after"] == "n5"
    found = await _walk(hub, "pool=7")
    assert [n["node_id"] for n in found] == ["n2", "n8"]


async def test_nodes_bad_query_is_400(hub: Hub) -> None:
    for query in ("limit=0", "limit=-3", "limit=x", "pool=-1", "status=sleeping",
                  "limit=1&limit=2"):
        status, _, body = await _get(hub, f"/v1/nodes?{query}")
        assert status == 400, query
        assert body["error"] == "invalid_field" and body["path"] in query


async def test_nodes_limit_is_clamped(hub: Hub, net: Net, monkeypatch: Any) -> None:
    monkeypatch.setattr(http_api, "MAX_PAGE", 2)
    for i in range(3):
        await net.node(hub, f"n{i}")
    for query in ("limit=1000", ""):
        status, headers, page = await _get(hub, f"/v1/nodes?{query}")
        assert status == 200 and [n["node_id"] for n in page] == ["n0", "n1"]
        assert headers["x-next-after"] == "n1"


async def test_stats(hub: Hub, net: Net) -> None:
    status, _, empty = await _get(hub, "/v1/stats")
    assert status == 200
    assert empty == {
        "nodes": {"online": 0, "draining": 0, "offline": 0},
        "slots": {"total": 0, "busy": 0},
        "jobs": {"active": 0, "queued": 0},
        "jobs_per_s": 0.0,
        "live": {"sessions": 0, "rooms": 0},
        "held_bytes": {"jobs": 0, "outbound": 0, "limit": 1_073_741_824, "parties": 0},
        "pools": {},
    }
    a = await net.node(hub, "a", caps(pool=0, max_concurrency=3))
    b = await net.node(hub, "b", caps(pool=2, max_concurrency=2))
    await b.send({"type": "drain"})
    client = await net.client(hub)
    await client.submitted("r1", preferred_node_id="a")
    await client.submitted("r2", preferred_node_id="a")
    assign = await a.assigned()
    await a.accept(assign)
    await a.result(assign, "out")
    await client.expect("result", ok=True)
    _, _, stats = await _get(hub, "/v1/stats")
    assert stats["nodes"] == {"online": 1, "draining": 1, "offline": 0}
    assert stats["slots"] == {"total": 5, "busy": 1}
    assert stats["jobs"] == {"active": 1, "queued": 0}
    assert stats["jobs_per_s"] > 0
    assert stats["pools"] == {
        "0": {"nodes": 1, "status": {"online": 1}, "slots": {"total": 3, "busy": 1}},
        "2": {"nodes": 1, "status": {"draining": 1}, "slots": {"total": 2, "busy": 0}},
    }


def test_caps_view_equals_the_wire_form() -> None:
    import random

    import msgspec

    from hub.core.capabilities import NodeCapabilities

    rng = random.Random(2)
    langs = ["en", "de", "fr"]
    for _ in range(200):
        c = NodeCapabilities(
            language_pairs=frozenset(
                (a, b) for a in langs for b in langs if a != b and rng.random() < 0.3),
            asr_languages=frozenset(x for x in langs if rng.random() < 0.5),
            tts_languages=frozenset(x for x in langs if rng.random() < 0.5),
            features=frozenset(f for f in ("emo", "spk") if rng.random() < 0.5),
            max_concurrency=rng.randint(1, 9), pool=rng.randrange(3),
            labels=(("gpu", "l4"),) if rng.random() < 0.5 else (),
        )
        view = http_api.caps_view(c)
        assert view == msgspec.to_builtins(c.to_wire())
        assert msgspec.json.encode(view) == msgspec.json.encode(c.to_wire())

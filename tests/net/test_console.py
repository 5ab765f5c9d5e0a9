"""The console over HTTP on a real hub: its files at `/ui` (open even with
`auth = "jwt"`, while the data stays behind the admin token), `/v1/stats?include=` and
`/v1/nodes?hub_id=`. The page itself runs in a real browser in test_console_browser.py."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from hub.app.hub import Hub
from hub.net import console
from tests.conftest import MakeHub, Net
from tests.support.auth import SECRET, token
from tests.support.hubtest import caps, http_get, wait_until_async
from tests.support.redis_server import RedisServer


async def _json(hub: Hub, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = await http_get(hub.http_url, path, **kwargs)
    return status, json.loads(body)


async def test_the_page_and_its_files(hub: Hub) -> None:
    status, headers, page = await http_get(hub.http_url, "/ui")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert (await http_get(hub.http_url, "/ui/"))[2] == page
    text = page.decode()
    # No inline script and nothing from another origin: the page works offline.
    assert "<script>" not in text and "http://" not in text.replace(
        "http://www.w3.org", "") and "https://" not in text
    # Every file the page names carries its content hash, and is then cacheable for good.
    referenced = re.findall(r'"/ui/([\w.]+)\?v=(\w+)"', text)
    assert {name for name, _ in referenced} == {"console.js", "console.css", "favicon.svg"}
    for name, version in referenced:
        status, headers, body = await http_get(hub.http_url, f"/ui/{name}?v={version}")
        assert status == 200 and headers["content-type"] == console.ASSETS[name], name
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" in headers
        files = console.load_files()
        assert body == files[name]
        # Without (or with a stale) version: served, but revalidated every time.
        for query in ("", "?v=stale"):
            _, headers, _ = await http_get(hub.http_url, f"/ui/{name}{query}")
            assert headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", [
    "/ui/nope.js", "/ui/../v1/stats", "/ui/%2e%2e/v1/stats", "/ui/..%2fv1%2fstats",
    "/ui//etc/passwd", "/ui/index.html/../../v1/nodes",
])
async def test_only_the_console_files_are_served(hub: Hub, net: Net, path: str) -> None:
    await net.node(hub, "secret-node")
    status, headers, body = await http_get(hub.http_url, path)
    assert status == 404 and json.loads(body) == {"error": "not_found", "path": path}
    assert b"secret-node" not in body and "content-security-policy" in headers


async def test_with_jwt_the_page_is_open_and_the_data_is_not(make_hub: MakeHub) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    for path in ("/ui", "/ui/", "/ui/console.js", "/ui/console.css", "/ui/favicon.svg"):
        status, _, _ = await http_get(hub.http_url, path)
        assert status == 200, path
    # A path under /ui that is not a file: open too, and it holds nothing.
    status, body = await _json(hub, "/ui/../v1/nodes")
    assert status == 404 and body["error"] == "not_found"
    # The page's data: the admin token, as before.
    for path in ("/v1/stats?include=pairs,hubs,recent", "/v1/nodes?limit=5", "/v1/jobs/x"):
        status, body = await _json(hub, path)
        assert status == 401 and body["error"] == "unauthorized", path
        status, body = await _json(
            hub, path, headers={"Authorization": f"Bearer {token('client')}"})
        assert status in (403, 404), path  # a client may read its own jobs only
    admin = {"Authorization": f"Bearer {token('admin')}"}
    status, stats = await _json(hub, "/v1/stats?include=pairs,hubs,recent", headers=admin)
    assert status == 200 and stats["hubs"][0]["hub_id"] == hub.config.hub_id


async def test_stats_include_pairs_hubs_and_recent(hub: Hub, net: Net) -> None:
    a = await net.node(hub, "a", caps([("en", "de"), ("en", "fr")], max_concurrency=4))
    b = await net.node(hub, "b", caps([("en", "de")], max_concurrency=2, pool=3))
    status, stats = await _json(hub, "/v1/stats")
    assert status == 200
    assert set(stats) == {
        "nodes", "slots", "jobs", "jobs_per_s", "live", "held_bytes", "pools"
    }
    assert stats["live"] == {"sessions": 0, "rooms": 0}
    client = await net.client(hub)
    await client.submitted("r1", "en", "fr")  # only a serves en->fr
    assign = await a.assigned()
    await a.accept(assign)
    status, stats = await _json(hub, "/v1/stats?include=pairs&include=hubs,recent")
    assert status == 200
    assert stats["pairs"] == {"total": 2, "top": [
        {"src": "en", "tgt": "de", "nodes": 2, "slots": {"total": 6, "busy": 1}},
        {"src": "en", "tgt": "fr", "nodes": 1, "slots": {"total": 4, "busy": 1}},
    ]}
    assert stats["hubs"] == [{
        "hub_id": hub.config.hub_id, "self": True, "live": True, "nodes": 2,
        "status": {"online": 2}, "slots": {"total": 6, "busy": 1},
    }]
    recent = stats["recent"]
    assert recent["finished_total"] == 0 and recent["p50_ms"] is None
    assert stats["utterances"]["finished_total"] == 0
    assert len(recent["series"]["ago_s"]) == 149 and recent["window_s"] == 300
    # An ok job, a node's own failure, a rejection: each counted where it belongs.
    await a.result(assign, "ok")
    await client.expect("result", ok=True)
    await client.submitted("r2", "en", "de", preferred_node_id="b")
    assign = await b.assigned()
    await b.accept(assign)
    await b.result(assign, ok=False, error={"code": "model_oom", "message": "no memory"})
    await client.expect("result", ok=False)
    await client.submit("r3", "xx", "yy")
    await client.expect("rejected", code="no_node")
    status, stats = await _json(hub, "/v1/stats?include=recent")
    recent = stats["recent"]
    assert set(stats) == {
        "nodes", "slots", "jobs", "jobs_per_s", "live", "held_bytes", "pools", "recent",
        "utterances",
    }
    assert recent["finished_total"] == 2 and recent["finished"] == 2 and recent["ok"] == 1
    assert recent["p50_ms"] is not None and recent["p50_ms"] > 0
    assert recent["failed"] == {"model_oom": 1} and recent["rejected"] == {"no_node": 1}


async def test_a_bad_include_is_400(hub: Hub) -> None:
    for query in ("include=nodes", "include=pairs,everything"):
        status, body = await _json(hub, f"/v1/stats?{query}")
        assert status == 400 and body["error"] == "invalid_field" and body["path"] == "include"


async def test_nodes_filter_by_hub(hub: Hub, net: Net) -> None:
    for i in range(3):
        await net.node(hub, f"n{i}")
    status, page = await _json(hub, f"/v1/nodes?hub_id={hub.config.hub_id}")
    assert status == 200 and [n["node_id"] for n in page] == ["n0", "n1", "n2"]
    status, page = await _json(hub, "/v1/nodes?hub_id=another")
    assert status == 200 and page == []
    status, body = await _json(hub, "/v1/nodes?hub_id=a&hub_id=b")
    assert status == 400 and body["path"] == "hub_id"


async def test_cross_instance_lists_the_hubs_and_their_nodes(
    redis_server: RedisServer, make_hub: MakeHub, net: Net
) -> None:
    prefix = f"console-{uuid.uuid4().hex}"
    shared = {"deployment_mode": "cross_instance", "redis_url": redis_server.url,
              "redis_prefix": prefix, "load_publish_interval_ms": 10}
    a = await make_hub(hub_id="hub-a", **shared)
    b = await make_hub(hub_id="hub-b", **shared)
    await net.node(a, "on-a", caps(max_concurrency=2))
    await net.node(b, "on-b1", caps(max_concurrency=3))
    await net.node(b, "on-b2", caps(max_concurrency=3))

    async def both_listed() -> bool:
        _, stats = await _json(a, "/v1/stats?include=hubs")
        return [(h["hub_id"], h["nodes"]) for h in stats["hubs"]] == [
            ("hub-a", 1), ("hub-b", 2)]

    await wait_until_async(both_listed, what="hub A lists hub B's nodes")
    _, stats = await _json(a, "/v1/stats?include=hubs")
    assert stats["hubs"][0]["self"] and not stats["hubs"][1]["self"]
    assert all(h["live"] for h in stats["hubs"])
    assert stats["hubs"][1]["slots"] == {"total": 6, "busy": 0}
    _, page = await _json(a, "/v1/nodes?hub_id=hub-b")
    assert [n["node_id"] for n in page] == ["on-b1", "on-b2"]


def test_a_hub_without_the_console_files_still_serves() -> None:
    """An install that lost the package data: the console is a 404, the hub still runs."""
    assets = console.ConsoleAssets(files={})
    assert assets.lookup("/ui") is None and assets.lookup("/ui/console.js") is None
    partial = console.ConsoleAssets(files={"index.html": b'<script src="/ui/console.js">'})
    page = partial.lookup("/ui")
    assert page is not None and page.body == b'<script src="/ui/console.js">'

"""The console in a real headless Chromium: a hub, a simulated fleet and a client
load; the page at `/ui` shows the right node count, its jobs counter moves, a job id
opens the job's record, the admin token is asked for and kept for the tab only, a large
fleet is shown a page at a time, and (with the admin API) a node drains from the page.

Chromium is Debian's package, driven over its DevTools protocol
(tests/support/browser.py); without it these tests skip. Set
`NODEHUB_CONSOLE_SCREENSHOT=docs/img/console.png` to refresh the README's screenshot
from the first test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent_sim.behaviour import get_profile
from agent_sim.client import HubClient
from agent_sim.fleet import Fleet
from hub.app.hub import Hub
from hub.core.capabilities import NodeCapabilities
from hub.core.messages import Result
from tests.conftest import MakeHub, Net
from tests.support.auth import SECRET, token
from tests.support.browser import Browser, Chromium, Page, find_chromium
from tests.support.hubtest import caps, wait_until

pytestmark = pytest.mark.slow

DASH = "\u2013"
"""The page's ranges: 1\u2013100."""
NUM = "(s => Number(document.querySelector(s).textContent.replace(/,/g, '')))"
"""A JavaScript function: the number shown in an element."""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium: install Debian's chromium package (scripts/test.sh does when "
            "run as root), or point NODEHUB_CHROMIUM at a Chromium binary"
        )
    browser = Chromium(binary)
    try:
        browser.start()
    except RuntimeError as exc:
        browser.close()
        pytest.fail(f"chromium is installed but does not start: {exc}")
    yield browser
    browser.close()


@contextlib.asynccontextmanager
async def open_page(chromium: Chromium, url: str, *, height: int = 1000) -> AsyncIterator[Page]:
    async with Browser(chromium.ws_url) as browser:
        page = await browser.new_page(height=height)
        await page.goto(url)
        yield page
        assert page.problems == [], page.problems


class Load:
    """A client keeping `in_flight` jobs the fleet serves in flight, and a few it cannot."""

    def __init__(self, client: HubClient, fleet: Fleet, in_flight: int = 6) -> None:
        self.client = client
        self.fleet = fleet
        self.in_flight = in_flight
        self.ok: list[str] = []
        self._rng = random.Random(7)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.in_flight)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The flag as well as the cancel: Python 3.11's `asyncio.wait_for` swallows a
        # cancellation that lands in the loop turn its future completes in, and a worker
        # that missed it would go on submitting forever.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)
                  and not isinstance(o, asyncio.CancelledError)]
        if errors:
            raise errors[0]

    async def _worker(self) -> None:
        while not self._stopping:
            if self._rng.random() < 0.03:
                src, tgt = "xx", "yy"  # nobody serves it: rejected no_node
            else:
                pair = self._rng.choice(self._rng.choice(self.fleet.agents).capabilities
                                        .language_pairs)
                src, tgt = pair.src, pair.tgt
            handle = await self.client.submit(src, tgt, payload={"text": "hello"})
            outcome = await asyncio.wait_for(handle.result, 30)
            if isinstance(outcome, Result) and outcome.ok:
                self.ok.append(outcome.job_id)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_console_shows_the_fleet_and_its_jobs_live(
    make_hub: MakeHub, chromium: Chromium, tmp_path: Path
) -> None:
    hub = await make_hub(hub_id="hub-eu-1", heartbeat_interval_ms=1_000)
    profile = get_profile("default", time_scale=0.01)
    async with (
        Fleet(hub_urls=[hub.url], nodes=40, seed=3, profile=profile, prefix="gpu") as fleet,
    ):
        await fleet.wait_registered(timeout_s=30)
        async with (
            HubClient(hub.url) as client,
            Load(client, fleet) as load,
            open_page(chromium, hub.http_url + "/ui", height=1500) as page,
        ):
            # The right node count, and every node in the list, in node id order.
            await page.wait_for("document.getElementById('nodes-total').textContent === '40'")
            await page.wait_for("document.querySelectorAll('#node-list .node').length === 40")
            shown = await page.evaluate(
                "[...document.querySelectorAll('#node-list .node')].map(e => e.dataset.nodeId)")
            assert shown == sorted(agent.node_id for agent in fleet.agents)
            assert await page.text("#hub-id") == "hub-eu-1"
            # The jobs counter moves, and never ahead of the hub's own count.
            first = await page.wait_for(f"{NUM}('#jobs-finished') > 0 && {NUM}('#jobs-finished')")
            later = await page.wait_for(
                f"{NUM}('#jobs-finished') >= {first + 25} && {NUM}('#jobs-finished')")
            assert first + 25 <= later <= hub.metrics.recent.finished_total
            # Pools and language pairs as the hub counts them.
            pools = await page.evaluate("document.querySelectorAll('#pools tbody tr').length")
            assert pools == len(hub.fleet.stats.pools)
            await page.wait_for("document.querySelectorAll('#pairs tbody tr').length > 0")
            # The rejected impossible jobs show up among the failures.
            await page.wait_for(
                "[...document.querySelectorAll('#failures tbody tr')]"
                ".some(r => r.textContent.includes('no_node'))", timeout_s=30)
            # A job id opens the job's record.
            await wait_until(lambda: len(load.ok) > 0, what="an ok job")
            job_id = load.ok[-1]
            await page.type_into("#job-id", job_id)
            await page.submit("#job-form")
            await page.wait_for("document.getElementById('job-dialog').open")
            await page.wait_for(
                "document.getElementById('j-facts').textContent.includes('done')")
            assert job_id in await page.text("#j-id")
            assert '"ok": true' in await page.text("#j-result")
            await page.click("#j-close")
            # A node's capabilities.
            node = fleet.agents[5]
            await page.click(f'.node[data-node-id="{node.node_id}"]')
            await page.wait_for(
                f"document.getElementById('d-node-id').textContent === '{node.node_id}'"
                " && document.getElementById('d-pairs').textContent !== ''")
            pairs = await page.text("#d-pairs")
            for pair in node.capabilities.language_pairs:
                assert f"{pair.src}→{pair.tgt}" in pairs
            # Let the charts fill a little for the screenshot.
            await page.wait_for(f"{NUM}('#jobs-finished') >= {later + 100}", timeout_s=30)
            shot = await page.screenshot(tmp_path / "console.png")
            assert png_size(shot) == (1440, 1500) and len(shot) > 50_000
            target = os.environ.get("NODEHUB_CONSOLE_SCREENSHOT")
            if target:
                await asyncio.to_thread(Path(target).write_bytes, shot)


async def test_the_console_asks_for_an_admin_token_and_keeps_it_for_the_tab(
    make_hub: MakeHub, net: Net, chromium: Chromium
) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    for i in range(3):
        await net.node(hub, f"n{i}", token=token("node", sub=f"n{i}"))
    admin = token("admin", sub="operator")
    async with open_page(chromium, hub.http_url + "/ui") as page:
        await page.wait_for("!document.getElementById('login').hidden")
        assert await page.text("#nodes-total") == DASH  # nothing read without a token
        # A client token is refused (403): the page says so and asks again.
        await page.type_into("#token-input", token("client"))
        await page.submit("#token-form")
        await page.wait_for(
            "document.getElementById('login-error').textContent.includes('role admin')")
        await page.type_into("#token-input", admin)
        await page.submit("#token-form")
        await page.wait_for("document.getElementById('nodes-total').textContent === '3'")
        assert await page.evaluate("document.getElementById('login').hidden")
        # Kept for this tab only: sessionStorage, nothing in localStorage or cookies.
        assert await page.evaluate("sessionStorage.getItem('nodehub.token')") == admin
        assert await page.evaluate("localStorage.length + document.cookie.length") == 0
        # And sent as a bearer token on the data requests (never in a URL).
        data = [r for r in page.requests if "/v1/" in r["url"]]
        assert data and all(admin not in r["url"] for r in page.requests)
        assert any(r["headers"].get("Authorization") == f"Bearer {admin}" for r in data)
        # Forgetting it locks the page again.
        await page.click("#forget-token")
        await page.wait_for("!document.getElementById('login').hidden")
        assert await page.evaluate("sessionStorage.getItem('nodehub.token')") is None
    # Another tab has its own session storage: it asks again...
    async with open_page(chromium, hub.http_url + "/ui") as page:
        await page.wait_for("!document.getElementById('login').hidden")
    # ...unless opened with the token in the fragment (never sent to the server), which
    # the page takes and removes from the address bar.
    async with open_page(chromium, f"{hub.http_url}/ui#token={admin}") as page:
        await page.wait_for("document.getElementById('nodes-total').textContent === '3'")
        assert await page.evaluate("location.hash") == ""
        assert all(admin not in r["url"] for r in page.requests)


async def test_a_large_fleet_is_shown_a_page_at_a_time(hub: Hub, chromium: Chromium) -> None:
    """10,000 nodes: the page holds one page of them (100), and pages, filters and jumps.

    The nodes are put straight into the hub's fleet view (as another hub's replica would):
    what is under test is the console over real HTTP, not 10,000 registrations."""
    rng = random.Random(3)
    for i in range(10_000):
        hub.fleet.join(
            f"node-{i:05d}",
            NodeCapabilities(language_pairs=frozenset({("en", "de")}), max_concurrency=4,
                             pool=i % 4),
            hub_id=hub.config.hub_id, running=rng.randint(0, 4),
        )
    for i in range(0, 10_000, 500):
        hub.fleet.drain(f"node-{i:05d}")
    rows = "[...document.querySelectorAll('#node-list .node')]"
    async with open_page(chromium, hub.http_url + "/ui") as page:
        await page.wait_for("document.getElementById('nodes-total').textContent === '10,000'")
        await page.wait_for(f"{rows}.length === 100")
        assert await page.text("#nodes-range") == f"1{DASH}100 of 10,000"
        assert await page.evaluate(f"{rows}[0].dataset.nodeId") == "node-00000"
        # Next, next, prev.
        await page.click("#next-page")
        await page.wait_for(f"{rows}[0].dataset.nodeId === 'node-00100'")
        assert await page.text("#nodes-range") == f"101{DASH}200 of 10,000"
        await page.click("#next-page")
        await page.wait_for(f"{rows}[0].dataset.nodeId === 'node-00200'")
        await page.click("#prev-page")
        await page.wait_for(f"{rows}[0].dataset.nodeId === 'node-00100'")
        assert await page.evaluate("document.querySelectorAll('.node').length") == 100
        # A pool and a status: only those, counted from /v1/stats.
        await page.evaluate(
            "(() => { const s = document.getElementById('f-pool'); s.value = '2';"
            " s.dispatchEvent(new Event('change')); })()")
        await page.wait_for(f"{rows}.length === 100 && {rows}[0].dataset.nodeId === 'node-00002'")
        assert await page.text("#nodes-range") == f"1{DASH}100 of 2,500"
        await page.evaluate(
            "(() => { const s = document.getElementById('f-status'); s.value = 'draining';"
            " s.dispatchEvent(new Event('change')); })()")
        # Draining nodes of pool 2: none (every 500th node is in pool 0).
        await page.wait_for("!document.getElementById('nodes-none').hidden")
        await page.evaluate(
            "(() => { const s = document.getElementById('f-pool'); s.value = '';"
            " s.dispatchEvent(new Event('change')); })()")
        await page.wait_for(f"{rows}.length === 20")
        assert await page.text("#nodes-range") == f"1{DASH}20 of 20"
        drained = await page.evaluate(f"{rows}.map(e => e.dataset.nodeId)")
        assert drained == [f"node-{i:05d}" for i in range(0, 10_000, 500)]
        # Jump to a node id.
        await page.evaluate(
            "(() => { const s = document.getElementById('f-status'); s.value = '';"
            " s.dispatchEvent(new Event('change')); })()")
        await page.type_into("#f-from", "node-07777")
        await page.submit("#filters")
        await page.wait_for(f"{rows}[0] && {rows}[0].dataset.nodeId === 'node-07777'")
        assert await page.evaluate(f"{rows}.length") == 100


async def test_draining_a_node_from_the_console(
    hub: Hub, net: Net, chromium: Chromium
) -> None:
    for i in range(3):
        await net.node(hub, f"n{i}", caps(max_concurrency=2))
    async with open_page(chromium, hub.http_url + "/ui") as page:
        await page.wait_for("document.querySelectorAll('#node-list .node').length === 3")
        await page.click('.node[data-node-id="n1"]')
        await page.wait_for("document.getElementById('d-status').textContent === 'online'")
        await page.click("#drain-btn")
        await wait_until(
            lambda: (state := hub.fleet.snapshot.get("n1")) is not None
            and state.status == "draining", what="n1 draining at the hub")
        await page.wait_for("document.getElementById('d-status').textContent === 'draining'")
        await page.wait_for(
            "document.querySelector('.node[data-node-id=\"n1\"] .dot')"
            ".classList.contains('draining')")
        assert hub.fleet.snapshot.get("n0").status == "online"  # type: ignore[union-attr]
        await page.click("#undrain-btn")
        await wait_until(
            lambda: (state := hub.fleet.snapshot.get("n1")) is not None
            and state.status == "online", what="n1 online again")
        await page.wait_for("document.getElementById('d-status').textContent === 'online'")


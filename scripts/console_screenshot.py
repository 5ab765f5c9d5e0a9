"""Make docs/img/console.png: the console of a busy two-hub deployment.

Two hubs in cross-instance mode on a throwaway redis-server, 160 simulated nodes
(the "faulty" profile: rejects, crashes, reconnects), a client load on both hubs
for `--seconds` (the charts show the last 5 minutes), then headless Chromium opens
the first hub's console, selects a node and takes the screenshot. Needs
redis-server and chromium (see scripts/test.sh).

    .venv/bin/python scripts/console_screenshot.py [--seconds 200] [--out docs/img/console.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_sim.behaviour import get_profile  # noqa: E402
from agent_sim.client import HubClient  # noqa: E402
from agent_sim.fleet import Fleet  # noqa: E402
from hub.app.hub import Hub  # noqa: E402
from hub.core.config import HubConfig  # noqa: E402
from tests.support.browser import Browser, Chromium, find_chromium  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402


async def load(clients: list[HubClient], fleets: list[Fleet], stop: asyncio.Event) -> None:
    rng = random.Random(1)
    agents = [agent for fleet in fleets for agent in fleet.agents]

    async def worker(i: int) -> None:
        client = clients[i % len(clients)]
        while not stop.is_set():
            if rng.random() < 0.02:
                src, tgt = "xx", "yy"  # nobody serves it: rejected no_node
            else:
                pair = rng.choice(rng.choice(agents).capabilities.language_pairs)
                src, tgt = pair.src, pair.tgt
            handle = await client.submit(src, tgt, payload={"text": "hello"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.result, 20)
            await asyncio.sleep(0.004 * (1 + i % 4))

    await asyncio.gather(*(worker(i) for i in range(24)))


async def main(seconds: float, out: Path) -> None:
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no chromium (Debian: apt-get install chromium)")
    redis = RedisServer()
    redis.start()
    chromium = Chromium(binary)
    chromium.start()
    try:
        shared = {
            "port": 0, "gc_pacing": False, "heartbeat_interval_ms": 1000,
            "log_level": "WARNING", "deployment_mode": "cross_instance",
            "redis_url": redis.url, "redis_prefix": f"shot-{uuid.uuid4().hex[:6]}",
            "accept_timeout_ms": 500, "job_timeout_ms": 3000,
        }
        profile = get_profile("faulty", time_scale=0.02)
        async with (
            Hub(HubConfig(hub_id="hub-eu-1", **shared)) as a,
            Hub(HubConfig(hub_id="hub-eu-2", **shared)) as b,
            Fleet(hub_urls=[a.url, b.url], nodes=96, seed=3, profile=profile,
                  prefix="gpu-eu1") as f1,
            Fleet(hub_urls=[b.url, a.url], nodes=64, seed=4, profile=profile,
                  prefix="gpu-eu2") as f2,
        ):
            await f1.wait_registered(timeout_s=60)
            await f2.wait_registered(timeout_s=60)
            async with HubClient(a.url) as ca, HubClient(b.url) as cb:
                stop = asyncio.Event()
                task = asyncio.create_task(load([ca, cb], [f1, f2], stop))
                await asyncio.sleep(seconds)
                async with Browser(chromium.ws_url) as browser:
                    page = await browser.new_page(width=1440, height=1560)
                    await page.goto(a.http_url + "/ui")
                    await page.wait_for("document.querySelectorAll('.node').length > 0")
                    await page.click('.node[data-node-id="gpu-eu1-00007"]')
                    await page.wait_for("document.getElementById('d-pairs').textContent !== ''")
                    await asyncio.sleep(2)  # a couple of refreshes
                    await page.screenshot(out)
                    if page.problems:
                        print("page problems:", page.problems)
                stop.set()
                await task
        print(f"wrote {out}")
    finally:
        chromium.close()
        redis.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "console.png")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.out))

"""`hub demo` as a newcomer runs it: it prints a link to the live console with an
admin token, and that link shows the demo's fleet (the README's first steps)."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import pytest

from tests.support.hubtest import http_get, wait_until_async

pytestmark = pytest.mark.slow


async def test_the_demo_links_its_console() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.app.cli", "demo", "--nodes", "6", "--seconds", "8",
        "--in-flight", "4", "--no-faults",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        lines = []
        link = None
        while link is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "the demo ended without a console link:\n" + "".join(lines)
            lines.append(line)
            link = re.search(r"console of demo-hub-1: (http://[\d.:]+)/ui#token=(\S+)", line)
        base, admin = link[1], link[2]
        status, _, page = await http_get(base, "/ui")
        assert status == 200 and b"nodehub console" in page
        bearer = {"Authorization": f"Bearer {admin}"}

        async def fleet_up() -> bool:
            _, _, body = await http_get(base, "/v1/stats?include=recent", headers=bearer)
            stats = json.loads(body)
            return stats["nodes"]["online"] == 6 and stats["recent"]["finished_total"] > 0

        await wait_until_async(fleet_up, 30, "the demo's fleet serving, seen with the token")
        status, _, _ = await http_get(base, "/v1/stats")
        assert status == 401  # the data needs the token
        rest = await asyncio.wait_for(proc.stdout.read(), 60)
        assert await proc.wait() == 0, rest.decode()
        assert "summary" in rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _demo(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.app.cli", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def _number(text: str, pattern: str) -> float:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return float(found[1])


async def test_the_live_demo_answers_every_utterance_it_cuts() -> None:
    out = await _demo("--live", "--speakers", "3", "--seconds", "4")
    cut = _number(out, r"utterances cut\s+(\d+)")
    answered = _number(out, r"answered\s+(\d+):")
    assert cut >= 3 and answered == cut and f"ok {int(cut)}" in out
    assert _number(out, r"cut -> result \(ms\) p50 ([\d.]+)") > 0


async def test_the_room_demo_translates_for_every_listener_across_two_hubs() -> None:
    out = await _demo("--room", "--hubs", "2", "--seconds", "4")
    cut = _number(out, r"utterances cut\s+(\d+)")
    # Four speakers in four languages: every utterance reaches the three others.
    assert _number(out, r"room results\s+(\d+) delivered") == 3 * cut
    assert "demo-hub-1" in out and "demo-hub-2" in out

"""A client's live session moves to another hub by itself (real hub processes, a real
redis-server, an agent SDK node): when its hub dies, and when its hub drains."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from typing import Any

import pytest

from agent_sim import HubClient, JobContext, LiveSession, NodeAgent, UtteranceResult
from tests.cross.test_cross_hub import WAIT_S, caps, sees, until

pytestmark = pytest.mark.slow

CHUNK_BYTES = 3200


def chunk(i: int) -> bytes:
    return bytes([i % 251 + 1]) * CHUNK_BYTES


def chunks(first: int, last: int) -> bytes:
    return b"".join(chunk(i) for i in range(first, last + 1))


class Heard:
    """The node's handler: every attempt's audio per utterance index; index 1 waits for
    its gate."""

    def __init__(self) -> None:
        self.audio: dict[int, list[bytes]] = defaultdict(list)
        self.gate = asyncio.Event()

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        utterance = ctx.utterance
        assert utterance is not None
        self.audio[utterance.index].append(utterance.audio)
        if utterance.index == 1:
            await self.gate.wait()
        return {"index": utterance.index, "size": len(utterance.audio)}


async def results_until(session: LiveSession, count: int) -> None:
    """Iterate until the `count`-th result (from the start) was yielded."""

    async def wait() -> None:
        seen = 0
        async for event in session:
            if isinstance(event, UtteranceResult):
                seen = event.index + 1
                if seen >= count:
                    return

    await asyncio.wait_for(wait(), WAIT_S)


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("how", ["kill", "sigterm"])
async def test_a_session_moves_to_the_next_hub_with_its_audio_and_results(
    start_hubs: Any, how: str
) -> None:
    a, b = start_hubs(2)
    heard = Heard()
    async with NodeAgent(node_id="n1", capabilities=caps(), hub_urls=[b.url], handler=heard,
                         reconnect_min_s=0.05, reconnect_max_s=0.3) as node:
        await node.wait_registered(WAIT_S)
        await until(lambda: sees(a, "n1", owner=b), "hub a to see the node")
        async with HubClient([a.url, b.url], reconnect_timeout_s=WAIT_S) as client:
            session = await client.live_session("s1", "en", "zh", pause_ms=0)
            for seq in range(3):
                await session.send_audio(chunk(seq), is_final=seq == 2)
            await results_until(session, 1)
            for seq in range(3, 7):  # utterance 1 (3-4) runs; 5 and 6 stay uncut
                await session.send_audio(chunk(seq), is_final=seq == 4)
            await until(lambda: _true(len(heard.audio[1]) == 1), "utterance 1 to run")
            if how == "kill":
                a.kill()  # its uncut audio (5, 6) is lost with it
            else:
                a.signal(signal.SIGTERM)  # a drain: it cuts 5 and 6 (cut "close")
            heard.gate.set()  # (a drain waits for utterance 1)
            await until(lambda: _true(client.url.startswith(b.url) and session.attached),
                        "the session to reopen on hub b")
            await session.send_audio(chunk(7), is_final=True)
            await session.close()
            await results_until(session, 3 if how == "kill" else 4)
            closed = await asyncio.wait_for(anext(session), WAIT_S)
    # What the client side guarantees: one reopen, on hub b; every result once, in index
    # order; the audio sent after the move reached the node; the session closed normally.
    assert session.resumes == 1 and client.url.startswith(b.url)
    assert session.opened is not None and session.opened.resumed
    indexes = [r.index for r in session.results]
    assert indexes == list(range(len(indexes))) and len(indexes) >= 3
    assert closed.reason == "closed" and closed.utterances == len(indexes)  # type: ignore[union-attr]
    last = len(indexes) - 1
    assert heard.audio[last][-1].endswith(chunk(7)) and session.results[last].ok
    assert heard.audio[0] == [chunks(0, 2)]
    assert set(heard.audio[1]) == {chunks(3, 4)}  # run again or not, the same audio
    # What the hub owes (protocol v1.2, "Resume"): no cut utterance lost, no audio lost.
    if how == "kill":
        # Hub b took the session from the store: utterance 1 was cut, chunks 5 and 6
        # were not, so hub b holds up to 4 and the client resends 5 and 6.
        assert session.opened.last_seq == 4
        assert heard.audio[2] == [chunks(5, 7)]
    else:
        # The draining hub cut 5 and 6 (cut "close") and ran them; 7 went to hub b.
        assert heard.audio[2] == [chunks(5, 6)]
        assert heard.audio[3] == [chunks(7, 7)]
    assert all(r.ok for r in session.results), session.results

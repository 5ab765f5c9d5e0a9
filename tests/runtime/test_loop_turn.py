"""`LoopTurn`: once per event-loop turn, then the turn's end is reported once."""

from __future__ import annotations

import asyncio

from hub.runtime.loop_turn import LoopTurn


async def test_the_first_call_of_each_turn_goes_at_once_and_the_end_is_reported() -> None:
    ends: list[int] = []
    turn = LoopTurn(at_end=lambda: ends.append(1))
    assert turn.first()
    assert not turn.first()
    assert not turn.first()
    assert ends == []  # the turn is still running
    await asyncio.sleep(0)
    assert ends == [1]
    assert turn.first()  # a new turn
    await asyncio.sleep(0)
    assert ends == [1, 1]
    await asyncio.sleep(0)
    assert ends == [1, 1]  # a turn nothing asked about reports nothing

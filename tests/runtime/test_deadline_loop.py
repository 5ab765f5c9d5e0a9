"""`DeadlineLoop` after the event loop stalled: input that arrived during the stall is
handled before the deadlines that came due in it (a real socket pair, a real loop)."""

from __future__ import annotations

import asyncio
import socket
import time

from hub.runtime.deadline_loop import Clock, DeadlineLoop


async def test_input_that_arrived_during_a_stall_is_handled_before_overdue_deadlines() -> None:
    order: list[str] = []
    fired = asyncio.Event()

    async def due(item: str) -> None:
        order.append(item)
        fired.set()

    deadlines: DeadlineLoop[str] = DeadlineLoop(Clock(), due)
    runner = asyncio.create_task(deadlines.run())
    left, right = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=left)
    messages: asyncio.Queue[bytes] = asyncio.Queue()

    async def read() -> None:  # a connection's reader task...
        messages.put_nowait(await reader.readexactly(6))

    async def handle() -> None:  # ...and the session that acts on what it read
        await asyncio.sleep(0)
        order.append((await messages.get()).decode())

    tasks = [asyncio.create_task(read()), asyncio.create_task(handle())]
    try:
        await asyncio.sleep(0)  # both wait on their input
        deadlines.push(Clock().now_ms() + 20, "deadline")
        await asyncio.sleep(0)  # the deadline loop plans its wake-up
        time.sleep(0.3)  # noqa: ASYNC251 (the stall under test: the deadline comes due, the peer writes)
        right.sendall(b"accept")
        await asyncio.wait_for(fired.wait(), 5)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    finally:
        runner.cancel()
        for task in tasks:
            task.cancel()
        right.close()
        writer.close()
    assert order == ["accept", "deadline"], order

"""`Binder`: the idempotency bindings of one loop turn's submits, in one store call.

Every submit binds its `request_id` before anything else is promised. When the
store waits on I/O (Redis), the first binding of an event-loop turn goes out at
once (no added latency for a lone submit) and the others asked for in the same
turn go out together at its end as one `Store.bind_requests` call: one command
for a burst of concurrent submits instead of one each. A store that never waits
(memory) is called directly.
"""

from __future__ import annotations

import asyncio

from hub.runtime.loop_turn import LoopTurn
from hub.store.base import Binding, Store

MAX_BATCH = 512
"""Bindings per store call (a longer burst is split)."""


class Binder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._batch: list[tuple[Binding, asyncio.Future[str | None]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._turn = LoopTurn(at_end=self._flush)

    async def bind(self, binding: Binding) -> str | None:
        """As `Store.bind_request` (None when this call made the binding, else the job
        it was already bound to); may raise `StoreUnavailable`."""
        if not self.store.waits or self._turn.first():
            # The first binding of a loop turn goes at once, in its caller's task.
            return (await self.store.bind_requests([binding]))[0]
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._batch.append((binding, future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        for start in range(0, len(batch), MAX_BATCH):
            # A task of its own: a cancelled submit must not take its batch's
            # other submits down with it.
            task = asyncio.create_task(self._call(batch[start : start + MAX_BATCH]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _call(self, batch: list[tuple[Binding, asyncio.Future[str | None]]]) -> None:
        try:
            bound = await self.store.bind_requests([binding for binding, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), job_id in zip(batch, bound, strict=True):
            if not future.done():
                future.set_result(job_id)

    async def aclose(self) -> None:
        """Wait for the store calls in flight (their submits are waiting on them)."""
        if self._running:
            await asyncio.wait(self._running, timeout=5.0)

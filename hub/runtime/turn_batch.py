"""`TurnBatch`: one loop turn's calls of the same kind in one call of a batch function.

The first call of an event-loop turn goes at once, in its caller's task (a
lone call waits for nothing); the others asked for in the same turn wait
for the turn's end and go together in one call of `call_many` (split into
batches of `max_batch`), each caller getting its own item of the answer.
With `waits=False` (a store that never waits on I/O) every call goes alone
and at once. Used for idempotency bindings (`Binder`) and node claims
(`NodeRegistry`): a burst of concurrent submits, or a reconnect storm's
registrations, costs one command per turn instead of one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from hub.runtime.loop_turn import LoopTurn

In = TypeVar("In")
Out = TypeVar("Out")


class TurnBatch(Generic[In, Out]):
    def __init__(
        self,
        call_many: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        *,
        waits: bool,
        max_batch: int,
    ) -> None:
        self._call_many = call_many
        self._waits = waits
        self._max_batch = max_batch
        self._batch: list[tuple[In, asyncio.Future[Out]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._turn = LoopTurn(at_end=self._flush)

    async def call(self, item: In) -> Out:
        """`call_many([item])[0]`, batched with the turn's other calls; its exceptions
        are raised to every caller of the batch."""
        if not self._waits or self._turn.first():
            return (await self._call_many([item]))[0]
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._batch.append((item, future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        for start in range(0, len(batch), self._max_batch):
            # A task of its own: a cancelled caller must not take its batch's
            # other callers down with it.
            task = asyncio.create_task(self._call(batch[start : start + self._max_batch]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _call(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            answers = await self._call_many([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def aclose(self) -> None:
        """Wait for the calls in flight (their callers are waiting on them)."""
        if self._running:
            await asyncio.wait(self._running, timeout=5.0)

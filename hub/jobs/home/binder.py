"""`Binder`: the idempotency bindings of one loop turn's submits, in one store call.

Every submit binds its `request_id` before anything else is promised. When the
store waits on I/O (Redis), the first binding of an event-loop turn goes out at
once (no added latency for a lone submit) and the others asked for in the same
turn go out together at its end as one `Store.bind_requests` call: one command
for a burst of concurrent submits instead of one each (`TurnBatch`). A store
that never waits (memory) is called directly.
"""

from __future__ import annotations

from hub.runtime.turn_batch import TurnBatch
from hub.store.base import Binding, Store

MAX_BATCH = 512
"""Bindings per store call (a longer burst is split)."""


class Binder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._batch: TurnBatch[Binding, str | None] = TurnBatch(
            store.bind_requests, waits=store.waits, max_batch=MAX_BATCH
        )

    async def bind(self, binding: Binding) -> str | None:
        """As `Store.bind_request` (None when this call made the binding, else the job
        it was already bound to); may raise `StoreUnavailable`."""
        return await self._batch.call(binding)

    async def aclose(self) -> None:
        """Wait for the store calls in flight (their submits are waiting on them)."""
        await self._batch.aclose()

"""`Outbox`: envelopes for other hubs, sent in one store call per event-loop turn.

Everything queued in one turn leaves together (`Store.send_many`), in order;
the turn's first node result leaves at once, with what was queued before it.
A node's accept still queued when its result is queued is dropped: the result
implies it, and the job's home gets one envelope instead of two. An accept
alone waits up to `ACCEPT_HOLD_S` for company (see there). While the
store is unreachable, envelopes wait for the next try, oldest first, up to
`OUTBOX_LIMIT`; past it the oldest are dropped (their attempts time out and
fail over, as for any lost message).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from loguru import logger

from hub.core.envelopes import Envelope, NodeEvent, NodeLost, Refused, encode
from hub.core.errors import StoreUnavailable
from hub.core.messages import JobAccept, JobResult
from hub.runtime.eager import eager_task
from hub.runtime.loop_turn import LoopTurn
from hub.store.base import Store

OUTBOX_LIMIT = 100_000
"""Envelopes kept for retry while the store is unreachable; older ones are dropped."""
RECENT_S = 10.0
"""Attempt outcomes (results, losses, refusals) sent this long ago are kept, to send
again if the store restarts empty (`replay_recent`)."""
RECENT_LIMIT = 20_000
ACCEPT_HOLD_S = 0.002
"""How long a node's accept waits for something else to leave with. The home learns
nothing urgent from it (the owner times the node's accept; the home's accept
deadline is a backstop `hub_timeout_ms` later), while a short job's result often
follows within this time, and then the accept is dropped: otherwise a node that
writes both frames at once, but whose hub reads them in two loop turns, costs
two sends, two inbox reads at the home, and a read's round trip on the result's
way to its client."""


class Outbox:
    def __init__(self, store: Store, *, on_failure: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self._on_failure = on_failure
        """Told when a send fails (the store's health, see `Cluster.store_troubled`)."""
        self.closing = False
        self._queue: list[tuple[int, str, bytes] | None] = []
        """(sequence number, hub, envelope), in the order queued."""
        self._seq = 0
        self._accepts: dict[tuple[str, str, int], int] = {}
        """(hub, job, attempt) -> queue index of a node's accept not sent yet."""
        self._ready = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._turn = LoopTurn()
        self._hold: asyncio.TimerHandle | None = None
        """While accepts alone are queued: when they leave anyway (`ACCEPT_HOLD_S`)."""
        self._recent: deque[tuple[float, str, bytes]] = deque(maxlen=RECENT_LIMIT)
        """(monotonic s, hub, envelope) of the attempt outcomes sent lately."""

    def __len__(self) -> int:
        return sum(entry is not None for entry in self._queue)

    def send(self, hub_id: str, envelope: Envelope) -> None:
        """Queue an envelope for `hub_id`; sent with the others of this loop turn.

        A node's result is what its job's home waits on: the first of a loop turn
        leaves at once, with everything queued before it (an accept of the same
        attempt is dropped: the result implies it)."""
        now = False
        accept = False
        if isinstance(envelope, NodeEvent):
            message = envelope.message
            key = (hub_id, message.job_id, message.attempt)
            if isinstance(message, JobAccept):
                self._accepts[key] = len(self._queue)
                accept = True
            elif isinstance(message, JobResult):
                now = True
                index = self._accepts.pop(key, None)
                if index is not None:  # a result implies its accept: one envelope, not two
                    self._queue[index] = None
        self._seq += 1
        data = encode(envelope)
        self._queue.append((self._seq, hub_id, data))
        if now or isinstance(envelope, NodeLost | Refused):
            self._recent.append((time.monotonic(), hub_id, data))
        if now and not self.closing and self._turn.first():
            # The first result of a loop turn leaves in this step, not a turn later;
            # whatever the rest of the turn queues goes together after it.
            task = eager_task(self._send_now())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        elif not accept:
            self._ready.set()
        elif self._hold is None and not self._ready.is_set():
            self._hold = asyncio.get_running_loop().call_later(ACCEPT_HOLD_S, self._ready.set)

    async def _send_now(self) -> None:
        try:
            await self.flush()
        except StoreUnavailable:
            self._ready.set()  # kept; `run` tries again

    async def flush(self) -> None:
        """Send what is queued; on `StoreUnavailable` keep it for the next try."""
        if self._queue:
            batch = [entry for entry in self._queue if entry is not None]
            self._queue = []
            self._accepts.clear()
            self._ready.clear()  # all of it is on its way: `run` has nothing to do
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            try:
                await self.store.send_many([(hub_id, data) for _, hub_id, data in batch])
                self._trim_recent()
            except StoreUnavailable:
                self._on_failure()
                # Back in order, among whatever was queued (or failed) meanwhile.
                kept = batch + [entry for entry in self._queue if entry is not None]
                kept.sort(key=lambda entry: entry[0])
                self._queue = list(kept[max(0, len(kept) - OUTBOX_LIMIT):])
                self._accepts.clear()  # indexes moved; such accepts are simply sent
                raise

    def _trim_recent(self) -> None:
        """Forget outcomes older than `RECENT_S`, only after a send went through: while
        the store fails, what was sent just before is kept (it may be lost with it)."""
        horizon = time.monotonic() - RECENT_S
        recent = self._recent
        while recent and recent[0][0] < horizon:
            recent.popleft()

    def replay_recent(self) -> int:
        """The store restarted empty: what it held unread is gone. Send again the attempt
        outcomes sent lately (each home fences them: a duplicate changes nothing)."""
        replayed = [(hub_id, data) for _, hub_id, data in self._recent]
        for hub_id, data in replayed:
            self._seq += 1
            self._queue.append((self._seq, hub_id, data))
        if replayed:
            self._ready.set()
        return len(replayed)

    async def wait_sent(self, timeout_s: float = 2.0) -> None:
        """Wait for the sends started at once (results) to be stored or kept."""
        if self._sending:
            await asyncio.wait(self._sending, timeout=timeout_s)

    async def run(self) -> None:
        """Flush whenever something is queued, until `closing`."""
        while not self.closing:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self.flush()
            except StoreUnavailable:
                logger.warning("store unavailable: {} envelopes waiting", len(self))
                await asyncio.sleep(0.1)

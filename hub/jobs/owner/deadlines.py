"""`OwnerDeadlines`: the hub that owns a node times its accept of other hubs' jobs.

A job's home times its attempts (`Attempts`). For an attempt on another hub's
node, though, the home hears the node only through that hub and the store:
its `job_accept` reaches the home after two inboxes and the owner's loop,
each of which may be late under a burst or a stall, and a home that judged
the node by that silence failed a running (even finished) job over to
another node, which ran it a second time. So the owner, which reads the node
directly, enforces `accept_timeout_ms` from the moment it hands the
assignment to the node: an attempt not accepted by then is revoked here (the
node gets `job_cancel`) and its home is told (`NodeLost` with outcome
`accept_timeout`), which fails it over exactly as it does its own nodes'.
The home keeps only a backstop (`accept_timeout_ms + hub_timeout_ms`) for a
`Dispatch` or a report the store lost; a dead owner is excluded within
`hub_timeout_ms` anyway.

An entry lives `accept_timeout_ms` at most (it is not removed when the node
accepts: it then finds nothing to do), so the heap holds about one accept
window's worth of dispatches.
"""

from __future__ import annotations

from hub.core.config import HubConfig
from hub.jobs.owner.owner import NodeOwner
from hub.runtime.deadline_loop import Clock, DeadlineLoop

Watched = tuple[str, str, int]
"""(node_id, job_id, attempt) of an attempt handed to a node for another hub."""


class OwnerDeadlines:
    def __init__(self, *, config: HubConfig, owner: NodeOwner, clock: Clock) -> None:
        self._accept_ms = config.accept_timeout_ms
        self._owner = owner
        self._clock = clock
        self.deadlines: DeadlineLoop[Watched] = DeadlineLoop(clock, self._due)

    def watch(self, node_id: str, job_id: str, attempt: int) -> None:
        """The attempt was just handed to its node (reserved and queued on its link)."""
        self.deadlines.push(self._clock.now_ms() + self._accept_ms, (node_id, job_id, attempt))

    async def _due(self, item: Watched) -> None:
        await self._owner.accept_overdue(*item)

    async def run(self) -> None:
        """Fire the deadlines; runs until cancelled."""
        await self.deadlines.run()

"""`QueuePump`: hands slots that free to the jobs waiting for them.

`WaitingJobs` marks the nodes that may have a slot for a waiting job; the
pump takes each marked node's free slots in turn, asks the queue which
waiting job the node should serve next (priority, fair turns, age), and
starts that job through `Attempts.start_waiting`, where the unified selector
picks the node (normally the freed one). A round runs in the step of the
node's result that freed the slot (`pump_now`, from `NodeEvents.slot_freed`):
the next job is on its way to the node before the result goes to its client,
without waiting for a turn of a busy event loop (measured in
benchmarks/saturation.py, where the idle gap between a slot's jobs is most of
the capacity lost). For every other way a slot frees (a timeout, a cancel, a
node joining, another hub's node) a background task (`run`), woken by
`WaitingJobs`, runs the round. One round at a time: a round that awaits (a
dispatch through Redis) takes the marks made meanwhile before it ends.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from hub.core import error_codes
from hub.core.fleet_view import FleetView
from hub.core.job_state import Job
from hub.core.messages import ErrorInfo
from hub.core.snapshot import ONLINE
from hub.jobs.home.attempts import Attempts
from hub.jobs.home.waiting import WaitingJobs
from hub.runtime.deadline_loop import Clock

YIELD_EVERY = 256
"""Dispatches between two yields to the event loop (a long backlog meeting many free
slots must not hold up the hub's other work)."""


class QueuePump:
    __slots__ = ("_attempts", "_clock", "_fleet", "_idle", "_waiting")

    def __init__(
        self, *, waiting: WaitingJobs, attempts: Attempts, fleet: FleetView, clock: Clock
    ) -> None:
        self._waiting = waiting
        self._attempts = attempts
        self._fleet = fleet
        self._clock = clock
        self._idle = asyncio.Event()
        """Set while no round runs."""
        self._idle.set()

    def __repr__(self) -> str:
        return f"QueuePump({self._waiting!r}, {'idle' if self._idle.is_set() else 'pumping'})"

    async def run(self) -> None:
        """Pump until cancelled."""
        while True:
            await self._waiting.changed()
            if not self._idle.is_set():
                await self._idle.wait()  # the round in progress takes the new marks
                continue
            await self.pump()

    async def pump_now(self) -> None:
        """A round in the caller's step, if a node is marked and no round runs."""
        if self._waiting.dirty and self._idle.is_set():
            await self.pump()

    async def pump(self) -> int:
        """Give every marked node's free slots to waiting jobs; how many started (0
        when a round is running already: it takes the marks)."""
        if not self._idle.is_set():
            return 0
        self._idle.clear()
        try:
            return await self._round()
        except Exception:
            # Not the caller's failure: the result whose step runs this round still goes
            # to its client, and the background task keeps pumping.
            logger.exception("a queue pump round failed")
            return 0
        finally:
            self._idle.set()

    async def _end_failed(self, job: Job) -> None:
        """A waiting job the hub failed to start (a bug): out of the queue already, it
        ends with `internal_error` instead of hanging until its deadline."""
        logger.exception("starting waiting job {} failed", job.job_id)
        try:
            await self._attempts.revoke(job, error_codes.INTERNAL_ERROR)
            await self._attempts.finish(job, ok=False, error=ErrorInfo(
                error_codes.INTERNAL_ERROR, "the hub failed to start the job"
            ))
        except Exception:
            logger.exception("ending waiting job {} failed", job.job_id)

    async def _round(self) -> int:
        waiting = self._waiting
        started = 0
        while dirty := waiting.take_dirty():
            for node_id in dirty:
                state = self._fleet.snapshot.get(node_id)
                if state is None or state.status != ONLINE:
                    continue
                free = state.caps.max_concurrency - state.running
                if free <= 0:
                    continue
                # At most as many as the node has free slots now: the bound holds even
                # if a dispatch does not change the view (the owner refuses later).
                for _ in range(free):
                    job = waiting.take_for(state, self._clock.now_ms())
                    if job is None:
                        break
                    try:
                        if not await self._attempts.start_waiting(job):
                            break  # back in the queue: nothing fits it after all
                    except Exception:
                        await self._end_failed(job)
                        break
                    started += 1
                    if started % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    state = self._fleet.snapshot.get(node_id)
                    if (
                        state is None or state.status != ONLINE
                        or state.running >= state.caps.max_concurrency
                    ):
                        break
                else:
                    # The selector sent these jobs to other nodes: this one may still
                    # have room for the next.
                    waiting.look_at(node_id)
        return started

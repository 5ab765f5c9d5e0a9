"""An agent's jobs: accept or reject `job_assign`, run the handler, report the result.

`JobRunner` decides each `job_assign` (draining -> "draining", full ->
"busy", else the `FaultPolicy`: reject, delayed accept, crash mid-job), runs
each accepted job as a task in the connection's `TaskGroup`, sends
`job_accept`, `job_progress` and `job_result` on the link the job came from
(`agent_sim.link.HubLink`, through `Frames`), honours `job_cancel` and keeps
the job counters. When the connection drops,
`agent_sim.connection.ConnectionLoop` calls `cancel_all`: the hub fails those
attempts over, so nothing is sent for them. The results it sent in the last
`REPLAY_WINDOW_S`, and every later one its hub has not shown it read (a ping
sent after it, answered: `confirmed`), are kept to `replay` them on the next
link: a hub that froze holds them unread for as long as it is frozen.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import msgspec

from agent_sim.behaviour import NO_FAULT, FaultDecision
from agent_sim.frames import Frames
from agent_sim.job import FaultPolicy, JobContext, JobFailed, JobHandler, JobRejected
from agent_sim.link import HubLink
from agent_sim.state import AgentState
from hub.core.messages import (
    ErrorInfo,
    JobAccept,
    JobAssign,
    JobProgress,
    JobReject,
    JobResult,
)

__all__ = ["REPLAY_WINDOW_S", "JobRunner"]

REPLAY_WINDOW_S: Final = 5.0
"""Results sent this long before a connection dropped are sent again after it, read
or not (the hub may have died before passing them on)."""

_JobKey = tuple[str, int]


class JobRunner:
    """The jobs of one `NodeAgent`: counters `accepted`, `rejected`, `completed`,
    `failed`, `cancelled` (by `job_cancel`), `lost` (cancelled because the
    connection dropped or the agent closed) and `running`."""

    __slots__ = (
        "_cancel_requested",
        "_clock",
        "_confirmed_s",
        "_faults",
        "_frames",
        "_handler",
        "_idle",
        "_jobs",
        "_on_result",
        "_recent",
        "_state",
        "_timers",
        "accepted",
        "cancelled",
        "completed",
        "failed",
        "lost",
        "rejected",
    )

    def __init__(
        self,
        state: AgentState,
        frames: Frames,
        *,
        handler: JobHandler,
        faults: FaultPolicy | None,
        on_result: Callable[[JobResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` is monotonic seconds: it dates the results kept for `replay`."""
        self._state = state
        self._clock = clock
        self._on_result = on_result
        self._frames = frames
        self._handler = handler
        self._faults = faults
        self.accepted = 0
        self.rejected = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.lost = 0
        self._jobs: dict[_JobKey, asyncio.Task[None]] = {}
        self._cancel_requested: set[_JobKey] = set()
        self._timers: set[asyncio.Task[None]] = set()
        """Pending simulated crashes (`FaultDecision.crash_after_s`)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._recent: deque[tuple[float, JobResult]] = deque()
        """Results sent lately (`clock` time), to `replay` after a dropped connection."""
        self._confirmed_s = float("-inf")
        """Results sent before this (`clock` time) reached the hub's connection."""

    @property
    def running(self) -> int:
        """Jobs this agent holds: assigned and not yet finished (pending accepts included).

        A job the hub cancelled no longer counts, even while its task winds down:
        the hub freed that slot when it sent `job_cancel` and may fill it at once."""
        return len(self._jobs) - len(self._cancel_requested & self._jobs.keys())

    async def wait_idle(self) -> None:
        """Return once no job is running (at once when none is)."""
        await self._idle.wait()

    # --- what the connection loop calls -------------------------------------------------

    async def assign(self, link: HubLink, tg: asyncio.TaskGroup, assign: JobAssign) -> None:
        """Accept (start the job in `tg`) or reject a `job_assign` received on `link`."""
        key = (assign.job_id, assign.attempt)
        if key in self._jobs:
            self._state.log.debug("{} duplicate job_assign {}", self._state.node_id, key)
            return
        reason: str | None = None
        decision = NO_FAULT
        if self._state.draining:
            reason = "draining"
        elif self.running >= self._state.capabilities.max_concurrency:
            reason = "busy"
        else:
            if self._faults is not None:
                decision = self._faults.on_assign(assign)
            reason = decision.reject_reason
        if reason is not None:
            self.rejected += 1
            await self._frames.send(link, JobReject(assign.job_id, assign.attempt, reason))
            return
        self._idle.clear()
        task = tg.create_task(self._run_job(link, assign, decision))
        self._jobs[key] = task
        task.add_done_callback(partial(self._never_ran, key))
        if decision.crash_after_s is not None:
            crash = tg.create_task(self._crash_later(link, key, decision.crash_after_s))
            self._timers.add(crash)
            crash.add_done_callback(self._timers.discard)

    def _sent(self, result: JobResult) -> None:
        self._recent.append((self._clock(), result))
        self._trim()

    def _trim(self) -> None:
        recent = self._recent
        window_start = self._clock() - REPLAY_WINDOW_S
        # Sent before the window and no later than a ping the hub answered: read.
        while recent and recent[0][0] < window_start and recent[0][0] <= self._confirmed_s:
            recent.popleft()

    def now_s(self) -> float:
        """The time `confirmed` takes (this runner's clock)."""
        return self._clock()

    def confirmed(self, before_s: float) -> None:
        """The hub answered a ping sent at `before_s` (`clock` time): it read every result
        sent before it (those outside `REPLAY_WINDOW_S` need not be replayed)."""
        self._confirmed_s = max(self._confirmed_s, before_s)
        self._trim()

    async def replay(self, link: HubLink) -> int:
        """After a connection dropped: send again, marked `replayed`, the results sent in
        the last `REPLAY_WINDOW_S` and those the hub never showed it read (the hub they
        went to may have died or frozen before passing them on; the job's home takes
        one only if that attempt is still current). They stay kept until this link's
        hub confirms them. Returns how many."""
        self._trim()
        recent = [r for _, r in self._recent]
        self._recent.clear()
        self._confirmed_s = float("-inf")  # the new link has confirmed nothing yet
        for result in recent:
            replayed = msgspec.structs.replace(result, replayed=True)
            if not await self._frames.send(link, replayed):
                break
            self._sent(replayed)
        return len(recent)

    @property
    def unconfirmed(self) -> int:
        """Results kept for a replay."""
        return len(self._recent)

    def cancel(self, job_id: str, attempt: int) -> None:
        """`job_cancel`: cancel that attempt's handler; nothing is sent for it."""
        key = (job_id, attempt)
        task = self._jobs.get(key)
        if task is None:
            self._state.log.debug("{} job_cancel for unknown {}", self._state.node_id, key)
            return
        self._cancel_requested.add(key)
        task.cancel()

    def cancel_all(self) -> None:
        """The connection dropped: cancel every job and pending simulated crash."""
        for task in (*self._timers, *self._jobs.values()):
            task.cancel()

    def forget_cancels(self) -> None:
        """After the connection's tasks have finished: forget the `job_cancel`s it got."""
        self._cancel_requested.clear()

    def _never_ran(self, key: _JobKey, task: asyncio.Task[None]) -> None:
        """A job task that ended still in the table was cancelled before its first step
        (the connection dropped in the same loop turn as its job_assign): its body and
        its `finally` never ran. Do their bookkeeping here."""
        if self._jobs.get(key) is not task:
            return
        if key in self._cancel_requested:
            self.cancelled += 1
        else:
            self.lost += 1
        self._forget(key)

    def _forget(self, key: _JobKey) -> None:
        self._cancel_requested.discard(key)
        self._jobs.pop(key, None)
        if not self._jobs:
            self._idle.set()

    # --- one job ---------------------------------------------------------------------

    async def _crash_later(self, link: HubLink, key: _JobKey, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if key in self._jobs and link is self._frames.current:
            self._state.log.debug("{} simulated crash during {}", self._state.node_id, key)
            self._frames.abort(link)

    async def _run_job(self, link: HubLink, assign: JobAssign, decision: FaultDecision) -> None:
        key = (assign.job_id, assign.attempt)
        try:
            if decision.accept_delay_s > 0:
                await asyncio.sleep(decision.accept_delay_s)
            if not await self._frames.send(link, JobAccept(assign.job_id, assign.attempt)):
                return
            self.accepted += 1

            async def progress(data: Any) -> None:
                await self._frames.send(link, JobProgress(assign.job_id, assign.attempt, data))

            ctx = JobContext(node_id=self._state.node_id, assign=assign, progress=progress)
            result = await self._call_handler(link, ctx)
            if key in self._cancel_requested:  # the handler swallowed our cancellation
                self.cancelled += 1
                return
            if isinstance(result, JobReject):  # the handler gave the job back
                self.rejected += 1
                await self._frames.send(link, result)
                return
            if result.ok:
                self.completed += 1
            else:
                self.failed += 1
            if not await self._frames.send(link, result):
                return
            self._sent(result)
            if self._on_result is not None:
                self._on_result(result)
        except asyncio.CancelledError:
            if key in self._cancel_requested:
                self.cancelled += 1
            else:
                self.lost += 1
            raise
        finally:
            self._forget(key)

    async def _call_handler(self, link: HubLink, ctx: JobContext) -> JobResult | JobReject:
        try:
            output = await self._handler(ctx)
        except JobRejected as exc:
            return JobReject(ctx.job_id, ctx.attempt, exc.reason)
        except JobFailed as exc:
            error = ErrorInfo(code=exc.code, message=exc.message)
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        except Exception as exc:
            # A bug in the node's own code: the operator of the node must see it.
            self._state.log.opt(exception=True).warning(
                "{} handler raised on job {} (attempt {}): {}: {}", self._state.node_id,
                ctx.job_id, ctx.attempt, type(exc).__name__, exc, job_id=ctx.job_id,
                attempt=ctx.attempt, event="handler_error",
            )
            error = ErrorInfo(code="handler_error", message=f"{type(exc).__name__}: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        result = JobResult(ctx.job_id, ctx.attempt, ok=True, output=output)
        # Encode once here: an output the codec cannot carry is the handler's error,
        # reported as such, not a send that fails later.
        try:
            link.encode(result)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            error = ErrorInfo(code="handler_error", message=f"output not encodable: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        return result

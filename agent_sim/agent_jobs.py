"""The agent's jobs: accept or reject `job_assign`, run the handler, report the result.

`_AgentJobs` is a base class of `agent_sim.agent.NodeAgent`. It dispatches
the hub's messages during a session, applies the `FaultPolicy` (reject,
delayed accept, crash mid-job), runs each accepted job as a task, honours
`job_cancel` and keeps the job counters.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection

from agent_sim.agent_frames import _AgentFrames
from agent_sim.behaviour import NO_FAULT, FaultDecision
from agent_sim.job import FaultPolicy, JobContext, JobFailed, JobHandler
from hub.core.messages import (
    Capabilities,
    Error,
    ErrorInfo,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    NodeOutbound,
    Registered,
)

_JobKey = tuple[str, int]


class _AgentJobs(_AgentFrames):
    """Job handling for `NodeAgent`; the attributes are set by `NodeAgent.__init__`."""

    capabilities: Capabilities
    accepted: int
    rejected: int
    completed: int
    failed: int
    cancelled: int
    lost: int
    _handler: JobHandler
    _faults: FaultPolicy | None
    _jobs: dict[_JobKey, asyncio.Task[None]]
    _cancel_requested: set[_JobKey]
    _idle: asyncio.Event
    _draining: bool

    @property
    def running(self) -> int:
        """Jobs this agent holds: assigned and not yet finished (pending accepts included).

        A job the hub cancelled no longer counts, even while its task winds down:
        the hub freed that slot when it sent `job_cancel` and may fill it at once."""
        return len(self._jobs) - len(self._cancel_requested & self._jobs.keys())

    async def _dispatch(
        self,
        ws: ClientConnection,
        tg: asyncio.TaskGroup,
        aux: set[asyncio.Task[None]],
        message: NodeOutbound,
    ) -> None:
        match message:
            case JobAssign():
                await self._on_assign(ws, tg, aux, message)
            case JobCancel(job_id=job_id, attempt=attempt):
                key = (job_id, attempt)
                task = self._jobs.get(key)
                if task is None:
                    self._log.debug("{} job_cancel for unknown {}", self.node_id, key)
                    return
                self._cancel_requested.add(key)
                task.cancel()
            case Error():
                self._log.debug(
                    "{} hub error {}: {} (job {})",
                    self.node_id,
                    message.code,
                    message.message,
                    message.job_id,
                )
            case Registered():
                self._log.debug("{} unexpected registered while registered", self.node_id)

    async def _on_assign(
        self,
        ws: ClientConnection,
        tg: asyncio.TaskGroup,
        aux: set[asyncio.Task[None]],
        assign: JobAssign,
    ) -> None:
        key = (assign.job_id, assign.attempt)
        if key in self._jobs:
            self._log.debug("{} duplicate job_assign {}", self.node_id, key)
            return
        reason: str | None = None
        decision = NO_FAULT
        if self._draining:
            reason = "draining"
        elif self.running >= self.capabilities.max_concurrency:
            reason = "busy"
        else:
            if self._faults is not None:
                decision = self._faults.on_assign(assign)
            reason = decision.reject_reason
        if reason is not None:
            self.rejected += 1
            await self._send(ws, JobReject(assign.job_id, assign.attempt, reason))
            return
        self._idle.clear()
        self._jobs[key] = tg.create_task(self._run_job(ws, assign, decision))
        if decision.crash_after_s is not None:
            crash = tg.create_task(self._crash_later(ws, key, decision.crash_after_s))
            aux.add(crash)
            crash.add_done_callback(aux.discard)

    async def _crash_later(self, ws: ClientConnection, key: _JobKey, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if key in self._jobs and ws is self._ws:
            self._log.debug("{} simulated crash during {}", self.node_id, key)
            self._abort(ws)

    async def _run_job(
        self, ws: ClientConnection, assign: JobAssign, decision: FaultDecision
    ) -> None:
        key = (assign.job_id, assign.attempt)
        try:
            if decision.accept_delay_s > 0:
                await asyncio.sleep(decision.accept_delay_s)
            if not await self._send(ws, JobAccept(assign.job_id, assign.attempt)):
                return
            self.accepted += 1

            async def progress(data: Any) -> None:
                await self._send(ws, JobProgress(assign.job_id, assign.attempt, data))

            ctx = JobContext(node_id=self.node_id, assign=assign, progress=progress)
            result = await self._call_handler(ws, ctx)
            if key in self._cancel_requested:  # the handler swallowed our cancellation
                self.cancelled += 1
                return
            if result.ok:
                self.completed += 1
            else:
                self.failed += 1
            if not await self._send(ws, result):
                return
        except asyncio.CancelledError:
            if key in self._cancel_requested:
                self.cancelled += 1
            else:
                self.lost += 1
            raise
        finally:
            self._cancel_requested.discard(key)
            self._jobs.pop(key, None)
            if not self._jobs:
                self._idle.set()

    async def _call_handler(self, ws: ClientConnection, ctx: JobContext) -> JobResult:
        try:
            output = await self._handler(ctx)
        except JobFailed as exc:
            error = ErrorInfo(code=exc.code, message=exc.message)
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        except Exception as exc:
            self._log.opt(exception=True).debug("{} handler raised in {!r}", self.node_id, ctx)
            error = ErrorInfo(code="handler_error", message=f"{type(exc).__name__}: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        result = JobResult(ctx.job_id, ctx.attempt, ok=True, output=output)
        try:
            self._encode(ws, result)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            error = ErrorInfo(code="handler_error", message=f"output not encodable: {exc}")
            return JobResult(ctx.job_id, ctx.attempt, ok=False, error=error)
        return result

"""What a `NodeAgent`'s job handler and fault policy see.

`JobContext` is one accepted job attempt as passed to the handler,
`JobFailed` is what a handler raises to report `ok: false`, `JobRejected` what
it raises to give the job back to the hub for another node, and
`FaultPolicy` is consulted on each `job_assign` to inject faults.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent_sim.behaviour import FaultDecision
from hub.core.messages import JobAssign, Pipeline

__all__ = ["FaultPolicy", "JobContext", "JobFailed", "JobHandler", "JobRejected"]


class JobFailed(Exception):
    """Raise from a handler to report `job_result` with `ok: false` and this error."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class JobRejected(Exception):
    """Raise from a handler to give the job back: the agent sends `job_reject` and the
    hub runs the job on another node (this one is excluded for it). For a failure that
    another node would not have (out of GPU memory, a model not loaded): unlike
    `JobFailed`, which is final, the client does not see it, only a later result."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class JobContext:
    """One accepted job attempt, as the handler sees it."""

    __slots__ = (
        "_progress",
        "attempt",
        "deadline_ms",
        "features",
        "job_id",
        "node_id",
        "payload",
        "pipeline",
        "session_id",
        "src_lang",
        "tgt_lang",
    )

    def __init__(
        self,
        *,
        node_id: str,
        assign: JobAssign,
        progress: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.node_id: str = node_id
        self.job_id: str = assign.job_id
        self.attempt: int = assign.attempt
        self.session_id: str = assign.session_id
        self.src_lang: str = assign.src_lang
        self.tgt_lang: str = assign.tgt_lang
        self.features: list[str] = assign.features
        self.pipeline: Pipeline = assign.pipeline
        self.payload: Any = assign.payload
        self.deadline_ms: int = assign.deadline_ms
        self._progress = progress

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, attempt={self.attempt}, "
            f"{self.src_lang}->{self.tgt_lang}, node_id={self.node_id!r})"
        )

    async def progress(self, data: Any) -> None:
        """Send `job_progress`; a no-op once the connection is gone (the job is cancelled)."""
        await self._progress(data)


JobHandler = Callable[[JobContext], Awaitable[Any]]


class FaultPolicy(Protocol):
    """Consulted on each job_assign the agent could accept (not when busy or draining)."""

    def on_assign(self, assign: JobAssign) -> FaultDecision: ...

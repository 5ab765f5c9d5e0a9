"""The job record and its state machine, with attempt fencing.

A job moves `assigned -> accepted -> running -> done | failed`; a failed
attempt (reject, accept timeout, attempt timeout, node lost) sends it back to
`assigned` on another node with the failed node hard-excluded, until
`max_attempts` is spent. Every node message names `(job_id, attempt)`; `fence`
refuses anything that is not the current attempt on the node that holds it,
so a late message from an earlier attempt changes nothing (docs/protocol.md,
"Fencing"). Pure: time is passed in as `now_ms`, nothing here does I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

import msgspec

from hub.core import error_codes
from hub.core.capabilities import AT_CAPACITY, DRAINING, Requirements
from hub.core.errors import ProtocolError
from hub.core.messages import ErrorInfo, JobAssign, Pipeline, Result
from hub.core.principal import DEFAULT_TENANT


class JobStatus(StrEnum):
    QUEUED = "queued"
    """Waiting for a free slot: no attempt is on a node."""
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.ASSIGNED, JobStatus.ACCEPTED, JobStatus.RUNNING})

# How an attempt ended (`attempts[].outcome` of a job record, the label of
# `nodehub_attempts_total`); the ones marked (cancel) are also `job_cancel.reason`s.
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
"""The node sent `job_reject`."""
ACCEPT_TIMEOUT: Final = "accept_timeout"
"""(cancel) no `job_accept` within `accept_timeout_ms`."""
ATTEMPT_TIMEOUT: Final = "timeout"
"""(cancel) the attempt's `job_timeout_ms`, or the job's own deadline, passed."""
NODE_LOST: Final = "node_lost"
"""The node's session ended while it held the attempt."""
HUB_LOST: Final = "hub_lost"
"""(cross-instance) the hub owning the node died."""
NODE_GONE: Final = "node_gone"
"""The node's owner refused: the node is no longer connected there."""
HOME_LOST: Final = "home_lost"
"""(cancel) the job's home hub died: nobody awaits the result."""
CANCELLED: Final = "cancelled"
"""(cancel) the client cancelled the job."""
HUB_SHUTDOWN: Final = "hub_shutdown"
"""(cancel) the job's home hub is stopping."""
BAD_OUTPUT: Final = error_codes.BAD_OUTPUT
"""A two-way job's output named no valid detected language."""
BINDING_FAILED: Final = "store_unavailable"
"""(cancel) a dispatch that may have left with a binding whose reply was lost."""

QUEUE_TIMEOUT: Final = "queue_timeout"
"""The job waited for a free slot past its `queue_timeout_ms`."""

REFUSALS = frozenset({AT_CAPACITY, DRAINING, NODE_GONE})
"""Attempt outcomes where the node's owner refused the job before the node saw it."""
MAX_REFUSALS_PER_ATTEMPT = 4


class Watcher(msgspec.Struct, frozen=True):
    """A client session waiting for a job's result: the submitter or a duplicate."""

    hub_id: str
    client_id: str
    request_id: str


class AttemptRecord(msgspec.Struct):
    attempt: int
    node_id: str
    started_ms: int
    outcome: str = "running"


class Job:
    """One job as its home hub tracks it; see the module docstring for the states."""

    __slots__ = (
        "attempt",
        "attempt_deadline_ms",
        "created_ms",
        "deadline_ms",
        "fair_key",
        "features",
        "held_bytes",
        "history",
        "home_hub",
        "job_id",
        "node_hub",
        "node_id",
        "payload",
        "priority",
        "queue_deadline_ms",
        "queue_order",
        "queue_timeout_ms",
        "queued_since_ms",
        "refused",
        "request_id",
        "requeued",
        "requirements",
        "result",
        "session_id",
        "status",
        "submit",
        "tenant",
        "timeout_ms",
        "unconfirmed",
        "watchers",
    )

    def __init__(
        self,
        *,
        job_id: str,
        request_id: str,
        session_id: str,
        requirements: Requirements,
        payload: Any,
        home_hub: str,
        created_ms: int,
        deadline_ms: int,
        watcher: Watcher,
        timeout_ms: int = 0,
        tenant: str = DEFAULT_TENANT,
        priority: int = 0,
        queue_timeout_ms: int = 0,
        fair_key: str = "",
        submit: Any = None,
    ) -> None:
        self.job_id = job_id
        self.submit = submit
        self.held_bytes = 0
        """Its payload's size (the submit's frame), held against `max_held_payload_bytes`
        by its fair-share party (`fair_key`) while it is active."""
        """The submit that made it (what a drain hands to another hub; None for a job
        restored from elsewhere)."""
        self.tenant = tenant
        self.request_id = request_id
        self.session_id = session_id
        self.requirements = requirements
        self.features = sorted(requirements.features)
        self.payload = payload
        self.home_hub = home_hub
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.timeout_ms = timeout_ms
        self.watchers = [watcher]
        self.status = JobStatus.ASSIGNED
        self.attempt = 0
        self.attempt_deadline_ms = deadline_ms
        self.refused = 0
        self.node_id = ""
        self.node_hub = ""
        self.history: list[AttemptRecord] = []
        self.result: Result | None = None
        # --- the admission queue ---
        self.priority = priority
        self.fair_key = fair_key
        """Whose turn this job waits in: the client session today, the tenant with auth."""
        self.queue_timeout_ms = queue_timeout_ms
        """How long the job may wait for a free slot; 0: never (v1 behaviour)."""
        self.requeued = 0
        """Dispatches refused for capacity that sent the job back to the queue: they
        do not spend `max_attempts`."""
        self.queued_since_ms: int | None = None
        """When the job started waiting (monotonic); None while it is not waiting."""
        self.queue_deadline_ms = 0
        self.queue_order: Any = None
        """Its place in the queue (`admission_queue.Order`), kept across a requeue."""
        self.unconfirmed = False
        """Its submitter was refused because the binding's reply was lost, after the
        first Dispatch went out with it: the store may have made both. Tracked all the
        same (no watcher unless a resubmit finds the binding), so that a run that happens
        anyway is answered and archived, never started twice."""

    def __repr__(self) -> str:
        return (
            f"Job({self.job_id!r}, status={self.status.value}, attempt={self.attempt}, "
            f"node={self.node_id!r})"
        )

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    @property
    def queued(self) -> bool:
        return self.status is JobStatus.QUEUED

    @property
    def state(self) -> str:
        """The coarse lifecycle: `queued`, `active` (an attempt is on a node), `finished`."""
        if self.status is JobStatus.QUEUED:
            return "queued"
        return "finished" if self.finished else "active"

    # --- transitions -----------------------------------------------------------

    def assign(
        self, node_id: str, node_hub: str, now_ms: int, attempt_deadline_ms: int,
        *, wall_ms: int | None = None,
    ) -> JobAssign:
        """Start the next attempt on `node_id`; returns the message the node must get.

        Deadlines here are on the monotonic clock (`now_ms`). With `wall_ms` (the
        wall clock now) the message's `deadline_ms` is on the wall clock, as the wire
        has it: the same remaining budget."""
        if self.finished:
            raise ValueError(f"{self!r} is finished")
        self.attempt += 1
        self.attempt_deadline_ms = attempt_deadline_ms
        self.node_id = node_id
        self.node_hub = node_hub
        self.status = JobStatus.ASSIGNED
        self.history.append(
            AttemptRecord(self.attempt, node_id, now_ms if wall_ms is None else wall_ms)
        )
        req = self.requirements
        deadline = min(attempt_deadline_ms, self.deadline_ms)
        return JobAssign(
            job_id=self.job_id,
            attempt=self.attempt,
            session_id=self.session_id,
            src_lang=req.src_lang,
            tgt_lang=req.tgt_lang,
            features=self.features,
            pipeline=req.pipeline,
            payload=self.payload,
            deadline_ms=deadline if wall_ms is None else wall_ms + (deadline - now_ms),
        )

    def wait(self, now_ms: int, *, keep_deadline: bool = False) -> None:
        """Wait for a free slot: no attempt is on a node until the next `assign`.

        The queue deadline starts now, or, with `keep_deadline` (a dispatch refused
        for capacity: the job never got a slot), stays what it was."""
        if self.finished:
            raise ValueError(f"{self!r} is finished")
        self.status = JobStatus.QUEUED
        self.node_id = ""
        self.node_hub = ""
        self.queued_since_ms = now_ms
        if not keep_deadline or not self.queue_deadline_ms:
            self.queue_deadline_ms = now_ms + self.queue_timeout_ms

    def requeue_attempt(self, outcome: str) -> None:
        """The owner refused the attempt for capacity: it ends, the job waits again.

        Not a failed attempt: the node is not excluded and `max_attempts` is not spent."""
        self.history[-1].outcome = outcome
        self.requeued += 1

    def fence(self, node_id: str, attempt: int) -> None:
        """Raise `ProtocolError` unless `(node_id, attempt)` is this job's live attempt."""
        if self.finished:
            raise ProtocolError(error_codes.JOB_FINISHED, f"job {self.job_id} is already finished")
        if node_id != self.node_id:
            raise ProtocolError(
                error_codes.NOT_YOUR_JOB, f"job {self.job_id} is not assigned to {node_id}"
            )
        if attempt != self.attempt:
            raise ProtocolError(error_codes.STALE_ATTEMPT,
                f"job {self.job_id} is at attempt {self.attempt}, not {attempt}",
            )

    def accept(self) -> bool:
        """The node took the job; False when it had already (a repeated accept)."""
        if self.status is JobStatus.ASSIGNED:
            self.status = JobStatus.ACCEPTED
            return True
        return False

    def progress(self) -> None:
        """Progress implies acceptance; the job is now running."""
        self.status = JobStatus.RUNNING

    def fail_attempt(self, outcome: str, *, exclude: bool = True) -> str:
        """End the current attempt without a result; returns the node that ran it, which
        is hard-excluded from now on unless not `exclude` (its hub failed, not it: the
        node may serve the job from the hub it reconnected to)."""
        self.history[-1].outcome = outcome
        if outcome in REFUSALS:
            self.refused += 1
        if exclude:
            self.requirements = self.requirements.excluding(self.node_id)
        return self.node_id

    def can_retry(self, max_attempts: int, now_ms: int) -> bool:
        """Whether another attempt may start.

        Refusals by the node's owner (the node was full, draining or gone before
        it saw the job) do not spend the `max_attempts` budget: they are a stale
        view of a remote node's load, not a failure of the job. They are bounded
        separately, so a job cannot bounce forever."""
        return (
            self.attempt - self.refused - self.requeued < max_attempts
            and self.refused < MAX_REFUSALS_PER_ATTEMPT * max_attempts
            and now_ms < self.deadline_ms
        )

    def complete(
        self, *, ok: bool, output: Any = None, error: ErrorInfo | None = None, outcome: str = ""
    ) -> Result:
        """Make the terminal result (exactly once); later calls return the same result."""
        if self.result is not None:
            return self.result
        self.status = JobStatus.DONE if ok else JobStatus.FAILED
        if self.history:
            last = self.history[-1]
            if last.outcome == "running":
                last.outcome = outcome or ("ok" if ok else (error.code if error else "failed"))
        self.result = Result(
            request_id=self.request_id,
            job_id=self.job_id,
            node_id=self.node_id,
            ok=ok,
            attempts=self.attempt,
            output=output,
            error=error,
        )
        return self.result

    def to_record(self) -> JobRecord:
        """The view of `GET /v1/jobs/<id>`, also what the store archives."""
        req = self.requirements
        return JobRecord(
            job_id=self.job_id,
            request_id=self.request_id,
            status=self.status.value,
            state=self.state,
            priority=self.priority,
            node_id=self.node_id,
            hub_id=self.home_hub,
            session_id=self.session_id,
            attempt=self.attempt,
            src_lang=req.src_lang,
            tgt_lang=req.tgt_lang,
            features=self.features,
            pipeline=req.pipeline,
            excluded=sorted(req.excluded),
            created_ms=self.created_ms,
            timeout_ms=self.timeout_ms,
            attempts=self.history,
            result=self.result,
            tenant=self.tenant,
        )


class JobRecord(msgspec.Struct, kw_only=True):
    """A job as `GET /v1/jobs/<id>` shows it and the store archives it (JSON)."""

    job_id: str
    request_id: str
    status: str
    node_id: str
    state: str = "finished"
    """`queued`, `active` or `finished` (`status` has the detail)."""
    priority: int = 0
    hub_id: str = ""
    session_id: str = ""
    attempt: int = 0
    src_lang: str = ""
    tgt_lang: str = ""
    features: list[str] = []
    pipeline: Pipeline | None = None
    excluded: list[str] = []
    created_ms: int = 0
    """Unix epoch milliseconds (the home hub's clock)."""
    timeout_ms: int = 0
    """The job's overall budget from its submit."""
    attempts: list[AttemptRecord] = []
    result: Result | None = None
    orphaned: bool = False
    """Archived by another hub after the job's home hub died."""
    tenant: str = DEFAULT_TENANT
    """The tenant of the session that submitted the job."""

    def expired(self) -> JobRecord:
        """This record's tombstone, once its result is evicted from memory: the job's
        identity and how it ended, with a failed `result_expired` result in place of
        its own (a resubmit is answered with it; the job is never run again)."""
        result = self.result
        return JobRecord(
            job_id=self.job_id,
            request_id=self.request_id,
            status=self.status,
            node_id=self.node_id,
            hub_id=self.hub_id,
            attempt=self.attempt,
            created_ms=self.created_ms,
            orphaned=self.orphaned,
            tenant=self.tenant,
            result=Result(
                request_id=self.request_id,
                job_id=self.job_id,
                node_id=result.node_id if result is not None else self.node_id,
                ok=False,
                attempts=result.attempts if result is not None else self.attempt,
                error=ErrorInfo(
                    error_codes.RESULT_EXPIRED,
                    f"job {self.job_id} {self.status}, but its result is no longer kept "
                    "(max_archive_bytes); it is not run again",
                ),
            ),
        )


__all__ = ["ACTIVE", "AttemptRecord", "Job", "JobRecord", "JobStatus", "Watcher"]


def job_home(job_id: str) -> str:
    """The hub a job was submitted to (job ids are `<hub id>.<boot>.<counter>`)."""
    return job_id.rsplit(".", 2)[0]

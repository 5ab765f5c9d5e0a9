"""`JobLog`: a job's story in the log, one line per lifecycle event.

Each line carries the fields an operator filters on (`--log-json` writes them as
flat JSON keys): `event`, `job_id`, `request_id`, `node_id`, `attempt`, and
`reason` or `outcome` where they apply. Events:

| event | when |
|---|---|
| `accepted` | the job exists (`queued` too when it waits for a slot) |
| `rejected` | the submit got `rejected` (`no_node`, `overloaded`): no job was made |
| `assigned` | an attempt was handed to a node (every attempt, failovers included) |
| `queued` / `dequeued` | the job started / stopped waiting for a free slot |
| `rejected_by_node` | the node sent `job_reject` |
| `timeout` | an attempt's accept or run deadline passed |
| `attempt_failed` | another failed attempt (node lost, its hub lost, refused by its owner) |
| `failover` | a new attempt follows a failed one (`reason`: how the last one ended) |
| `result` | the one terminal result (`outcome`: `ok` or the error code) |

Request ids, node ids, reasons and error codes come from peers. The log escapes and
bounds every field and whole message (hub/app/logs.py); each value a message names
is also bounded on its own here (`loggable`, `FIELD_LIMIT` characters), so a 900 KB
`error.code` leaves a line of the usual size that still reads to its end.

All go out at `job_log_level` (default INFO). Set it to DEBUG to turn them down
(with `log_level` INFO they are then dropped before anything is formatted:
about 0.2 us an event) or OFF to skip them entirely.
"""

from __future__ import annotations

from typing import Any, Final

from loguru import logger

from hub.core.job_state import ACCEPT_TIMEOUT, ATTEMPT_TIMEOUT, Job
from hub.core.loggable import loggable

OFF: Final = "OFF"
REJECTED: Final = "rejected"
LEVELS: Final = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30,
                 "ERROR": 40, "CRITICAL": 50}


class JobLog:
    __slots__ = ("_hub_id", "_level", "enabled")

    def __init__(self, hub_id: str, level: str = "INFO", threshold: str = "TRACE") -> None:
        """Events at `level` (or none: `OFF`); none either when `level` is below
        `threshold` (the hub's `log_level`): then not even built."""
        self._hub_id = hub_id
        self._level = level.upper()
        self.enabled = self._level != OFF and LEVELS.get(self._level, 0) >= LEVELS.get(
            threshold.upper(), 0
        )

    def _emit(self, event: str, job: Job, message: str, *args: Any, **fields: Any) -> None:
        logger.log(
            self._level, message, *_fit(args), hub_id=self._hub_id, event=event,
            job_id=job.job_id, request_id=job.request_id, node_id=job.node_id or None,
            attempt=job.attempt, **fields,
        )

    def accepted(self, job: Job, *, queued: bool) -> None:
        if self.enabled:
            req = job.requirements
            self._emit(
                "accepted", job, "job {} accepted: {} -> {}{}", job.job_id, req.src_lang,
                req.tgt_lang, ", waiting for a free slot" if queued else "", queued=queued,
                tenant=job.tenant,
            )

    def rejected(self, request_id: str, code: str, detail: str) -> None:
        if self.enabled:
            logger.log(
                self._level, "submit {} rejected: {} ({})", *_fit((request_id, code, detail)),
                hub_id=self._hub_id, event=REJECTED, request_id=request_id, reason=code,
            )

    def assigned(self, job: Job) -> None:
        if self.enabled:
            self._emit(
                "assigned", job, "job {} attempt {} assigned to node {}{}", job.job_id,
                job.attempt, job.node_id,
                "" if not job.node_hub or job.node_hub == self._hub_id
                else f" on hub {job.node_hub}",
            )

    def queued(self, job: Job, reason: str) -> None:
        if self.enabled:
            self._emit("queued", job, "job {} waits for a free slot ({})", job.job_id, reason,
                       reason=reason)

    def dequeued(self, job: Job) -> None:
        if self.enabled:
            self._emit("dequeued", job, "job {} leaves the queue for a free slot", job.job_id)

    def attempt_failed(self, job: Job, outcome: str) -> None:
        if self.enabled:
            if outcome == REJECTED:
                event, text = "rejected_by_node", "node {} rejected job {} (attempt {}: {})"
            elif outcome in (ACCEPT_TIMEOUT, ATTEMPT_TIMEOUT):
                event, text = "timeout", "node {} timed out on job {} (attempt {}: {})"
            else:
                event, text = "attempt_failed", "node {} failed job {} (attempt {}: {})"
            self._emit(
                event, job, text, job.node_id, job.job_id, job.attempt, outcome, reason=outcome
            )

    def stranded(self, job: Job, reason: str) -> None:
        if self.enabled:
            self._emit(
                "stranded", job, "job {} attempt {} on node {} waits for its result to be "
                "replayed ({})", job.job_id, job.attempt, job.node_id, reason, reason=reason,
            )

    def recovered(self, job: Job) -> None:
        if self.enabled:
            self._emit(
                "recovered", job, "job {} result found in the archive (read by the hub that "
                "declared this one dead)", job.job_id,
            )

    def failover(self, job: Job, reason: str) -> None:
        if self.enabled:
            self._emit(
                "failover", job, "job {} fails over after {}: attempt {} goes to node {}",
                job.job_id, reason, job.attempt, job.node_id, reason=reason,
            )

    def finished(self, job: Job, outcome: str) -> None:
        if self.enabled:
            self._emit(
                "result", job, "job {} finished: {} after {} attempt(s)", job.job_id, outcome,
                job.attempt, outcome=outcome,
            )


def _fit(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values a message names, each `loggable` on its own (the log bounds the whole
    message too, but that would cut off its end)."""
    return tuple(loggable(arg) if type(arg) is str else arg for arg in args)

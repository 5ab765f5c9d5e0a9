"""`SubmitReply`: the one answer a client's submit gets, and everything that goes with it.

Every submit is answered once, with its request id: `accepted` (a new job, or
`duplicate: true` for a request already bound to one), or `rejected` with a
code. The job path answers a submit only through its reply, so the answer,
its count in `nodehub_submits_total` (and by language pair), the console's
recent refusals and the job log's `rejected` line happen here and nowhere
else. A reply can also be *handed on* (`deferred`): the submit joined a job
still being created, or one homed on another hub, whose answer comes through
that job's watchers (`ClientDelivery`) instead.

The driver of a submit (`Submits.submit`) answers `rejected` when its path
ended, by an error, without an answer; a second answer is never sent (the
path that tried is a bug, logged).
"""

from __future__ import annotations

import time

from loguru import logger

from hub.core.messages import Accepted, Rejected, Submit
from hub.core.metrics import Metrics
from hub.jobs.home.job_log import JobLog
from hub.jobs.links import Link

UNANSWERED = 0
ANSWERED = 1
DEFERRED = 2


class SubmitReply:
    __slots__ = ("_log", "_metrics", "_src", "_tgt", "duplicate", "link", "request_id", "state")

    def __init__(
        self, link: Link, message: Submit, metrics: Metrics, log: JobLog,
        *, duplicate: bool = False,
    ) -> None:
        """`duplicate`: the answer of a resubmit counted as one already (resolved again
        after its first handling handed it on)."""
        self.link = link
        self.request_id = message.request_id
        self._src = message.src_lang
        self._tgt = message.tgt_lang
        self._metrics = metrics
        self._log = log
        self.state = UNANSWERED
        self.duplicate = duplicate
        """The request was bound to a job already: counted as `duplicate` (once)."""

    def __repr__(self) -> str:
        return f"SubmitReply({self.request_id!r}, state={self.state})"

    @property
    def answered(self) -> bool:
        """Answered, or handed on to a job's watchers."""
        return self.state != UNANSWERED

    def _take(self) -> bool:
        if self.state != UNANSWERED:
            logger.error("submit {} answered twice (the second is dropped)", self.request_id)
            return False
        self.state = ANSWERED
        return True

    def is_duplicate(self) -> None:
        """The request is bound to an existing job: count it so, whatever the answer."""
        if not self.duplicate:
            self.duplicate = True
            self._metrics.submit("duplicate", self._src, self._tgt)

    def accepted(
        self, job_id: str, node_id: str = "", *, queued: bool = False, started: bool = False
    ) -> None:
        """`started`: the job was made for this submit (a resubmit whose job nobody held
        runs it again): `duplicate: false` on the wire, though counted as a duplicate."""
        if not self._take():
            return
        if not self.duplicate:
            self._metrics.submit("accepted", self._src, self._tgt)
        self.link.queue(Accepted(
            request_id=self.request_id, job_id=job_id, node_id=node_id,
            duplicate=self.duplicate and not started, queued=queued,
        ))

    def rejected(
        self, code: str, message: str, reasons: dict[str, int] | None = None
    ) -> Rejected:
        rejected = Rejected(
            request_id=self.request_id, code=code, message=message, reasons=reasons
        )
        if not self._take():
            return rejected
        if not self.duplicate:
            self._metrics.submit(code, self._src, self._tgt)
        self._metrics.recent.rejected(time.monotonic(), code)
        self._log.rejected(self.request_id, code, message)
        self.link.queue(rejected)
        return rejected

    def deferred(self) -> None:
        """The answer comes through a job's watchers (the submit joined one)."""
        if self.state == UNANSWERED:
            self.state = DEFERRED

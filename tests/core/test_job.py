"""Pure pieces of the job path: an attempt's deadlines on both clocks, a job's
budget, and the text of a `no_node` answer."""

from __future__ import annotations

from hub.core.capabilities import Requirements
from hub.core.config import HubConfig
from hub.core.job_state import Job, JobRecord, Watcher
from hub.core.messages import ErrorInfo
from hub.core.selector import Selection


def _job(deadline_ms: int) -> Job:
    return Job(
        job_id="h.1.1", request_id="r1", session_id="s1",
        requirements=Requirements(src_lang="en", tgt_lang="de"), payload=None,
        home_hub="h", created_ms=0, deadline_ms=deadline_ms,
        watcher=Watcher("h", "c1", "r1"),
    )


def test_an_assignment_carries_the_remaining_budget_on_the_wall_clock() -> None:
    job = _job(deadline_ms=1_000 + 60_000)  # monotonic: 60 s from now
    # The attempt's own deadline (5 s) comes first.
    assign = job.assign("n1", "h", 1_000, 1_000 + 5_000, wall_ms=1_700_000_000_000)
    assert assign.deadline_ms == 1_700_000_000_000 + 5_000
    assert job.attempt == 1 and job.attempt_deadline_ms == 6_000  # kept monotonic
    # The job's overall deadline comes first.
    again = job.assign("n2", "h", 59_000, 59_000 + 5_000, wall_ms=1_700_000_058_000)
    assert again.deadline_ms == 1_700_000_058_000 + 2_000
    # Without a wall clock the message keeps the monotonic deadline.
    assert _job(deadline_ms=9_000).assign("n1", "h", 0, 5_000).deadline_ms == 5_000


def test_a_job_budget_is_the_client_timeout_or_what_its_attempts_can_take() -> None:
    config = HubConfig(max_attempts=3, accept_timeout_ms=2_000, job_timeout_ms=10_000)
    assert config.job_budget_ms(7_000) == 7_000
    assert config.job_budget_ms(None) == 3 * (2_000 + 10_000)


def test_a_no_node_answer_names_every_reason_with_its_count() -> None:
    none = Selection(None, reasons={"no_pair": 3, "at_capacity": 1}, considered=4)
    assert none.explain() == "no node can take this job (no_pair=3, at_capacity=1)"
    assert Selection(None).explain() == "no node can take this job (no nodes)"


def test_a_records_tombstone_keeps_how_the_job_ended_and_never_its_output() -> None:
    job = _job(deadline_ms=10_000)
    job.assign("n1", "h", 0, 5_000, wall_ms=0)
    job.complete(ok=True, output="x" * 100_000)
    record = job.to_record()
    stone = record.expired()
    assert (stone.job_id, stone.request_id, stone.status, stone.node_id, stone.attempt) == (
        record.job_id, record.request_id, "done", "n1", 1
    )
    assert stone.result is not None and not stone.result.ok and stone.result.output is None
    assert stone.result.error is not None and stone.result.error.code == "result_expired"
    assert stone.result.attempts == 1 and stone.result.node_id == "n1"
    failed = JobRecord(job_id="j", request_id="r", status="failed", node_id="n2", attempt=3,
                       orphaned=True).expired()
    assert failed.orphaned and failed.result is not None and failed.result.attempts == 3
    assert failed.result.error == ErrorInfo("result_expired", failed.result.error.message)


def test_a_records_tombstone_keeps_its_tenant() -> None:
    # Who may read the tombstone (`GET /v1/jobs/<id>`), cancel it (`job_finished`, not
    # `unknown_job`), and whose binding it answers after a store restart.
    stone = JobRecord(job_id="j", request_id="r", status="done", node_id="n1",
                      tenant="acme").expired()
    assert stone.tenant == "acme"

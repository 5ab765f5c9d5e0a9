"""A node that finishes a job in the instant its home hub is found dead: the owner has
stopped the attempt (`job_cancel` `home_lost`), the node's result crossed the cancel. The
result is archived for the client's resubmit, not refused `not_your_job` (refused, it was
lost, and the resubmit ran the job a second time: a SIGKILL test caught it once)."""

from __future__ import annotations

from hub.core.messages import DEFAULT_PIPELINE, JobAssign
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, wait_until, wait_until_async

JOB = "dead-hub.0001.1"


async def test_a_result_that_crossed_its_home_lost_cancel_is_archived(
    make_hub: MakeHub, net: Net
) -> None:
    hub = await make_hub()
    node = await net.node(hub, "n1", caps(max_concurrency=2))
    owner = hub.service.owner
    # The dispatch of another hub (`dead-hub`), as its `Dispatch` envelope would make it.
    assert owner.registry.reserve("n1", JOB, 1, "dead-hub", "req-1") is None
    owner.registry.deliver("n1", JobAssign(
        job_id=JOB, attempt=1, session_id="", src_lang="en", tgt_lang="de", features=[],
        pipeline=DEFAULT_PIPELINE, deadline_ms=60_000, payload=None,
    ))
    assign = await node.assigned()
    await node.accept(assign)
    held = owner.registry.registered["n1"].assignments[JOB]
    await wait_until(lambda: held.accepted, what="the accept to be handled")
    await owner.home_lost("dead-hub")
    await node.expect("job_cancel", job_id=JOB, reason="home_lost")
    await node.result(assign, {"text": "done"})  # it had finished meanwhile

    async def archived() -> bool:
        record = await hub.service.home.archive.load(JOB)
        return record is not None and record.result is not None
    await wait_until_async(archived, what="the late result to be archived")
    record = await hub.service.home.archive.load(JOB)
    assert record is not None and record.result is not None
    assert record.request_id == "req-1" and record.result.output == {"text": "done"}
    # Nothing was refused: the first error the node gets is for a later, unknown job.
    await node.result({"job_id": "unknown", "attempt": 1}, "x")
    error = await node.expect("error")
    assert error["job_id"] == "unknown" and error["code"] == "not_your_job", error

"""`JobRunner` on its own: the bookkeeping of a job whose task never got to run."""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from agent_sim.frames import Frames
from agent_sim.job import JobContext
from agent_sim.jobs import JobRunner
from agent_sim.state import AgentState
from hub.core.messages import Capabilities, JobAssign, LanguagePair, Pipeline


async def never_called(ctx: JobContext) -> Any:
    raise AssertionError("the handler must not run")


def runner() -> JobRunner:
    caps = Capabilities(max_concurrency=2, language_pairs=[LanguagePair("en", "zh")])
    log = logger.bind(node_id="n1")
    state = AgentState(node_id="n1", capabilities=caps, log=log)
    return JobRunner(state, Frames(node_id="n1", log=log), handler=never_called, faults=None)


def assign(job_id: str) -> JobAssign:
    return JobAssign(
        job_id=job_id, attempt=1, session_id="s", src_lang="en", tgt_lang="zh", features=[],
        pipeline=Pipeline(), deadline_ms=0, payload=None,
    )


async def test_a_job_cancelled_before_its_task_started_leaves_the_table() -> None:
    # The connection drops in the same loop turn as the job_assign: the job's task is
    # cancelled before its first step, so its body (and its `finally`) never runs.
    jobs = runner()
    async with asyncio.TaskGroup() as tg:
        await jobs.assign(None, tg, assign("j1"))  # type: ignore[arg-type]
        assert jobs.running == 1
        jobs.cancel_all()  # same step: the task has not started
    assert jobs.running == 0
    assert jobs.lost == 1 and jobs.accepted == 0
    await asyncio.wait_for(jobs.wait_idle(), 1.0)  # `drain` does not wait for it

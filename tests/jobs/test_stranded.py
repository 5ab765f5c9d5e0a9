"""Attempts on a node whose hub went silent wait for the node to move and replay its
result (`StrandedAttempts`), in process with a manual clock: a result produced is
delivered, never recomputed; without one the attempt fails over once."""

from __future__ import annotations

import pytest

from hub.core.capabilities import NodeCapabilities
from hub.core.envelopes import HandedJob, Handoff
from hub.core.job_state import HUB_LOST
from hub.core.messages import (
    Accepted,
    Capabilities,
    JobAccept,
    JobAssign,
    JobResult,
    LanguagePair,
    Result,
    Submit,
)
from hub.store.memory import MemoryStore
from tests.jobs.test_service import CONFIG, JobPath, only

OTHER = "other"
CAPS = NodeCapabilities.from_wire(
    Capabilities(
        max_concurrency=2, language_pairs=[LanguagePair("en", "de")],
        asr_languages=["en"], tts_languages=["de"],
    ),
    default_pool=0,
)


@pytest.fixture
def path() -> JobPath:
    return JobPath()


async def on_other_hub(path: JobPath, node_id: str = "far") -> tuple[str, int]:
    """A submit placed on a node of another (live) hub: (job id, attempt)."""
    path.peers.members.live.add(OTHER)
    path.fleet.join(node_id, CAPS, hub_id=OTHER)
    client = path.client()
    await path.submit(client, "r1")
    accepted = only(client.take(), Accepted)
    assert accepted.node_id == node_id
    return accepted.job_id, 1


async def fire_stranded(path: JobPath, after_ms: int) -> None:
    path.clock.advance(after_ms)
    await path.service.home.attempts.deadlines.fire_due()
    await path.service.home.attempts.stranded.deadlines.fire_due()


async def test_a_dead_hubs_attempt_ends_with_the_result_its_node_replays(
    path: JobPath,
) -> None:
    job_id, attempt = await on_other_hub(path)
    client = path.service.home.delivery.clients["c1"]
    await path.service.home.events.node_hub_lost(OTHER)
    stranded = path.service.home.attempts.stranded
    assert len(stranded) == 1
    # Past the attempt's own deadline: no failover while it waits for its node.
    await fire_stranded(path, CONFIG.accept_timeout_ms + 10)
    assert path.service.home.jobs[job_id].attempt == attempt
    # The node registers here, and replays the result it could not pass on.
    path.fleet.leave("far")
    node = await path.node("far")
    await path.from_node("far", JobResult(job_id, attempt, ok=True, output="done", replayed=True))
    result = only(client.take(), Result)  # type: ignore[attr-defined]
    assert result.ok and result.output == "done" and result.attempts == 1
    assert len(stranded) == 0 and node.take() == []  # never sent again
    assert path.metrics.attempts.get(HUB_LOST) == 0


async def test_without_a_replay_the_attempt_fails_over_once_after_the_grace(
    path: JobPath,
) -> None:
    job_id, attempt = await on_other_hub(path)
    await path.service.home.events.node_hub_lost(OTHER)
    path.fleet.leave("far")
    node = await path.node("far")  # it moved here, with nothing to replay
    stranded = path.service.home.attempts.stranded
    await fire_stranded(path, stranded.replay_grace_ms - 20)
    assert node.take() == []  # still within the grace
    await fire_stranded(path, 40)
    again = only(node.take(), JobAssign)
    assert (again.job_id, again.attempt) == (job_id, attempt + 1)
    assert path.metrics.attempts.get(HUB_LOST) == 1 and len(stranded) == 0


async def test_a_result_archived_for_this_hub_ends_the_wait(path: JobPath) -> None:
    """A hub that had declared this one dead (it was frozen) sees it again: it stopped
    this hub's attempts on its nodes then, and archived the results it read for it. The
    job ends with its archived result, not with a second run."""
    job_id, attempt = await on_other_hub(path)
    client = path.service.home.delivery.clients["c1"]
    await path.archive.put_orphan("far", "r1", JobResult(job_id, attempt, ok=True, output="kept"))
    path.service.home.events.home_revived(OTHER, running=set())
    await fire_stranded(path, path.service.home.attempts.stranded.replay_grace_ms + 10)
    result = only(client.take(), Result)  # type: ignore[attr-defined]
    assert result.ok and result.output == "kept"
    assert path.metrics.attempts.get(HUB_LOST) == 0


async def test_an_attempt_the_revived_hub_still_runs_is_left_alone(path: JobPath) -> None:
    job_id, attempt = await on_other_hub(path)
    path.service.home.events.home_revived(OTHER, running={(job_id, attempt)})
    assert len(path.service.home.attempts.stranded) == 0


async def test_its_hub_answering_again_ends_the_wait(path: JobPath) -> None:
    job_id, attempt = await on_other_hub(path)
    await path.service.home.events.node_hub_lost(OTHER)
    stranded = path.service.home.attempts.stranded
    assert len(stranded) == 1
    path.fleet.join("far", CAPS, hub_id=OTHER, running=1)  # its hub publishes it again
    assert len(stranded) == 0
    assert path.service.home.jobs[job_id].attempt == attempt


async def test_a_local_shutdown_releases_the_request_so_a_resubmit_runs_it() -> None:
    store = MemoryStore(hub_id=CONFIG.hub_id)
    first = JobPath(store=store)
    node = await first.node("n1", slots=1)
    client = first.client()
    await first.submit(client, "running")
    running = only(node.take(), JobAssign)
    await first.from_node("n1", JobAccept(running.job_id, 1))
    await first.submit(client, "waiting")
    client.take()
    await first.service.home.shutdown()
    codes = sorted(m.error.code for m in client.take() if isinstance(m, Result) and m.error)
    assert codes == ["hub_shutdown", "hub_shutdown"]
    # Nothing is archived for them, and their request ids are free again.
    assert await first.archive.load(running.job_id) is None
    assert await store.bind_request("running", "probe", 60_000) is None
    await store.release_request("running", "probe")
    # The next run of the hub (same store) runs the resubmitted request.
    second = JobPath(store=store)
    node2 = await second.node("n1", slots=1)
    client2 = second.client()
    await second.submit(client2, "waiting")
    assert only(node2.take(), JobAssign).attempt == 1
    accepted = only(client2.take(), Accepted)
    assert not accepted.duplicate


async def test_a_handoff_runs_the_job_here_under_its_request_id(path: JobPath) -> None:
    """A draining hub's job arrives in a `Handoff`: it runs here, and the client's
    resubmit watches it."""
    store = path.store
    await store.bind_request("r9", "gone.job.1", 60_000)
    node = await path.node("n1")
    handed = HandedJob(
        "gone.job.1", "default", Submit("r9", "en", "de", payload={"text": "hi"})
    )
    await path.service.router.handle_envelope(Handoff(OTHER, jobs=[handed]), reaped_from=None)
    assign = only(node.take(), JobAssign)
    assert assign.payload == {"text": "hi"}
    client = path.client()
    await path.submit(client, "r9")
    accepted = only(client.take(), Accepted)
    assert accepted.job_id == assign.job_id and accepted.duplicate
    await path.from_node("n1", JobResult(assign.job_id, 1, ok=True, output="ok"))
    result = only(client.take(), Result)
    assert result.ok and result.request_id == "r9"

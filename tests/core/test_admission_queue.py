"""The admission queue against simple oracles (hypothesis), plus its rules by example.

- Fairness and order: with every job fitting every node, the queue takes jobs
  exactly as a literal round robin does (per priority, highest first; the
  sessions with jobs waiting take turns; oldest first within a session).
- Indexing: for any mix of job classes, exclusions, removals and nodes,
  `take_for` answers the job a brute-force scan of every waiting job would
  (the best place in line among the jobs the node can serve).
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.admission_queue import AdmissionQueue, Entry, Order
from hub.core.capabilities import NodeCapabilities, Requirements
from hub.core.messages import Pipeline
from hub.core.stages import both_ways

EN_DE = Requirements("en", "de")
ANY = NodeCapabilities(
    language_pairs=frozenset({("en", "de"), ("en", "fr"), ("fr", "en")}),
    asr_languages=frozenset({"en", "fr"}),
    tts_languages=frozenset({"de", "fr", "en"}),
    features=frozenset({"emotion", "speaker"}),
    max_concurrency=4,
)


def take(queue: AdmissionQueue, node_id: str, caps: NodeCapabilities) -> str | None:
    entry = queue.take_for(node_id, caps)
    return None if entry is None else entry.job_id


# --- by example -----------------------------------------------------------------------------


def test_highest_priority_first_then_oldest() -> None:
    queue = AdmissionQueue()
    queue.push("low-1", EN_DE, priority=0, fair_key="a")
    queue.push("high", EN_DE, priority=5, fair_key="a")
    queue.push("low-2", EN_DE, priority=0, fair_key="a")
    taken = [take(queue, "n1", ANY) for _ in range(4)]
    assert taken == ["high", "low-1", "low-2", None]
    assert len(queue) == 0


def test_sessions_take_turns_within_a_priority() -> None:
    queue = AdmissionQueue()
    for i in range(4):
        queue.push(f"a{i}", EN_DE, fair_key="a")  # a's backlog came first
    queue.push("b0", EN_DE, fair_key="b")
    queue.push("b1", EN_DE, fair_key="b")
    taken = [take(queue, "n1", ANY) for _ in range(6)]
    assert taken == ["a0", "b0", "a1", "b1", "a2", "a3"]


def test_a_session_coming_back_joins_the_end_of_the_round() -> None:
    queue = AdmissionQueue()
    for i in range(3):
        queue.push(f"a{i}", EN_DE, fair_key="a")
    queue.push("b0", EN_DE, fair_key="b")
    assert [take(queue, "n1", ANY) for _ in range(3)] == ["a0", "b0", "a1"]
    # b was idle while a waited: it gets its turn after a's current one, no credit.
    queue.push("b1", EN_DE, fair_key="b")
    queue.push("b2", EN_DE, fair_key="b")
    assert [take(queue, "n1", ANY) for _ in range(4)] == ["a2", "b1", "b2", None]


def test_a_freed_node_only_takes_jobs_it_can_serve() -> None:
    queue = AdmissionQueue()
    queue.push("fr", Requirements("en", "fr"), fair_key="a")
    queue.push("emotion", Requirements("en", "de", features=frozenset({"emotion"})), fair_key="a")
    queue.push("plain", EN_DE, fair_key="a")
    de_only = NodeCapabilities(
        language_pairs=frozenset({("en", "de")}), asr_languages=frozenset({"en"}),
        tts_languages=frozenset({"de"}),
    )
    assert take(queue, "n1", de_only) == "plain"  # the older two need what n1 lacks
    assert take(queue, "n1", de_only) is None
    assert take(queue, "n2", ANY) == "fr"
    assert take(queue, "n2", ANY) == "emotion"


def test_an_excluded_node_passes_over_the_job_that_failed_on_it() -> None:
    queue = AdmissionQueue()
    queue.push("failed-on-n1", EN_DE.excluding("n1"), fair_key="a")
    queue.push("fresh", EN_DE, fair_key="a")
    assert take(queue, "n1", ANY) == "fresh"
    assert take(queue, "n1", ANY) is None
    assert take(queue, "n2", ANY) == "failed-on-n1"


def test_a_job_put_back_keeps_its_place() -> None:
    queue = AdmissionQueue()
    order = queue.push("first", EN_DE, fair_key="a")
    queue.push("second", EN_DE, fair_key="a")
    assert take(queue, "n1", ANY) == "first"
    queue.push("first", EN_DE, fair_key="a", order=order)  # its dispatch was refused
    assert take(queue, "n1", ANY) == "first"


def test_removed_jobs_are_never_taken_and_bad_input_is_refused() -> None:
    queue = AdmissionQueue()
    queue.push("gone", EN_DE, fair_key="a")
    queue.push("kept", EN_DE, fair_key="a")
    assert queue.remove("gone") and not queue.remove("gone")
    assert "gone" not in queue and "kept" in queue
    assert take(queue, "n1", ANY) == "kept"
    with pytest.raises(ValueError, match="priority"):
        queue.push("x", EN_DE, priority=10)
    queue.push("x", EN_DE)
    with pytest.raises(ValueError, match="already waiting"):
        queue.push("x", EN_DE)


def test_ten_thousand_waiting_jobs_of_another_class_are_not_a_freed_nodes_business() -> None:
    """With 10,000 jobs n1 cannot serve, n1 gets None, n2 the highest priority (the
    cost is measured in benchmarks/saturation.py, `pick_next_p50_us`)."""
    queue = AdmissionQueue()
    for i in range(10_000):
        queue.push(f"j{i}", Requirements("en", "fr"), priority=i % 10, fair_key=f"s{i % 7}")
    de_only = NodeCapabilities(
        language_pairs=frozenset({("en", "de")}), asr_languages=frozenset({"en"}),
        tts_languages=frozenset({"de"}),
    )
    assert take(queue, "n1", de_only) is None
    taken = take(queue, "n2", ANY)
    assert taken == "j9"  # the oldest of the highest priority
    assert len(queue) == 9_999


# --- against a round robin --------------------------------------------------------------------


class RoundRobin:
    """The literal rule: per priority, sessions with jobs waiting take turns."""

    def __init__(self) -> None:
        self.turns: dict[int, deque[str]] = {}
        self.fifo: dict[tuple[int, str], deque[str]] = {}

    def push(self, job_id: str, priority: int, key: str) -> None:
        jobs = self.fifo.setdefault((priority, key), deque())
        jobs.append(job_id)
        turns = self.turns.setdefault(priority, deque())
        if key not in turns:
            turns.append(key)

    def take(self) -> str | None:
        for priority in sorted(self.turns, reverse=True):
            turns = self.turns[priority]
            if turns:
                key = turns.popleft()
                jobs = self.fifo[(priority, key)]
                job_id = jobs.popleft()
                if jobs:
                    turns.append(key)
                return job_id
        return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(0, 2), st.sampled_from("abcd")),
            st.tuples(st.just("take"), st.just(0), st.just("")),
        ),
        max_size=80,
    )
)
def test_the_order_is_a_round_robin_of_sessions_within_priorities(
    ops: list[tuple[str, int, str]],
) -> None:
    queue = AdmissionQueue()
    oracle = RoundRobin()
    for i, (op, priority, key) in enumerate(ops):
        if op == "push":
            queue.push(f"j{i}", EN_DE, priority=priority, fair_key=key)
            oracle.push(f"j{i}", priority, key)
        else:
            assert take(queue, "n1", ANY) == oracle.take()
    while (expected := oracle.take()) is not None:
        assert take(queue, "n1", ANY) == expected
    assert take(queue, "n1", ANY) is None and len(queue) == 0


def test_a_two_way_job_waits_for_a_node_that_serves_it_both_ways() -> None:
    queue = AdmissionQueue()
    queue.push("two-way", Requirements("en", "fr", directions=both_ways("en", "fr")))
    queue.push("one-way", Requirements("en", "fr"))
    one_way = NodeCapabilities(
        language_pairs=frozenset({("en", "fr")}), asr_languages=frozenset({"en", "fr"}),
        tts_languages=frozenset({"en", "fr"}),
    )
    assert take(queue, "n1", one_way) == "one-way"
    assert take(queue, "n1", one_way) is None
    assert take(queue, "n2", ANY) == "two-way"  # en->fr and fr->en, ASR and TTS of both
    assert len(queue) == 0


def test_one_and_two_way_jobs_of_a_pair_are_classes_of_their_own() -> None:
    queue = AdmissionQueue()
    queue.push("a", Requirements("en", "fr"))
    queue.push("b", Requirements("en", "fr", directions=both_ways("en", "fr")))
    queue.push("c", Requirements("en", "fr", directions=(("en", "fr"),)))
    classes = {entry.job_id: entry.job_class for entry in queue.waiting()}
    assert classes["a"] == classes["c"] != classes["b"]  # "c" states a's one direction


# --- against a brute-force scan ---------------------------------------------------------------

PAIRS = [("en", "de"), ("en", "fr"), ("fr", "en")]
PIPELINES = [
    Pipeline(), Pipeline(asr=False, tts=False), Pipeline(nmt=False, tts=False),
    Pipeline(asr=False, nmt=False), Pipeline(asr=False, nmt=False, tts=False),
]
NODES = ["n0", "n1", "n2", "n3"]

requirements = st.builds(
    lambda pair, pipeline, features, excluded, two_way: Requirements(
        pair[0], pair[1], pipeline, frozenset(features), excluded=frozenset(excluded),
        directions=both_ways(*pair) if two_way else (),
    ),
    st.sampled_from(PAIRS),
    st.sampled_from(PIPELINES),
    st.sets(st.sampled_from(["emotion", "speaker"]), max_size=1),
    st.one_of(st.just(set()), st.sets(st.sampled_from(NODES), max_size=2)),
    st.booleans(),
)
capabilities = st.builds(
    lambda pairs, asr, tts, features: NodeCapabilities(
        language_pairs=frozenset(pairs), asr_languages=frozenset(asr),
        tts_languages=frozenset(tts), features=frozenset(features), max_concurrency=2,
    ),
    st.sets(st.sampled_from(PAIRS)),
    st.sets(st.sampled_from(["en", "fr"])),
    st.sets(st.sampled_from(["de", "fr", "en"])),
    st.sets(st.sampled_from(["emotion", "speaker"])),
)
operation = st.one_of(
    st.tuples(st.just("push"), requirements, st.integers(0, 3), st.sampled_from("abc")),
    st.tuples(st.just("remove"), st.integers(0, 1000), st.just(0), st.just("")),
    st.tuples(st.just("take"), st.sampled_from(NODES), capabilities, st.just("")),
    st.tuples(st.just("requeue"), st.integers(0, 1000), st.just(0), st.just("")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_take_for_answers_what_a_scan_of_every_waiting_job_would(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    queue = AdmissionQueue()
    reqs: dict[str, tuple[Requirements, int, str]] = {}
    taken: dict[str, Order] = {}
    for i, op in enumerate(ops):
        kind = op[0]
        live = sorted(e.job_id for e in queue.waiting())
        if kind == "push":
            _, req, priority, key = op
            queue.push(f"j{i}", req, priority=priority, fair_key=key)
            reqs[f"j{i}"] = (req, priority, key)
        elif kind == "remove" and live:
            assert queue.remove(live[op[1] % len(live)])
        elif kind == "requeue" and taken:
            job_id = sorted(taken)[op[1] % len(taken)]
            order = taken.pop(job_id)
            req, priority, key = reqs[job_id]
            back = queue.push(job_id, req, priority=priority, fair_key=key, order=order)
            # Back in its place: first in its lane, on the turn it was taken on, or on
            # the earlier turn of the job that heads its lane now (it takes that turn).
            assert back.seq == order.seq and back.turn <= order.turn
        elif kind == "take":
            _, node_id, caps, _ = op
            expected = _scan(queue, node_id, caps)
            got = queue.take_for(node_id, caps)
            assert got is expected
            if got is not None:
                taken[got.job_id] = got.order
                assert got.job_id not in queue
        _check_lanes(queue)
    assert len(queue) == len(list(queue.waiting()))


def _scan(queue: AdmissionQueue, node_id: str, caps: NodeCapabilities) -> Entry | None:
    """The brute force: every waiting job the node can serve that is next in its lane
    (or has exclusions: those wait by age alone), the best place in line."""
    fits = [
        entry for entry in queue.waiting()
        if (entry.turn or entry.excluded)
        and node_id not in entry.excluded
        and entry.job_class.served_by(caps)
    ]
    return min(fits, key=lambda e: (e.sort_key, e.seq)) if fits else None


def _check_lanes(queue: AdmissionQueue) -> None:
    """Every lane with jobs has exactly one head, and it is its oldest job (a job put
    back after a refused dispatch counts as older than the rest: it was taken first)."""
    lanes: dict[tuple[object, object], list[Entry]] = {}
    for entry in queue.waiting():
        if not entry.excluded:
            lanes.setdefault((entry.job_class, entry.lane), []).append(entry)
    for entries in lanes.values():
        heads = [e for e in entries if e.turn]
        assert len(heads) == 1, entries

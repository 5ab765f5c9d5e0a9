"""`AdmissionQueue`: the jobs waiting for a free slot, and which one a freed slot takes.

A job waits when every node that could serve it is full (docs/protocol.md,
"Admission queue"). When a slot frees on a node, `take_for(node)` answers the
waiting job that node serves which comes first in this order:

1. the highest `priority` (0..9);
2. within a priority, fair turns: the fairness keys with jobs waiting (the
   client session today, the tenant once authentication lands; one string
   the caller passes) take turns, round robin, so that one backlog does not
   starve another; a key that gets its turn goes to the back of the round,
   a key that starts waiting joins at the back;
3. within a key, the oldest.

Each (class, priority, key) is a FIFO *lane*; only the lanes' heads sit in a
heap, ordered by `(-priority, turn)`, where `turn` is when the lane last
(re)joined the round. With every job fitting every node this is exactly a
round robin (tested against one).

Fast by construction: waiting jobs are grouped by what they need (pipeline,
directions, features: their *class*) and the classes are indexed by the
index ring the selector would search for them (the first enabled stage's,
first direction, global pool; a node's are `snapshot.pool_index_keys`). A
freed node looks only at the classes under ring keys it is a member of,
checks each class's capability fit once, and compares the tops of the
classes' heaps: microseconds with 10,000 jobs waiting. Jobs with hard
exclusions (they failed on some node before) are kept apart in a short list
per class, ordered by age, so that an excluded node never makes a heap scan.

The queue only decides which job goes next; the unified selector still
picks the node for it. Pure: no clock, no I/O; deadlines live with the
caller.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from collections.abc import Iterator
from typing import Final, NamedTuple

from hub.core.capabilities import (
    NodeCapabilities,
    Requirements,
    capability_mismatch,
    checks_of,
    unmet,
)
from hub.core.messages import Pipeline
from hub.core.snapshot import ALL, GLOBAL, index_member, pool_index_keys
from hub.core.stages import STAGES, Direction, IndexKey, enabled

MAX_PRIORITY: Final = 9


class Order(NamedTuple):
    """A job's place in line (its lane's turn, its arrival), kept when it goes back to
    the queue after a refused dispatch."""

    turn: int
    seq: int


class JobClass(NamedTuple):
    """What a waiting job needs of a node; jobs of one class are interchangeable."""

    pipeline: Pipeline
    directions: tuple[Direction, ...]
    features: frozenset[str]

    @classmethod
    def of(cls, req: Requirements) -> JobClass:
        return cls(req.pipeline, req.directions, req.features)

    def ring_key(self) -> IndexKey:
        """The index ring the selector searches for this class (all pools)."""
        stages = enabled(self.pipeline)
        if stages:
            return stages[0].ring_key(GLOBAL, self.directions[0])
        return (ALL, GLOBAL, "", "")

    def served_by(self, caps: NodeCapabilities) -> bool:
        return capability_mismatch(caps, self) is None


LaneKey = tuple[int, str]
"""(priority, fairness key) of a lane within a class."""


class Entry:
    """One waiting job."""

    __slots__ = ("excluded", "job_class", "job_id", "lane", "priority", "seq", "turn")

    def __init__(
        self, job_id: str, job_class: JobClass, excluded: frozenset[str], priority: int,
        lane: LaneKey, seq: int,
    ) -> None:
        self.job_id = job_id
        self.job_class = job_class
        self.excluded = excluded
        self.priority = priority
        self.lane = lane
        self.seq = seq
        self.turn = 0
        """The lane's turn while this entry heads it (0: not the head)."""

    def __repr__(self) -> str:
        return f"Entry({self.job_id!r}, priority={self.priority}, turn={self.turn})"

    @property
    def sort_key(self) -> tuple[int, int]:
        """Where it stands among the jobs a node could take (smaller first)."""
        return (-self.priority, self.turn or self.seq)

    @property
    def order(self) -> Order:
        return Order(self.turn or self.seq, self.seq)


class _ClassQueue:
    """The waiting jobs of one class: lanes with their heads in a heap, plus the
    few with exclusions (by age)."""

    __slots__ = ("checks", "heap", "lanes", "restricted")

    def __init__(self, job_class: JobClass) -> None:
        self.checks = checks_of(job_class.pipeline, job_class.directions)
        """What the class needs of a node's capabilities, made once (`unmet`)."""
        self.lanes: dict[LaneKey, deque[Entry]] = {}
        self.heap: list[tuple[int, int, int, Entry]] = []
        """(-priority, turn, unique, head): valid while the head is live and keeps that turn."""
        self.restricted: list[Entry] = []
        """Jobs with exclusions, by (-priority, age)."""


def _restricted_key(entry: Entry) -> tuple[int, int]:
    return (-entry.priority, entry.seq)


def node_ring_keys(caps: NodeCapabilities) -> int:
    """How many global index rings a node with `caps` is a member of."""
    count = 1
    for stage in STAGES:
        count += len(stage.entries(caps))
    return count


class AdmissionQueue:
    __slots__ = ("_by_key", "_classes", "_live", "_seq")

    def __init__(self) -> None:
        self._live: dict[str, Entry] = {}
        self._classes: dict[JobClass, _ClassQueue] = {}
        self._by_key: dict[IndexKey, set[JobClass]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._live

    def __repr__(self) -> str:
        return f"AdmissionQueue({len(self._live)} waiting, {len(self._classes)} classes)"

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- in and out ----------------------------------------------------------------------

    def push(
        self, job_id: str, req: Requirements, *, priority: int = 0, fair_key: str = "",
        order: Order | None = None,
    ) -> Order:
        """Queue a job; `order` puts it back in the place it had (a refused dispatch:
        first in its lane, with the turn it was taken on).

        Returns the job's place (what `order` takes if it ever comes back)."""
        if job_id in self._live:
            raise ValueError(f"job {job_id} is already waiting")
        if not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be in 0..{MAX_PRIORITY}, not {priority}")
        job_class = JobClass.of(req)
        seq = self._next_seq() if order is None else order.seq
        entry = Entry(job_id, job_class, req.excluded, priority, (priority, fair_key), seq)
        self._live[job_id] = entry
        queue = self._classes.get(job_class)
        if queue is None:
            queue = self._classes[job_class] = _ClassQueue(job_class)
            self._by_key.setdefault(job_class.ring_key(), set()).add(job_class)
        if entry.excluded:
            insort(queue.restricted, entry, key=_restricted_key)
            return entry.order
        lane = queue.lanes.get(entry.lane)
        if lane is None:
            lane = queue.lanes[entry.lane] = deque()
        if order is None:
            lane.append(entry)
            if len(lane) == 1:  # a new lane joins the back of the round
                self._make_head(queue, entry, self._next_seq())
        else:
            head = self._lane_head(lane)
            lane.appendleft(entry)
            if head is None:
                self._make_head(queue, entry, order.turn)
            else:  # it takes the head's turn back
                turn, head.turn = head.turn, 0
                self._make_head(queue, entry, min(turn, order.turn))
        return entry.order

    def remove(self, job_id: str) -> bool:
        """Forget a waiting job (cancelled, timed out, finished); False if it was not."""
        entry = self._live.pop(job_id, None)
        if entry is None:
            return False
        queue = self._classes[entry.job_class]
        if entry.excluded:
            queue.restricted.remove(entry)
        elif entry.turn:
            # The head left: the lane keeps its turn with its next job. Others wait
            # in their lane as they are and are dropped when they reach its front.
            turn, entry.turn = entry.turn, 0
            self._advance(queue, entry.lane, turn)
        return True

    def take_for(self, node_id: str, caps: NodeCapabilities) -> Entry | None:
        """The job a free slot on this node takes next, removed from the queue; None
        when no waiting job fits the node. Its `order` is its place, should it return."""
        entry = self.best_for(node_id, caps)
        if entry is None:
            return None
        order = entry.order
        del self._live[entry.job_id]
        queue = self._classes[entry.job_class]
        if entry.excluded:
            queue.restricted.remove(entry)
        else:
            heapq.heappop(queue.heap)  # `best_for` left it at the top
            entry.turn = 0
            self._advance(queue, entry.lane, self._next_seq())  # to the back of the round
        entry.turn = order.turn  # what `order` tells whoever requeues it
        return entry

    def best_for(self, node_id: str, caps: NodeCapabilities) -> Entry | None:
        """The job `take_for` would take, left in place."""
        best: Entry | None = None
        best_key: tuple[int, int] | None = None
        by_key = self._by_key
        if len(by_key) <= node_ring_keys(caps):
            keys = [key for key in by_key if index_member(caps, key)]
        else:
            keys = [key for key in pool_index_keys(caps, GLOBAL) if key in by_key]
        for key in keys:
            for job_class in list(by_key[key]):
                queue = self._classes[job_class]
                head = self._top(queue)
                if head is None and not queue.restricted:
                    self._drop_class(job_class, key)
                    continue
                if unmet(caps, queue.checks, job_class.features) is not None:
                    continue
                if head is not None:
                    sort_key = head.sort_key
                    if best_key is None or sort_key < best_key:
                        best, best_key = head, sort_key
                for entry in queue.restricted:
                    if node_id not in entry.excluded:
                        sort_key = entry.sort_key
                        if best_key is None or sort_key < best_key:
                            best, best_key = entry, sort_key
                        break  # sorted: the first one the node may take is the best
        return best

    def waiting(self) -> Iterator[Entry]:
        """Every waiting job, in no particular order."""
        return iter(list(self._live.values()))

    # --- internals -------------------------------------------------------------------------

    def _make_head(self, queue: _ClassQueue, entry: Entry, turn: int) -> None:
        entry.turn = turn
        heapq.heappush(queue.heap, (-entry.priority, turn, self._next_seq(), entry))

    def _lane_head(self, lane: deque[Entry]) -> Entry | None:
        """The live front of a lane, dropping the removed ones before it."""
        live = self._live
        while lane:
            entry = lane[0]
            if live.get(entry.job_id) is entry:
                return entry
            lane.popleft()
        return None

    def _advance(self, queue: _ClassQueue, lane_key: LaneKey, turn: int) -> None:
        """The lane's head is gone: its next live job heads it, at `turn`."""
        lane = queue.lanes[lane_key]
        head = self._lane_head(lane)
        if head is None:
            del queue.lanes[lane_key]
        else:
            self._make_head(queue, head, turn)

    def _top(self, queue: _ClassQueue) -> Entry | None:
        heap = queue.heap
        live = self._live
        while heap:
            _, turn, _, entry = heap[0]
            if entry.turn == turn and live.get(entry.job_id) is entry:
                return entry
            heapq.heappop(heap)
        return None

    def _drop_class(self, job_class: JobClass, key: IndexKey) -> None:
        del self._classes[job_class]
        classes = self._by_key[key]
        classes.discard(job_class)
        if not classes:
            del self._by_key[key]


__all__ = ["MAX_PRIORITY", "AdmissionQueue", "Entry", "JobClass", "Order"]

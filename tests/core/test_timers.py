"""`DeadlineQueue`: order, replacement, discard, and a heap that does not keep the dead."""

from __future__ import annotations

from hub.core.timers import COMPACT_MIN, DeadlineQueue


def test_due_items_come_out_in_order() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    assert queue.push(30, "c") is True
    assert queue.push(10, "a") is True
    assert queue.push(20, "b") is False
    assert queue.next_due() == 10
    assert queue.pop_due(25) == ["a", "b"]
    assert len(queue) == 1 and queue.next_due() == 30


def test_a_discarded_item_never_fires() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push(10, "a")
    queue.push(20, "b")
    queue.discard("a")
    queue.discard("missing")  # harmless
    assert len(queue) == 1 and queue.next_due() == 20
    assert queue.pop_due(100) == ["b"]


def test_pushing_a_pending_item_replaces_its_deadline() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push(10, "a")
    queue.push(50, "a")
    assert len(queue) == 1
    assert queue.pop_due(20) == []
    assert queue.pop_due(60) == ["a"]


def test_finished_work_does_not_pile_up_in_the_heap() -> None:
    # A day-long deadline per job, each discarded when its job ends: the heap stays
    # near the live count instead of growing with every job ever seen.
    queue: DeadlineQueue[tuple[str, int]] = DeadlineQueue()
    day_ms = 86_400_000
    for i in range(100_000):
        queue.push(day_ms + i, ("job", i))
        if i >= 10:
            queue.discard(("job", i - 10))
    assert len(queue) == 10
    assert queue.heap_size <= 2 * len(queue) + COMPACT_MIN + 1
    assert queue.pop_due(2 * day_ms) == [("job", i) for i in range(99_990, 100_000)]

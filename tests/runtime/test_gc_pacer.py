"""`GcPacer`: freezes what survived a long full collection, thaws on its interval."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from hub.runtime.gc_pacer import GcPacer, full_collections


class _Session:
    """Stands for a session that leaves a reference cycle when it ends."""

    def __init__(self) -> None:
        self.me = self


@contextmanager
def _started(pacer: GcPacer) -> Iterator[GcPacer]:
    gc.unfreeze()
    pacer.start()
    try:
        yield pacer
    finally:
        pacer.stop()


async def test_freezes_after_a_full_collection_and_thaws() -> None:
    gc.unfreeze()
    try:
        pacer = GcPacer(thaw_s=3600, check_s=0.01)
        pacer.check()
        assert gc.get_freeze_count() == 0 and pacer.freezes == 0  # no collection yet
        before = full_collections()
        gc.collect()
        assert full_collections() == before + 1
        survivor = [object() for _ in range(100)]
        pacer.check()
        assert pacer.freezes == 1 and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        pacer.check()  # no new full collection: nothing more is frozen
        assert pacer.freezes == 1 and gc.get_freeze_count() == frozen
        # A full collection now visits only what was made after the freeze.
        gc.collect()
        assert gc.get_freeze_count() == frozen
        pacer.thaw_s = 0  # the interval is over: everything goes back
        pacer.check()
        assert pacer.thaws == 1 and gc.get_freeze_count() == 0
        assert len(survivor) == 100
    finally:
        gc.unfreeze()


async def test_started_it_freezes_as_each_long_full_collection_ends() -> None:
    gc.unfreeze()
    pacer = GcPacer(thaw_s=3600, check_s=0.01, freeze_after_s=0)  # every one is long
    try:
        pacer.start()
        assert pacer.freezes == 1 and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        made = [[i] for i in range(1000)]  # survivors of the next collection
        gc.collect()
        assert pacer.freezes == 2 and gc.get_freeze_count() >= frozen + len(made)
        gc.collect(1)  # not a full one: no freeze
        assert pacer.freezes == 2
    finally:
        pacer.stop()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert pacer.freezes == 2  # stopped: no hook any more


async def test_run_checks_and_thaws_when_cancelled() -> None:
    gc.unfreeze()
    pacer = GcPacer(thaw_s=3600, check_s=0.01)
    task = asyncio.create_task(pacer.run())
    try:
        gc.collect()
        for _ in range(200):
            if pacer.freezes:
                break
            await asyncio.sleep(0.01)
        assert pacer.freezes >= 1 and gc.get_freeze_count() > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.get_freeze_count() == 0


async def test_a_short_full_collection_freezes_nothing() -> None:
    with _started(GcPacer(thaw_s=3600, check_s=0.01, freeze_after_s=3600)) as pacer:
        frozen = gc.get_freeze_count()
        made = [[i] for i in range(1000)]
        gc.collect()
        assert pacer.freezes == 1 and pacer.skipped == 1
        assert gc.get_freeze_count() == frozen
        pacer.check()  # the hook saw that collection: the check does not freeze either
        assert pacer.freezes == 1 and gc.get_freeze_count() == frozen
        assert len(made) == 1000


async def test_a_cycle_in_flight_during_a_short_collection_is_freed_by_the_next() -> None:
    """Register churn: a full collection every few hundred milliseconds finds a session
    in flight. Frozen, the cycle it leaves when it ends would wait for the thaw."""
    for freeze_after_s, freed in ((3600, True), (0, False)):
        with _started(GcPacer(thaw_s=3600, freeze_after_s=freeze_after_s)):
            session = _Session()
            gone = weakref.ref(session)
            gc.collect()  # while the session is open
            del session  # it ends: only a collection frees its cycle
            gc.collect()
            assert (gone() is None) == freed, freeze_after_s
        gc.collect()  # stopped: thawed, and freed now
        assert gone() is None


async def test_a_long_full_collection_freezes_with_the_default_threshold() -> None:
    with _started(GcPacer(thaw_s=3600)) as pacer:
        gc.disable()  # this collection is the first since start
        try:
            made = [[i] for i in range(500_000)]  # milliseconds to visit on any box
            gc.collect()
        finally:
            gc.enable()
        assert pacer.freezes == 2 and pacer.skipped == 0
        assert gc.get_freeze_count() >= len(made)


async def test_full_collections_stay_small_while_the_heap_grows() -> None:
    """A storm: the heap grows by 600,000 survivors. Each long full collection freezes
    what it found, so no later one visits the whole heap again."""
    visited: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            visited.append(len(gc.get_objects()))  # unfrozen: what this one visits

    grown: list[list[int]] = []
    gc.callbacks.append(count)
    try:
        with _started(GcPacer(thaw_s=3600)) as pacer:
            for i in range(600_000):
                grown.append([i])  # automatic collections, as in a storm
    finally:
        gc.callbacks.remove(count)
    assert len(visited) >= 2 and pacer.freezes >= 2
    # Unpaced, the last full collections visit most of what grew.
    assert max(visited) < 250_000, visited

"""`GcPacer`: freezes what survived a full collection, thaws on its interval."""

from __future__ import annotations

import asyncio
import gc

from hub.runtime.gc_pacer import GcPacer, full_collections


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


async def test_started_it_freezes_as_each_full_collection_ends() -> None:
    gc.unfreeze()
    pacer = GcPacer(thaw_s=3600, check_s=0.01)
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

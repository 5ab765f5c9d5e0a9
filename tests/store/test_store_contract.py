"""The `Store` contract, written once for every backend.

Each test gets `stores`, a factory of started stores that share one backend
(`await stores("hub-a")`, `await stores("hub-b")`: two hubs' views of the same
shared state), and `store` (the view of hub "hub-a"). Backends are the params
of `backend`; adding one (Redis) means adding one entry to `BACKENDS`: an async
context manager that yields a `make(hub_id) -> Store` for one isolated,
empty shared state.

TTL tests use short TTLs and poll the condition with a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from hub.store.base import Binding, InboxLocked, OwnershipConflict, RecordBatch, Store, stream_id
from hub.store.memory import MemoryBackplane, MemoryStore
from hub.store.redis import RedisStore

LONG_MS = 60_000
SHORT_MS = 50
WAIT_S = 5.0

MakeStore = Callable[..., Awaitable[Store]]
"""`make(hub_id, **options)`: options are the backends' common keywords (`boot`,
`hub_timeout_ms`)."""


@contextlib.asynccontextmanager
async def memory_backend() -> AsyncIterator[MakeStore]:
    plane = MemoryBackplane()

    async def make(hub_id: str, **options: Any) -> Store:
        return MemoryStore(hub_id=hub_id, backplane=plane, **options)

    yield make


@contextlib.asynccontextmanager
async def redis_backend(url: str) -> AsyncIterator[MakeStore]:
    # A fresh key prefix is a fresh, empty shared state on the session's redis-server.
    prefix = f"contract-{uuid.uuid4().hex[:10]}"

    async def make(hub_id: str, **options: Any) -> Store:
        return RedisStore(hub_id=hub_id, url=url, prefix=prefix, **options)

    yield make


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[MakeStore]]] = {
    "memory": lambda request: memory_backend(),
    "redis": lambda request: redis_backend(request.getfixturevalue("redis_server").url),
}


@pytest.fixture(params=sorted(BACKENDS))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    opened: list[Store] = []
    async with BACKENDS[request.param](request) as make:

        async def started(hub_id: str, **options: Any) -> Store:
            store = await make(hub_id, **options)
            await store.start()
            opened.append(store)
            return store

        yield started
        for store in reversed(opened):
            await store.aclose()


@pytest.fixture
async def store(stores: MakeStore) -> Store:
    return await stores("hub-a")


async def eventually(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `cond` until true; fail after WAIT_S (TTL expiry is lazy or server-side)."""
    deadline = time.monotonic() + WAIT_S
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- idempotency -------------------------------------------------------------------------


async def test_bind_request_first_wins(store: Store, stores: MakeStore) -> None:
    assert await store.bind_request("req", "job-1", LONG_MS) is None
    assert await store.bind_request("req", "job-2", LONG_MS) == "job-1"
    other = await stores("hub-b")
    assert await other.bind_request("req", "job-3", LONG_MS) == "job-1"
    assert await other.bind_request("req-2", "job-4", LONG_MS) is None


async def test_bind_request_is_atomic_under_concurrency(stores: MakeStore) -> None:
    views = [await stores(f"hub-{i}") for i in range(4)]
    answers = await asyncio.gather(
        *(views[i % 4].bind_request("contended", f"job-{i}", LONG_MS) for i in range(40))
    )
    winners = [f"job-{i}" for i, answer in enumerate(answers) if answer is None]
    assert len(winners) == 1
    assert all(answer == winners[0] for answer in answers if answer is not None)


async def test_bind_request_expires(store: Store) -> None:
    assert await store.bind_request("req", "job-1", SHORT_MS) is None

    async def rebound() -> bool:
        return await store.bind_request("req", "job-2", LONG_MS) is None

    await eventually(rebound, "the binding to expire")
    assert await store.bind_request("req", "job-3", LONG_MS) == "job-2"


async def test_release_request_only_when_matching(store: Store) -> None:
    await store.bind_request("req", "job-1", LONG_MS)
    await store.release_request("req", "job-other")
    assert await store.bind_request("req", "job-2", LONG_MS) == "job-1"
    await store.release_request("req", "job-1")
    assert await store.bind_request("req", "job-2", LONG_MS) is None
    await store.release_request("never-bound", "job-x")  # harmless


async def test_bind_requests_sends_only_what_it_binds(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    assert await store.bind_request("taken", "job-0", LONG_MS) is None
    bound = await store.bind_requests([
        Binding("fresh-1", "job-1", LONG_MS, send_to="hub-b", envelope=b"dispatch-1"),
        Binding("taken", "job-2", LONG_MS, send_to="hub-b", envelope=b"dispatch-2"),
        Binding("fresh-2", "job-3", LONG_MS),
        Binding("fresh-3", "job-4", LONG_MS, send_to="hub-b", envelope=b"dispatch-4"),
        Binding("fresh-1", "job-5", LONG_MS, send_to="hub-b", envelope=b"dispatch-5"),
    ])
    assert bound == [None, "job-0", None, None, "job-1"]
    entries = await other.read_inbox(block_ms=1000, count=10)
    # Only the bindings made sent their envelope, in order.
    assert [envelope for _, envelope in entries] == [b"dispatch-1", b"dispatch-4"]
    assert await store.bind_request("fresh-2", "job-x", LONG_MS) == "job-3"


async def test_read_inbox_acknowledges_with_the_read(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.send_many([("hub-b", b"one"), ("hub-b", b"two")])
    first = await other.read_inbox(block_ms=1000, count=1)
    assert [envelope for _, envelope in first] == [b"one"]
    second = await other.read_inbox(block_ms=1000, count=1, ack=[first[0][0]])
    assert [envelope for _, envelope in second] == [b"two"]
    # "one" was acknowledged by the second read; "two" was not: only it is claimable.
    claimed = await store.claim_inbox("hub-b", count=10)
    assert [envelope for _, envelope in claimed] == [b"two"]


async def test_read_inbox_writes_records_with_the_read(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.send_many([("hub-b", b"result-1"), ("hub-b", b"result-2")])
    first = await other.read_inbox(block_ms=1000, count=1)
    records = RecordBatch([("job-1", b'{"done":1}')], LONG_MS)
    second = await other.read_inbox(block_ms=1000, count=1, ack=[first[0][0]], records=records)
    assert [envelope for _, envelope in second] == [b"result-2"]
    assert records.saved
    assert await store.load_job("job-1") == b'{"done":1}'
    # With nothing to read, the records and the acknowledgement still go (after the wait).
    idle = RecordBatch([("job-2", b'{"done":2}')], LONG_MS)
    assert await other.read_inbox(block_ms=20, count=1, ack=[second[0][0]], records=idle) == []
    assert idle.saved
    assert await store.load_job("job-2") == b'{"done":2}'
    assert await store.claim_inbox("hub-b", count=10) == []  # both acknowledged


async def test_rebind_request(store: Store) -> None:
    await store.bind_request("req", "job-1", LONG_MS)
    assert not await store.rebind_request("req", "job-other", "job-2", LONG_MS)
    assert await store.bind_request("req", "job-x", LONG_MS) == "job-1"
    assert await store.rebind_request("req", "job-1", "job-2", LONG_MS)
    assert await store.bind_request("req", "job-x", LONG_MS) == "job-2"
    assert not await store.rebind_request("unbound", "job-1", "job-2", LONG_MS)


async def test_a_request_id_is_scoped_to_its_tenant(store: Store, stores: MakeStore) -> None:
    # The same request_id in two tenants is two bindings, on every hub.
    other = await stores("hub-b")
    assert await store.bind_request("req", "job-a", LONG_MS, tenant="acme") is None
    assert await store.bind_request("req", "job-b", LONG_MS, tenant="globex") is None
    assert await other.bind_request("req", "job-x", LONG_MS, tenant="acme") == "job-a"
    assert await other.bind_request("req", "job-y", LONG_MS, tenant="globex") == "job-b"
    assert await store.bind_request("req", "job-d", LONG_MS) is None  # the default tenant
    bound = await store.bind_requests([
        Binding("req", "job-z", LONG_MS, tenant="acme"), Binding("req2", "job-2", LONG_MS,
                                                                 tenant="acme"),
    ])
    assert bound == ["job-a", None]
    # Release and rebind touch only their own tenant's binding.
    await store.release_request("req", "job-a", tenant="globex")  # not globex's job: kept
    assert await store.bind_request("req", "job-q", LONG_MS, tenant="globex") == "job-b"
    await store.release_request("req", "job-a", tenant="acme")
    assert await store.bind_request("req", "job-a2", LONG_MS, tenant="acme") is None
    assert not await store.rebind_request("req", "job-b", "job-c", LONG_MS, tenant="acme")
    assert await store.rebind_request("req", "job-b", "job-c", LONG_MS, tenant="globex")
    assert await other.bind_request("req", "job-w", LONG_MS, tenant="globex") == "job-c"
    assert await other.bind_request("req", "job-w", LONG_MS, tenant="acme") == "job-a2"


# --- job records -------------------------------------------------------------------------


async def test_save_and_load_job(store: Store, stores: MakeStore) -> None:
    assert await store.load_job("job-1") is None
    await store.save_job("job-1", b'{"ok":true}', LONG_MS)
    assert await store.load_job("job-1") == b'{"ok":true}'
    other = await stores("hub-b")
    assert await other.load_job("job-1") == b'{"ok":true}'
    await store.save_job("job-1", b"v2", LONG_MS)
    assert await other.load_job("job-1") == b"v2"


async def test_saved_job_expires(store: Store) -> None:
    await store.save_job("job-1", b"x", SHORT_MS)

    async def gone() -> bool:
        return await store.load_job("job-1") is None

    await eventually(gone, "the job record to expire")


# --- published nodes------------------------------------------------------------------------


async def test_publish_remove_and_read_node_entries(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    await store.publish_node("n1", b"entry-1", LONG_MS)
    await other.publish_node("n2", b"entry-2", LONG_MS)
    assert await store.node_entries() == {"n1": b"entry-1", "n2": b"entry-2"}
    assert await other.node_entries() == {"n1": b"entry-1", "n2": b"entry-2"}
    await store.publish_node("n1", b"entry-1b", LONG_MS)
    await store.remove_node("n9")  # unknown: harmless
    await other.remove_node("n2")
    assert await store.node_entries() == {"n1": b"entry-1b"}


async def test_publish_nodes_in_one_call(
    store: Store, stores: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removals first, then entries; batches larger than one script call are split."""
    from hub.store import redis as redis_store

    monkeypatch.setattr(redis_store, "PUBLISH_BATCH", 7)
    await store.announce(LONG_MS)
    await store.publish_nodes([(f"n{i}", b"e%d" % i) for i in range(20)], [], LONG_MS)
    assert await store.node_entries() == {f"n{i}": b"e%d" % i for i in range(20)}
    await store.publish_nodes(
        [("n3", b"again"), ("new", b"x")], [f"n{i}" for i in range(15)] + ["unknown"], LONG_MS
    )
    expected = {f"n{i}": b"e%d" % i for i in range(15, 20)} | {"n3": b"again", "new": b"x"}
    assert await store.node_entries() == expected
    await store.publish_nodes([], [], LONG_MS)  # nothing: harmless
    assert await store.node_entries() == expected


async def test_node_entries_omit_hubs_whose_presence_lapsed(
    store: Store, stores: MakeStore
) -> None:
    short = await stores("hub-short")
    await store.announce(LONG_MS)
    await short.announce(SHORT_MS)
    await store.publish_node("n1", b"a", LONG_MS)
    await short.publish_node("n2", b"b", LONG_MS)

    async def lapsed() -> bool:
        return await store.node_entries() == {"n1": b"a"}

    await eventually(lapsed, "hub-short's entries to drop out")


async def test_fleet_updates_reach_every_subscriber(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def listen(s: Store) -> None:
        async for update in s.fleet_updates():
            got.put_nowait(update)

    tasks = [asyncio.create_task(listen(s)) for s in (store, other)]
    try:
        # Pub/sub is at most once and subscribing takes a moment: publish until heard.
        seen: set[bytes] = set()
        deadline = time.monotonic() + WAIT_S
        n = 0
        while len(seen) < 2:
            assert time.monotonic() < deadline, "no fleet update arrived"
            n += 1
            await store.publish_fleet_update(b"update-%d" % n)
            with contextlib.suppress(TimeoutError):
                seen.add(await asyncio.wait_for(got.get(), 0.05))
                while not got.empty():
                    seen.add(got.get_nowait())
            if len(seen) >= 2:
                break
        assert all(u.startswith(b"update-") for u in seen)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- presence ----------------------------------------------------------------------------


async def test_announce_and_live_hubs(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    assert "hub-a" in await other.live_hubs()
    await other.announce(SHORT_MS)
    assert {"hub-a", "hub-b"} <= await other.known_hubs()

    async def lapsed() -> bool:
        return "hub-b" not in await store.live_hubs()

    await eventually(lapsed, "hub-b's presence to lapse")
    assert "hub-a" in await store.live_hubs()
    assert "hub-b" in await store.known_hubs()  # known until dropped
    await store.drop_hub("hub-b")
    assert "hub-b" not in await store.known_hubs()
    await other.announce(LONG_MS)  # a hub that comes back is live again
    assert "hub-b" in await store.live_hubs()


# --- node ownership ----------------------------------------------------------------------


async def test_claim_node_conflict_renew_take_over_release(
    store: Store, stores: MakeStore
) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    epoch = await store.claim_node("n1", LONG_MS)
    assert await store.node_owner("n1") == ("hub-a", epoch)
    with pytest.raises(OwnershipConflict) as info:
        await other.claim_node("n1", LONG_MS)
    assert info.value.owner == "hub-a" and info.value.node_id == "n1"
    assert await store.claim_node("n1", LONG_MS) == epoch  # renewing keeps the epoch
    taken = await other.claim_node("n1", LONG_MS, take_over=True)
    assert taken > epoch
    assert await store.node_owner("n1") == ("hub-b", taken)
    with pytest.raises(OwnershipConflict):
        await store.claim_node("n1", LONG_MS)
    await store.release_node("n1", epoch)  # stale epoch, not the owner: no effect
    assert await other.node_owner("n1") == ("hub-b", taken)
    await other.release_node("n1", taken)
    assert await store.node_owner("n1") is None
    again = await store.claim_node("n1", LONG_MS)
    assert again > taken  # epochs never go back
    assert await store.node_owner("n9") is None


async def test_claim_node_after_the_lease_lapses(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    epoch = await store.claim_node("n1", SHORT_MS)

    async def free() -> bool:
        return await store.node_owner("n1") is None

    await eventually(free, "the lease to lapse")
    assert await other.claim_node("n1", LONG_MS) > epoch


async def test_claim_node_of_a_dead_hub(store: Store, stores: MakeStore) -> None:
    dying = await stores("hub-dying")
    await store.announce(LONG_MS)
    await dying.announce(SHORT_MS)
    epoch = await dying.claim_node("n1", LONG_MS)

    async def dead() -> bool:
        return "hub-dying" not in await store.live_hubs()

    await eventually(dead, "hub-dying's presence to lapse")
    assert await store.claim_node("n1", LONG_MS) > epoch


async def test_claim_nodes_in_one_call(store: Store, stores: MakeStore) -> None:
    """Several claims in one call: each as `claim_node` would answer, a conflict
    reported in place (not raised), renewals keeping their epoch."""
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    theirs = await other.claim_node("n2", LONG_MS)
    claims = await store.claim_nodes(["n1", "n2", "n3"], LONG_MS)
    assert [owner for _, owner in claims] == [store.hub_id, "hub-b", store.hub_id]
    (e1, _), (conflict, _), (e3, _) = claims
    assert e1 > 0 and e3 > 0 and conflict == -1
    assert theirs > 0
    again = await store.claim_nodes(["n3", "n1"], LONG_MS)
    assert again == [(e3, store.hub_id), (e1, store.hub_id)]
    assert await store.claim_nodes([], LONG_MS) == []


# --- inboxes -----------------------------------------------------------------------------


async def test_send_read_ack(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    assert await other.read_inbox(block_ms=SHORT_MS, count=10) == []
    await store.send_to_hub("hub-b", b"one")
    await store.send_many([("hub-b", b"two"), ("hub-a", b"to-self"), ("hub-b", b"three")])
    entries = list(await other.read_inbox(block_ms=1000, count=10))
    assert [env for _, env in entries] == [b"one", b"two", b"three"]
    assert len({entry_id for entry_id, _ in entries}) == 3
    mine = await store.read_inbox(block_ms=1000, count=10)
    assert [env for _, env in mine] == [b"to-self"]
    # Read entries are not delivered again to the reader.
    assert await other.read_inbox(block_ms=SHORT_MS, count=10) == []
    await other.ack_inbox([entries[0][0], entries[1][0]])
    # The unacknowledged entry can be claimed by another hub (hub-b died).
    claimed = await store.claim_inbox("hub-b", count=10)
    assert [env for _, env in claimed] == [b"three"]
    await store.ack_inbox([claimed[0][0]], hub_id="hub-b")
    assert list(await store.claim_inbox("hub-b", count=10)) == []


async def test_read_inbox_respects_count_and_blocks(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.send_many([("hub-b", b"%d" % i) for i in range(5)])
    first = await other.read_inbox(block_ms=1000, count=2)
    rest = await other.read_inbox(block_ms=1000, count=10)
    assert [e for _, e in first] + [e for _, e in rest] == [b"0", b"1", b"2", b"3", b"4"]
    # A blocked read returns as soon as something arrives.
    reader = asyncio.create_task(other.read_inbox(block_ms=int(WAIT_S * 1000), count=10))
    await asyncio.sleep(0.05)  # let the read block first (it must not return empty early)
    assert not reader.done()
    await store.send_to_hub("hub-b", b"late")
    got = await asyncio.wait_for(reader, WAIT_S)
    assert [e for _, e in got] == [b"late"]


async def test_claim_inbox_takes_unread_entries_and_dead_letter(
    store: Store, stores: MakeStore
) -> None:
    await store.send_many([("hub-gone", b"a"), ("hub-gone", b"b")])
    claimed = list(await store.claim_inbox("hub-gone", count=1))
    assert [e for _, e in claimed] == [b"a"]
    # Claimed but unacknowledged entries are claimable again (the claimer may die too).
    claimed = list(await store.claim_inbox("hub-gone", count=10))
    assert sorted(e for _, e in claimed) == [b"a", b"b"]
    await store.dead_letter("hub-gone", claimed[0][0], claimed[0][1], "undecodable")
    await store.ack_inbox([claimed[1][0]], hub_id="hub-gone")
    assert list(await store.claim_inbox("hub-gone", count=10)) == []



async def test_renew_nodes_reports_the_nodes_taken_over(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    await store.claim_node("n1", LONG_MS)
    await store.claim_node("n2", LONG_MS)
    assert await store.renew_nodes(["n1", "n2"], LONG_MS) == []
    await other.claim_node("n2", LONG_MS, take_over=True)
    assert await store.renew_nodes(["n1", "n2"], LONG_MS) == ["n2"]
    assert await store.node_owner("n2") == ("hub-b", (await other.node_owner("n2") or ("", 0))[1])


async def test_claim_inbox_pages_past_one_batch_and_locks_out_other_reapers(
    store: Store, stores: MakeStore
) -> None:
    dead = await stores("hub-dead")
    rival = await stores("hub-c")
    await store.send_many([("hub-dead", f"e{i}".encode()) for i in range(600)])
    first = list(await dead.read_inbox(block_ms=1000, count=300))  # read, never acknowledged
    assert len(first) == 300
    seen: list[bytes] = []
    after = "0-0"
    while batch := await store.claim_inbox("hub-dead", count=256, after=after):
        seen.extend(envelope for _, envelope in batch)
        after = max((entry_id for entry_id, _ in batch), key=stream_id)
    # Every entry once, in order: the 300 read and unacknowledged, then the 300 unread.
    assert seen == [f"e{i}".encode() for i in range(600)]
    # Another hub finds the inbox being drained: it must not take or drop it.
    with pytest.raises(InboxLocked):
        await rival.claim_inbox("hub-dead", count=10)
    with pytest.raises(InboxLocked):
        await rival.drop_hub("hub-dead", upto=after)
    # An entry that arrives after the drain keeps the hub from being dropped.
    await rival.send_to_hub("hub-dead", b"late")
    assert not await store.drop_hub("hub-dead", upto=after)
    late = await store.claim_inbox("hub-dead", count=10, after=after)
    assert [envelope for _, envelope in late] == [b"late"]
    assert await store.drop_hub("hub-dead", upto=late[0][0])
    assert await store.claim_inbox("hub-dead", count=10) == []


async def test_renew_claims_gives_the_epoch_a_lapsed_lease_was_claimed_with(
    store: Store, stores: MakeStore
) -> None:
    other = await stores("hub-b")
    await store.announce(LONG_MS)
    await other.announce(LONG_MS)
    first = await store.claim_node("n1", SHORT_MS)

    async def lapsed() -> bool:
        return await store.node_owner("n1") is None

    await eventually(lapsed, "the lease to lapse")
    claims = await store.renew_claims(["n1"], LONG_MS)
    assert claims["n1"] is not None and claims["n1"] > first
    await store.release_node("n1", claims["n1"])
    assert await other.claim_node("n1", LONG_MS) > claims["n1"]  # released: no conflict
    assert await store.renew_claims(["n1"], LONG_MS) == {"n1": None}


async def test_beats_report_every_hub_with_its_boot(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b", boot="b-boot-1")
    await other.beat()
    beats = await store.beat()
    assert beats["hub-a"].boot == store.boot and beats["hub-a"].age_ms < 1000
    assert beats["hub-b"] == (beats["hub-b"].age_ms, "b-boot-1")


async def test_a_node_is_not_held_by_an_owner_that_restarted_or_stopped_answering(
    store: Store, stores: MakeStore
) -> None:
    other = await stores("hub-b", hub_timeout_ms=300)
    for s in (store, other):
        await s.announce(LONG_MS)
        await s.beat()
    first = await store.claim_node("n1", LONG_MS)
    with pytest.raises(OwnershipConflict):
        await other.claim_node("n1", LONG_MS)
    # hub-a restarts under its id: the new run does not hold the old run's node...
    restarted = await stores("hub-a")
    await restarted.announce(LONG_MS)
    await restarted.beat()
    taken = await other.claim_node("n1", LONG_MS)
    assert taken > first
    # ...and a restarted hub may claim what its previous run held.
    await store.claim_node("n2", LONG_MS)
    assert await restarted.claim_node("n2", LONG_MS) > 0
    # An owner whose beats stopped for longer than hub_timeout_ms loses its nodes to the
    # hub they reconnect to, although its presence has not lapsed.
    await other.claim_node("n3", LONG_MS)
    with pytest.raises(OwnershipConflict):
        await restarted.claim_node("n3", LONG_MS)
    lenient = await stores("hub-c", hub_timeout_ms=200)
    await lenient.announce(LONG_MS)

    async def other_silent() -> bool:
        return (await lenient.beat())["hub-b"].age_ms > 250

    await eventually(other_silent, "hub-b's beats to age")
    assert await lenient.claim_node("n3", LONG_MS) > 0


async def test_pending_inbox_gives_what_this_hub_read_and_never_acknowledged(
    store: Store, stores: MakeStore
) -> None:
    sender = await stores("hub-b")
    await sender.send_many([("hub-a", f"e{i}".encode()) for i in range(5)])
    read = list(await store.read_inbox(block_ms=1000, count=3))
    await store.ack_inbox([read[0][0]])
    # A new run of this hub id (same consumer): the two read and not acknowledged.
    again = await stores("hub-a")
    pending = list(await again.pending_inbox(count=10))
    assert [e for _, e in pending] == [b"e1", b"e2"]
    assert [e for _, e in await again.pending_inbox(count=10, after=pending[0][0])] == [b"e2"]
    await again.ack_inbox([entry_id for entry_id, _ in pending])
    assert list(await again.pending_inbox(count=10)) == []
    unread = await again.read_inbox(block_ms=1000, count=10)
    assert [e for _, e in unread] == [b"e3", b"e4"]


async def test_clear_nodes_withdraws_this_hubs_entries(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    for s in (store, other):
        await s.announce(LONG_MS)
    await store.publish_node("n1", b"entry-1", LONG_MS)
    await other.publish_node("n2", b"entry-2", LONG_MS)
    await store.clear_nodes()
    assert await other.node_entries() == {"n2": b"entry-2"}


# --- live sessions and rooms -------------------------------------------------------------


async def test_live_records_and_utterance_payloads(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    await store.save_live("acme", "s1", b"rec-1", 60_000)
    await store.save_live("acme", "s1", b"rec-2", 60_000, utterance=(0, b"audio-0", 60_000))
    assert await other.load_live("acme", "s1") == b"rec-2"  # any hub reads it
    assert await other.load_live("globex", "s1") is None  # scoped to the tenant
    assert await other.load_utterance("acme", "s1", 0) == b"audio-0"
    assert await other.load_utterance("acme", "s1", 1) is None
    await other.drop_utterance("acme", "s1", 0)
    assert await store.load_utterance("acme", "s1", 0) is None
    await store.save_live("acme", "s1:x", b"other", 60_000, utterance=(0, b"a", 60_000))
    assert await store.load_utterance("acme", "s1", 0) is None  # ids never collide


async def test_rooms_hold_their_members_up_to_the_limit(store: Store, stores: MakeStore) -> None:
    other = await stores("hub-b")
    assert await store.room_join("acme", "r", "a/1", b"A", max_members=2, ttl_ms=60_000) == {
        "a/1": b"A"
    }
    joined = await other.room_join("acme", "r", "b/1", b"B", max_members=2, ttl_ms=60_000)
    assert joined == {"a/1": b"A", "b/1": b"B"}
    assert await store.room_join("acme", "r", "c/1", b"C", max_members=2, ttl_ms=60_000) is None
    # A member joining again (another language) is updated, not counted twice.
    again = await store.room_join("acme", "r", "a/1", b"A2", max_members=2, ttl_ms=60_000)
    assert again == {"a/1": b"A2", "b/1": b"B"}
    assert await other.room_members("globex", "r") == {}
    await other.room_leave("acme", "r", ["a/1", "b/1"])
    assert await store.room_members("acme", "r") == {}
    assert await store.room_join("acme", "r", "c/1", b"C", max_members=1, ttl_ms=60_000) == {
        "c/1": b"C"
    }

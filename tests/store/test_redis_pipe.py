"""`RespPipe` and the Redis store's hot path on a real `redis-server`: ordering,
error replies, lost connections and a Redis that forgot its scripts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from hub.core.errors import StoreUnavailable
from hub.store.base import Binding, RecordBatch
from hub.store.keys import CONSUMER_GROUP
from hub.store.redis import RedisStore
from hub.store.resp import RespPipe
from tests.support.redis_server import RedisServer

LONG_MS = 60_000


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client, to look at and to disturb the server."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix: a fresh, empty shared state on the session's server."""
    return f"pipe-{uuid.uuid4().hex}"


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    """Hub "pipe-a"'s started store."""
    started = RedisStore(hub_id="pipe-a", url=redis_server.url, prefix=prefix)
    await started.start()
    yield started
    await started.aclose()


async def test_replies_come_back_in_order_and_errors_stay_with_their_command(
    redis_server: RedisServer,
) -> None:
    pipe = await RespPipe.open_url(redis_server.url, timeout_s=2.0)
    key = f"pipe-{uuid.uuid4().hex}"
    try:
        # One loop turn: every command goes out before any reply is awaited.
        replies = [pipe.call("INCR", key) for _ in range(50)]
        bad = pipe.call("LPUSH", key, "x")  # wrong type: an error reply
        after = pipe.call("GET", key)
        assert await asyncio.gather(*replies) == list(range(1, 51))
        with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
            await bad
        assert await after == b"50"
    finally:
        pipe.close()


async def test_a_killed_connection_fails_its_commands_then_the_store_reconnects(
    redis_server: RedisServer, prefix: str, store: RedisStore, admin: aioredis.Redis
) -> None:
    await store.send_many([("pipe-b", b"before")])
    await admin.client_kill_filter(_type="normal", skipme=True)
    # A command may race the kill and fail, with the store's own error...
    failures = 0
    for _ in range(3):
        try:
            await store.send_many([("pipe-b", b"after")])
            break
        except StoreUnavailable:
            failures += 1
    # ...but the next one opens a fresh connection and goes through.
    assert failures <= 1
    reader = RedisStore(hub_id="pipe-b", url=redis_server.url, prefix=prefix)
    await reader.start()
    try:
        entries = await reader.read_inbox(block_ms=1000, count=10)
        assert [envelope for _, envelope in entries][-1] == b"after"
    finally:
        await reader.aclose()


async def test_scripts_are_loaded_again_when_redis_forgot_them(
    store: RedisStore, admin: aioredis.Redis
) -> None:
    assert await store.bind_request("r1", "j1", LONG_MS) is None
    await admin.script_flush()  # as after a Redis restart
    bound = await store.bind_requests(
        [Binding("r1", "j2", LONG_MS), Binding("r2", "j3", LONG_MS, "pipe-b", b"go")]
    )
    assert bound == ["j1", None]
    await admin.script_flush()
    await store.send_many([("pipe-b", b"again")])
    assert await admin.xlen(store.keys.inbox("pipe-b")) == 2


async def test_records_riding_with_a_read_are_left_unsaved_when_redis_forgot_the_script(
    store: RedisStore, admin: aioredis.Redis
) -> None:
    await store.send_many([("pipe-a", b"one"), ("pipe-a", b"two")])
    first = await store.read_inbox(block_ms=1000, count=1)
    await admin.script_flush()  # as after a Redis restart
    records = RecordBatch([("job-1", b"record")], LONG_MS)
    second = await store.read_inbox(
        block_ms=1000, count=1, ack=[first[0][0]], records=records
    )
    # The read and the acknowledgement stand; the records are for the archive
    # to write again (its own write falls back to EVAL).
    assert [envelope for _, envelope in second] == [b"two"]
    assert not records.saved
    assert await store.load_job("job-1") is None
    pending = await admin.xpending(store.keys.inbox("pipe-a"), CONSUMER_GROUP)
    assert pending["pending"] == 1  # "two" only: "one" was acknowledged
    await store.save_jobs(records.items, LONG_MS)
    assert await store.load_job("job-1") == b"record"


async def test_a_reply_that_never_comes_fails_the_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    pipe = await RespPipe.open_url(redis_server.url, timeout_s=2.0)
    try:
        # Redis holds every client's commands (ours too) for 1.5 s; the watchdog gives up
        # on the overdue reply (0.2 s) well before that, and fails every waiting command.
        await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        late = pipe.call("PING", timeout_s=0.2)
        queued = pipe.call("PING")
        with pytest.raises(ConnectionError, match="no reply"):
            await asyncio.wait_for(late, timeout=2.0)
        with pytest.raises(ConnectionError):
            await queued
        assert pipe.closed
        with pytest.raises(ConnectionError):
            await pipe.call("PING")  # a failed pipe refuses at once: open another
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        pipe.close()


async def test_the_url_s_user_password_and_database_are_honoured(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    user = f"pipe-{uuid.uuid4().hex[:8]}"
    key = f"pipe-{uuid.uuid4().hex}"
    await admin.execute_command("ACL", "SETUSER", user, "on", ">s3cret", "~*", "+@all")
    host_port = redis_server.url.split("//", 1)[1].split("/", 1)[0]
    try:
        pipe = await RespPipe.open_url(f"redis://{user}:s3cret@{host_port}/3", timeout_s=2.0)
        try:
            assert await pipe.call("ACL", "WHOAMI") == user.encode()
            await pipe.call("SET", key, "in-db-3")
        finally:
            pipe.close()
        db3 = aioredis.Redis.from_url(f"redis://{host_port}/3")
        try:
            assert await db3.get(key) == b"in-db-3"
        finally:
            await db3.delete(key)
            await db3.aclose()
        assert await admin.get(key) is None  # not in db 0
        with pytest.raises(redis_errors.ResponseError):
            await RespPipe.open_url(f"redis://{user}:wrong@{host_port}/0", timeout_s=2.0)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)

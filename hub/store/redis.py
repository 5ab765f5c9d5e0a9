"""`RedisStore`: the cross-instance backend (with `resp.py` and `replies.py`, the only
modules importing redis).

Every check-then-write is one Lua script (hub/store/scripts.py, each with a
header saying KEYS, ARGV and what it returns), so ownership and idempotency
are decided atomically inside Redis, never read-then-write from a hub. Every
key is built by `hub.store.keys.Keys` and gets its TTL from the command that
writes it. Redis errors are translated at this boundary (`replies.translated`)
into `StoreUnavailable`, whose message says what could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from hub.core.errors import StoreUnavailable
from hub.core.principal import DEFAULT_TENANT
from hub.core.redact import redact_url
from hub.store.base import (
    Binding,
    HubBeat,
    InboxLocked,
    OwnershipConflict,
    RecordBatch,
    new_boot,
    stream_id,
)
from hub.store.connector import RedisConnector
from hub.store.keys import (
    CONSUMER_GROUP,
    DEAD_LETTER_MAXLEN,
    DEAD_LETTER_TTL_MS,
    HUBS_TTL_MS,
    INBOX_MAXLEN,
    INBOX_TTL_MS,
    REAPER_LOCK_TTL_MS,
    Keys,
)
from hub.store.meter import StoreMeter
from hub.store.replies import UNAVAILABLE, entries, settle, text, translated
from hub.store.resp import RespPipe
from hub.store.scripts import (
    ANNOUNCE,
    BEAT,
    BIND_MANY,
    CLAIM_MANY,
    DEAD_LETTER,
    DROP_HUB,
    LIVE_HUBS,
    PUBLISH_NODE,
    PUBLISH_NODES,
    REBIND_REQUEST,
    RELEASE_NODE,
    RELEASE_REQUEST,
    ROOM_JOIN,
    SAVE_MANY,
    SEND_MANY,
)

RENEW_BATCH = 500
"""Node claims (registrations, lease renewals) per script call."""
PUBLISH_BATCH = 1000
"""Node entries (and removals) per `PUBLISH_NODES` call."""

CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 10.0
HUB_TIMEOUT_MS = 3_000
"""`hub_timeout_ms`'s default."""

class RedisStore:
    """The `Store` of cross-instance mode (see hub/store/base.py for the contract)."""

    waits = True

    def __init__(
        self, *, hub_id: str, url: str, prefix: str, meter: StoreMeter | None = None,
        boot: str | None = None, reply_timeout_s: float = REPLY_TIMEOUT_S,
        hub_timeout_ms: int = HUB_TIMEOUT_MS,
    ) -> None:
        self.hub_id = hub_id
        self.boot = boot or new_boot()
        self.hub_timeout_ms = hub_timeout_ms
        """An owner hub whose beats stopped this long no longer holds its nodes."""
        self.meter = meter if meter is not None else StoreMeter()
        """Times calls and counts failures (see `replies.translated`)."""
        self.connector = RedisConnector(url)
        self.url = self.connector.redacted
        """The URL as it may be shown (its password as `***`)."""
        self.reply_timeout_s = reply_timeout_s
        """How long a binding or a send waits for Redis before the call fails with
        `StoreUnavailable` (the hub uses `hub_timeout_ms`: a store that stopped
        answering is treated like a hub that did)."""
        self.keys = Keys(prefix)
        # A blocking pool: a burst of concurrent commands waits for a connection
        # instead of failing with "too many connections" (not an outage). With a
        # Sentinel URL it is sentinel-managed (see hub/store/connector.py).
        pool = self.connector.pool(
            decode_responses=False,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=REPLY_TIMEOUT_S,
            health_check_interval=0,
            max_connections=64,
            timeout=5.0,
            # After a Redis restart every pooled connection is dead: a command that meets
            # one reconnects and is tried once more, instead of failing (a lease release
            # lost that way locks a node out for its lease). Not on a timeout: a Redis
            # that hangs is not asked twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("announce", ANNOUNCE),
                ("room_join", ROOM_JOIN),
                ("beat", BEAT),
                ("bind_many", BIND_MANY),
                ("save_many", SAVE_MANY),
                ("live_hubs", LIVE_HUBS),
                ("claim_many", CLAIM_MANY),
                ("release_node", RELEASE_NODE),
                ("release_request", RELEASE_REQUEST),
                ("rebind_request", REBIND_REQUEST),
                ("publish_node", PUBLISH_NODE),
                ("publish_nodes", PUBLISH_NODES),
                ("send_many", SEND_MANY),
                ("dead_letter", DEAD_LETTER),
                ("drop_hub", DROP_HUB),
            )
        }
        self._inbox = self.keys.inbox(hub_id)
        # The per-job hot path (bindings, sends; inbox reads, which block) runs on
        # two pipelined connections of its own (see hub/store/resp.py).
        self._pipes: dict[str, RespPipe] = {}
        self._opening: dict[str, asyncio.Lock] = {"send": asyncio.Lock(), "read": asyncio.Lock()}

    def __repr__(self) -> str:
        return f"RedisStore(hub_id={self.hub_id!r}, url={redact_url(self.url)!r})"

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def _pipe(self, role: str) -> RespPipe:
        pipe = self._pipes.get(role)
        if pipe is not None and not pipe.closed:
            return pipe
        async with self._opening[role]:
            pipe = self._pipes.get(role)
            if pipe is None or pipe.closed:
                endpoint = await self.connector.endpoint(timeout_s=CONNECT_TIMEOUT_S)
                pipe = await RespPipe.open(endpoint, timeout_s=CONNECT_TIMEOUT_S)
                self._pipes[role] = pipe
        return pipe

    def _evalsha(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """The EVALSHA command of one of the scripts, for a pipe."""
        return ["EVALSHA", self._scripts[name].sha, len(keys), *keys, *args]

    async def _piped_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on the send pipe; EVAL when Redis lost the script (a restart)."""
        pipe = await self._pipe("send")
        timeout_s = self.reply_timeout_s
        try:
            return await pipe.call(*self._evalsha(name, keys, args), timeout_s=timeout_s)
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        source = self._scripts[name].script
        assert isinstance(source, str | bytes)
        return await pipe.call("EVAL", source, len(keys), *keys, *args, timeout_s=timeout_s)

    def _save_args(
        self, items: Sequence[tuple[str, bytes]], ttl_ms: int
    ) -> tuple[list[str], list[Any]]:
        """`SAVE_MANY`'s keys and arguments for job records."""
        return [self.keys.job(job_id) for job_id, _ in items], [ttl_ms, *(r for _, r in items)]

    async def start(self) -> None:
        try:
            await self._redis.ping()
        except (*UNAVAILABLE, redis_errors.RedisError) as exc:
            raise StoreUnavailable(
                f"cannot reach Redis at {redact_url(self.url)}: {exc}"
            ) from None
        await self._ensure_group(self._inbox)

    @translated
    async def _ensure_group(self, stream: str) -> None:
        with contextlib.suppress(redis_errors.ResponseError):  # BUSYGROUP: it exists
            await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)

    async def aclose(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose(close_connection_pool=True)
        with contextlib.suppress(Exception):
            await self.connector.aclose()

    # --- idempotency and job records ----------------------------------------------------

    async def bind_request(
        self, request_id: str, job_id: str, ttl_ms: int, *, tenant: str = DEFAULT_TENANT
    ) -> str | None:
        return (await self.bind_requests([Binding(request_id, job_id, ttl_ms, tenant=tenant)]))[0]

    @translated
    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        keys: list[str] = []
        args: list[Any] = [INBOX_MAXLEN, INBOX_TTL_MS]
        for binding in bindings:
            request_key = self.keys.request(binding.tenant, binding.request_id)
            to = binding.send_to
            keys += [request_key, request_key if to is None else self.keys.inbox(to)]
            args += [binding.job_id, binding.ttl_ms, "0" if to is None else "1", binding.envelope]
        bound = await self._piped_script("bind_many", keys, args)
        return [text(job_id) or None for job_id in bound]

    @translated
    async def release_request(
        self, request_id: str, job_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        await self._script("release_request", [self.keys.request(tenant, request_id)], [job_id])

    @translated
    async def rebind_request(
        self, request_id: str, old_job_id: str, new_job_id: str, ttl_ms: int,
        *, tenant: str = DEFAULT_TENANT,
    ) -> bool:
        moved = await self._script(
            "rebind_request", [self.keys.request(tenant, request_id)],
            [old_job_id, new_job_id, ttl_ms],
        )
        return bool(moved)

    @translated
    async def save_job(self, job_id: str, record: bytes, ttl_ms: int) -> None:
        await self._redis.set(self.keys.job(job_id), record, px=ttl_ms)

    @translated
    async def save_jobs(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        if items:
            await self._piped_script("save_many", *self._save_args(items, ttl_ms))

    @translated
    async def load_job(self, job_id: str) -> bytes | None:
        data: Any = await self._redis.get(self.keys.job(job_id))
        return None if data is None else bytes(data)

    # --- live sessions -------------------------------------------------------------------

    @translated
    async def save_live(
        self, tenant: str, session_id: str, record: bytes, ttl_ms: int,
        *, utterance: tuple[int, bytes, int] | None = None,
    ) -> None:
        keys = self.keys
        if utterance is None:
            await self._redis.set(keys.live(tenant, session_id), record, px=ttl_ms)
            return
        index, payload, utterance_ttl_ms = utterance
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.utterance(tenant, session_id, index), payload, px=utterance_ttl_ms)
            pipe.set(keys.live(tenant, session_id), record, px=ttl_ms)
            await pipe.execute()

    @translated
    async def load_live(self, tenant: str, session_id: str) -> bytes | None:
        data: Any = await self._redis.get(self.keys.live(tenant, session_id))
        return None if data is None else bytes(data)

    @translated
    async def load_utterance(self, tenant: str, session_id: str, index: int) -> bytes | None:
        data: Any = await self._redis.get(self.keys.utterance(tenant, session_id, index))
        return None if data is None else bytes(data)

    @translated
    async def drop_utterance(self, tenant: str, session_id: str, index: int) -> None:
        await self._redis.delete(self.keys.utterance(tenant, session_id, index))

    # --- rooms -----------------------------------------------------------------------------

    @translated
    async def room_join(
        self, tenant: str, room: str, member_id: str, entry: bytes, *, max_members: int,
        ttl_ms: int,
    ) -> dict[str, bytes] | None:
        reply: Any = await self._script(
            "room_join", [self.keys.room(tenant, room)],
            [member_id, entry, max_members, ttl_ms],
        )
        if not reply or int(reply[0]) == 0:
            return None
        flat = reply[1:]
        return {text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat), 2)}

    @translated
    async def room_leave(self, tenant: str, room: str, member_ids: Sequence[str]) -> None:
        if member_ids:
            await self._redis.hdel(self.keys.room(tenant, room), *member_ids)

    @translated
    async def room_members(self, tenant: str, room: str) -> dict[str, bytes]:
        members: Any = await self._redis.hgetall(self.keys.room(tenant, room))
        return {text(k): bytes(v) for k, v in members.items()}

    # --- published nodes-----------------------------------------------------------------

    @translated
    async def publish_node(self, node_id: str, entry: bytes, ttl_ms: int) -> None:
        await self._script(
            "publish_node", [self.keys.nodes(self.hub_id)], [node_id, entry, ttl_ms]
        )

    @translated
    async def remove_node(self, node_id: str) -> None:
        await self._redis.hdel(self.keys.nodes(self.hub_id), node_id)

    @translated
    async def publish_nodes(
        self, entries: Sequence[tuple[str, bytes]], removals: Sequence[str], ttl_ms: int
    ) -> None:
        # Bounded batches: Lua's unpack() takes at most a few thousand values.
        removals = list(removals)
        entries = list(entries)
        while removals or entries:
            gone, removals = removals[:PUBLISH_BATCH], removals[PUBLISH_BATCH:]
            some, entries = entries[: PUBLISH_BATCH - len(gone)], entries[
                PUBLISH_BATCH - len(gone):]
            args: list[Any] = [ttl_ms, len(gone), *gone]
            for node_id, entry in some:
                args += [node_id, entry]
            await self._piped_script("publish_nodes", [self.keys.nodes(self.hub_id)], args)

    @translated
    async def clear_nodes(self) -> None:
        await self._redis.delete(self.keys.nodes(self.hub_id))

    @translated
    async def node_entries(self) -> dict[str, bytes]:
        hubs = await self.live_hubs()
        async with self._redis.pipeline(transaction=False) as pipe:
            for hub_id in sorted(hubs):
                pipe.hgetall(self.keys.nodes(hub_id))
            tables = await pipe.execute()
        return {k.decode(): v for table in tables for k, v in table.items()}

    @translated
    async def publish_fleet_update(self, update: bytes) -> None:
        await self._redis.publish(self.keys.fleet_channel, update)

    async def fleet_updates(self) -> AsyncIterator[bytes]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(self.keys.fleet_channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        yield message["data"]
            except UNAVAILABLE as exc:
                raise StoreUnavailable(f"fleet subscription lost: {exc}") from exc
        finally:
            # A typed alias: `PubSub.aclose` is untyped in some redis-py
            # releases and typed in others (an ignore comment fits only one).
            aclose: Callable[[], Awaitable[None]] = pubsub.aclose
            with contextlib.suppress(Exception):
                await aclose()

    # --- presence and ownership -----------------------------------------------------------

    @translated
    async def announce(self, ttl_ms: int, *, has_nodes: bool = False) -> bool:
        existed = await self._script(
            "announce",
            [
                self.keys.presence(self.hub_id), self.keys.hubs,
                self.keys.nodes(self.hub_id), self._inbox,
            ],
            [self.hub_id, ttl_ms, HUBS_TTL_MS, INBOX_TTL_MS, "1" if has_nodes else "0"],
        )
        if not existed:
            await self._ensure_group(self._inbox)  # a restarted Redis lost the group too
        return bool(existed)

    @translated
    async def beat(self) -> dict[str, HubBeat]:
        reply = await self._script(
            "beat", [self.keys.beats, self.keys.boots], [self.hub_id, self.boot, HUBS_TTL_MS]
        )
        return {
            text(reply[i]): HubBeat(int(reply[i + 1]), text(reply[i + 2]))
            for i in range(0, len(reply), 3)
        }

    @translated
    async def live_hubs(self) -> set[str]:
        hubs = await self._script("live_hubs", [self.keys.hubs], [])
        return {h.decode() for h in hubs}

    @translated
    async def known_hubs(self) -> set[str]:
        hubs: Any = await self._redis.zrange(self.keys.hubs, 0, -1)
        return {text(h) for h in hubs}

    @translated
    async def drop_hub(self, hub_id: str, *, upto: str | None = None) -> bool:
        dropped = await self._script(
            "drop_hub",
            [
                self.keys.inbox(hub_id), self.keys.nodes(hub_id), self.keys.reaper(hub_id),
                self.keys.hubs, self.keys.beats, self.keys.boots,
            ],
            [hub_id, "" if upto is None else upto, self.hub_id],
        )
        if isinstance(dropped, list):
            raise InboxLocked(hub_id, text(dropped[1]))
        return bool(dropped)

    @translated
    async def claim_node(self, node_id: str, ttl_ms: int, *, take_over: bool = False) -> int:
        ((epoch, owner),) = await self._claims([node_id], ttl_ms, take_over=take_over)
        if epoch < 0:
            raise OwnershipConflict(node_id, owner)
        return epoch

    @translated
    async def claim_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for start in range(0, len(node_ids), RENEW_BATCH):
            out += await self._claims(node_ids[start : start + RENEW_BATCH], ttl_ms)
        return out

    async def _claims(
        self, node_ids: Sequence[str], ttl_ms: int, *, take_over: bool = False,
        piped: bool = True,
    ) -> list[tuple[int, str]]:
        """One `CLAIM_MANY`: on the send pipe (registrations), or on redis-py's pool
        (lease renewals: thousands of keys must not queue ahead of the jobs' commands)."""
        keys = [
            *(self.keys.owner(node_id) for node_id in node_ids),
            self.keys.hubs, self.keys.beats, self.keys.boots,
        ]
        args = [self.hub_id, ttl_ms, "1" if take_over else "0", self.boot, self.hub_timeout_ms]
        if piped:
            replies = await self._piped_script("claim_many", keys, args)
        else:
            replies = await self._script("claim_many", keys, args)
        return [(int(epoch), text(owner)) for epoch, owner in replies]

    async def renew_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[str]:
        claims = await self.renew_claims(node_ids, ttl_ms)
        return [node_id for node_id, epoch in claims.items() if epoch is None]

    @translated
    async def renew_claims(self, node_ids: Sequence[str], ttl_ms: int) -> dict[str, int | None]:
        claims: dict[str, int | None] = {}
        for start in range(0, len(node_ids), RENEW_BATCH):
            batch = node_ids[start : start + RENEW_BATCH]
            replies = await self._claims(batch, ttl_ms, piped=False)
            for node_id, (epoch, _) in zip(batch, replies, strict=True):
                claims[node_id] = epoch if epoch >= 0 else None
        return claims

    @translated
    async def release_node(self, node_id: str, epoch: int) -> None:
        await self._script(
            "release_node", [self.keys.owner(node_id)], [self.hub_id, epoch, self.boot]
        )

    @translated
    async def node_owner(self, node_id: str) -> tuple[str, int] | None:
        hub, epoch = await self._redis.hmget(self.keys.owner(node_id), ["hub", "epoch"])
        if not hub or epoch is None:
            return None
        return text(hub), int(epoch)

    # --- inboxes ---------------------------------------------------------------------------

    async def send_to_hub(self, hub_id: str, envelope: bytes) -> None:
        await self.send_many([(hub_id, envelope)])

    @translated
    async def send_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        await self._piped_script(
            "send_many",
            [self.keys.inbox(hub_id) for hub_id, _ in items],
            [INBOX_MAXLEN, INBOX_TTL_MS, *(envelope for _, envelope in items)],
        )

    @translated
    async def read_inbox(
        self, *, block_ms: int, count: int, ack: Sequence[str] = (),
        records: RecordBatch | None = None,
    ) -> Sequence[tuple[str, bytes]]:
        pipe = await self._pipe("read")
        commands: list[list[str | bytes | int]] = [[
            "XREADGROUP", "GROUP", CONSUMER_GROUP, self.hub_id, "COUNT", count,
            "BLOCK", block_ms, "STREAMS", self._inbox, ">",
        ]]
        # The records and the acknowledgement go in the same write, after the read:
        # Redis runs them once the read returns (a blocked connection's next command
        # waits), so their replies come back with the read's and cost no wake-up of
        # their own. The records go first: a job's record is stored no later than
        # the entry that finished it is acknowledged.
        if records is not None and records.items:
            commands.append(
                self._evalsha("save_many", *self._save_args(records.items, records.ttl_ms))
            )
        if ack:
            commands.append(["XACK", self._inbox, CONSUMER_GROUP, *ack])
        read, *after = pipe.call_many(commands, timeout_s=block_ms / 1000 + REPLY_TIMEOUT_S)
        try:
            reply = await read
        except redis_errors.ResponseError as exc:
            await settle(after)  # an XACK of a missing group or stream acknowledges nothing
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(self._inbox)  # the stream expired or Redis restarted empty
            return []
        except BaseException:
            # The connection failed: the caller acknowledges and saves them again.
            for future in after:
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" warning
                future.cancel()
            raise
        outcomes = await settle(after)
        if ack and isinstance(outcomes[-1], Exception) and not isinstance(
            outcomes[-1], redis_errors.ResponseError
        ):
            # The connection failed right after the read: the entries read stand; the
            # acknowledgement is tried once more (else their hub's reaper sees them).
            with contextlib.suppress(StoreUnavailable):
                await self.ack_inbox(ack)
        if records is not None:
            # An error reply (e.g. NOSCRIPT after a Redis restart) leaves them unsaved:
            # the archive writes them again, with EVAL if need be.
            records.saved = not records.items or not isinstance(outcomes[0], Exception)
        return entries(reply)

    @translated
    async def pending_inbox(self, *, count: int, after: str = "0-0") -> Sequence[tuple[str, bytes]]:
        try:
            reply = await self._redis.xreadgroup(
                CONSUMER_GROUP, self.hub_id, {self._inbox: after}, count=count
            )
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []
        return entries(reply)

    @translated
    async def ack_inbox(self, entry_ids: Sequence[str], *, hub_id: str | None = None) -> None:
        if entry_ids:
            stream = self.keys.inbox(hub_id or self.hub_id)
            await self._redis.xack(stream, CONSUMER_GROUP, *entry_ids)

    @translated
    async def claim_inbox(
        self, hub_id: str, *, count: int, after: str = "0-0"
    ) -> Sequence[tuple[str, bytes]]:
        stream = self.keys.inbox(hub_id)
        lock = self.keys.reaper(hub_id)
        holder = await self._redis.set(
            lock, self.hub_id, px=REAPER_LOCK_TTL_MS, nx=True, get=True
        )
        if holder is not None and text(holder) != self.hub_id:
            raise InboxLocked(hub_id, text(holder))
        await self._redis.pexpire(lock, REAPER_LOCK_TTL_MS)
        if not await self._redis.exists(stream):
            return []
        await self._ensure_group(stream)
        ms, seq = stream_id(after)
        cursor = f"{ms}-{seq + 1}"
        claimed: list[tuple[str, bytes]] = []
        try:
            # Entries the dead hub (or an earlier claim) read but never acknowledged, in
            # id order from `after`, following XAUTOCLAIM's cursor until the list ends...
            while len(claimed) < count:
                reply = await self._redis.xautoclaim(
                    stream, CONSUMER_GROUP, self.hub_id, min_idle_time=0,
                    start_id=cursor, count=count - len(claimed),
                )
                claimed += [(text(i), f.get(b"e", b"")) for i, f in reply[1] if f]
                cursor = text(reply[0])
                if cursor == "0-0":
                    break
            if len(claimed) < count:
                # ...then those it never read (their ids are all higher).
                unread = await self._redis.xreadgroup(
                    CONSUMER_GROUP, self.hub_id, {stream: ">"}, count=count - len(claimed)
                )
                claimed.extend(entries(unread))
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return []  # another hub finished draining it and dropped the stream
        return claimed

    @translated
    async def dead_letter(self, hub_id: str, entry_id: str, envelope: bytes, why: str) -> None:
        await self._script(
            "dead_letter",
            [self.keys.dead_letter, self.keys.inbox(hub_id)],
            [DEAD_LETTER_MAXLEN, DEAD_LETTER_TTL_MS, hub_id, entry_id, envelope, why,
             CONSUMER_GROUP],
        )

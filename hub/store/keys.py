"""Every Redis key of cross-instance mode, built in one place.

All keys share the hash tag `{<prefix>}` so that multi-key Lua scripts are
legal on Redis Cluster too (everything lands in one slot; see
docs/operations.md for what that means for scaling). Each key's TTL is set by
the same command that writes it (SET ... PX, or the Lua script that writes it);
the table in docs/operations.md lists them.
"""

from __future__ import annotations

from typing import Final

CONSUMER_GROUP: Final = "hubs"
INBOX_MAXLEN: Final = 100_000
"""Approximate retention of one hub's inbox stream (XADD MAXLEN ~)."""
INBOX_TTL_MS: Final = 24 * 3600 * 1000
"""An inbox stream outlives its hub by a day at most (renewed by every write)."""
DEAD_LETTER_MAXLEN: Final = 10_000
DEAD_LETTER_TTL_MS: Final = 7 * 24 * 3600 * 1000
HUBS_TTL_MS: Final = 24 * 3600 * 1000
REAPER_LOCK_TTL_MS: Final = 30_000


class Keys:
    """Key names under one prefix (`redis_prefix`), so clusters and test runs can share
    one Redis server."""

    __slots__ = ("_p", "beats", "boots", "dead_letter", "fleet_channel", "hubs")

    def __init__(self, prefix: str) -> None:
        self._p = "{" + prefix + "}"
        self.hubs = f"{self._p}:hubs"
        """ZSET hub id -> presence expiry (ms, Redis clock): the known hubs."""
        self.fleet_channel = f"{self._p}:fleet"
        """Pub/sub channel of fleet change batches (`FleetUpdate`)."""
        self.dead_letter = f"{self._p}:deadletter"
        """Stream of inbox entries that could not be handled."""
        self.beats = f"{self._p}:beats"
        """ZSET hub id -> its last liveness beat (ms, Redis clock), every few hundred ms."""
        self.boots = f"{self._p}:boots"
        """HASH hub id -> the boot token of its current run (job ids carry it)."""

    def request(self, tenant: str, request_id: str) -> str:
        """STRING request_id -> job id (idempotency binding), scoped to its tenant (a
        tenant name never holds `:`, see `hub.core.principal.TENANT_PATTERN`)."""
        return f"{self._p}:req:{tenant}:{request_id}"

    def live(self, tenant: str, session_id: str) -> str:
        """STRING: a live session's record (MessagePack), scoped to its tenant."""
        return f"{self._p}:live:{tenant}:{session_id}"

    def utterance(self, tenant: str, session_id: str, index: int) -> str:
        """STRING: the payload of a live session's running utterance (MessagePack)."""
        return f"{self._p}:utt:{tenant}:{index}:{session_id}"

    def room(self, tenant: str, room: str) -> str:
        """HASH member id -> member entry (MessagePack) of a room, scoped to its tenant."""
        return f"{self._p}:room:{tenant}:{room}"

    def job(self, job_id: str) -> str:
        """STRING: a finished job's record (JSON)."""
        return f"{self._p}:job:{job_id}"

    def presence(self, hub_id: str) -> str:
        """STRING: exists while the hub is alive."""
        return f"{self._p}:hub:{hub_id}"

    def owner(self, node_id: str) -> str:
        """HASH {hub, epoch}: the node's owning hub and fencing epoch (a lease)."""
        return f"{self._p}:owner:{node_id}"

    def nodes(self, hub_id: str) -> str:
        """HASH node id -> `NodeEntry` (MessagePack) of one hub's nodes."""
        return f"{self._p}:nodes:{hub_id}"

    def inbox(self, hub_id: str) -> str:
        """STREAM of envelopes for one hub, read by the consumer group `hubs`."""
        return f"{self._p}:inbox:{hub_id}"

    def reaper(self, hub_id: str) -> str:
        """STRING lock: which live hub is draining a dead hub's inbox."""
        return f"{self._p}:reap:{hub_id}"

"""The `Store` protocol: the only surface through which the job path touches shared state.

The deployment mode picks a backend at start-up and nothing else branches on
it (docs/architecture.md, "One code path"): `MemoryStore` keeps everything
in this process (local mode), the Redis backend shares it between hubs
(cross-instance mode). Every backend passes the same contract tests
(tests/test_store_contract.py).

What lives here:
- idempotency bindings `request_id -> job_id`, with a TTL;
- finished job records (for duplicate submits and `GET /v1/jobs/<id>`);
- the node entries other hubs need (`publish_node`/`remove_node`, `node_entries`);
- hub presence and node ownership (leases with a fencing epoch);
- an inbox per hub for messages from other hubs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from hub.core.principal import DEFAULT_TENANT


class Binding(NamedTuple):
    """One idempotency binding to make, and what to send when (only when) it is made."""

    request_id: str
    job_id: str
    ttl_ms: int
    send_to: str | None = None
    """A hub whose inbox gets `envelope` in the same atomic step, if the binding is
    made: a job's first dispatch to another hub costs no extra round trip."""
    envelope: bytes = b""
    tenant: str = DEFAULT_TENANT
    """The tenant the request_id is scoped to: the same request_id in two
    tenants names two bindings."""


@dataclass(eq=False)
class RecordBatch:
    """Finished jobs' records (as `Store.save_jobs` takes them) written along with an
    inbox read; `saved` says whether they were."""

    items: list[tuple[str, bytes]]
    ttl_ms: int
    saved: bool = False


class HubBeat(NamedTuple):
    """Another hub as its liveness beats show it (`Store.beat`)."""

    age_ms: int
    """Since its last beat (the store's clock)."""
    boot: str
    """The boot token of its current run."""


def new_boot() -> str:
    """A fresh boot token: one per run of a hub (job ids carry it)."""
    return os.urandom(4).hex()


class OwnershipConflict(Exception):
    """Another live hub owns the node (see `Store.claim_node`)."""

    def __init__(self, node_id: str, owner: str) -> None:
        super().__init__(f"node {node_id} is owned by hub {owner}")
        self.node_id = node_id
        self.owner = owner


class InboxLocked(Exception):
    """Another live hub holds the reaper lock of a dead hub's inbox (see
    `Store.claim_inbox`): it is draining it, do not drop it."""

    def __init__(self, hub_id: str, holder: str) -> None:
        super().__init__(f"hub {holder} is draining the inbox of hub {hub_id}")
        self.hub_id = hub_id
        self.holder = holder


def stream_id(entry_id: str) -> tuple[int, int]:
    """An inbox entry id (`<ms>-<seq>`) as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Store(Protocol):
    """Shared state for one hub. All methods may raise `StoreUnavailable`."""

    hub_id: str
    boot: str
    """This run's boot token: a hub restarted under the same id has a new one."""
    waits: bool
    """Whether calls may wait on I/O. When False (memory), callers need not run
    store calls concurrently: they complete without suspending."""

    async def start(self) -> None:
        """Connect; raise `StoreUnavailable` with a clear message when that fails."""

    async def aclose(self) -> None:
        """Release connections and background work; idempotent."""

    # --- idempotency --------------------------------------------------------------

    async def bind_request(
        self, request_id: str, job_id: str, ttl_ms: int, *, tenant: str = DEFAULT_TENANT
    ) -> str | None:
        """Bind `request_id` (of `tenant`) to `job_id` unless bound: None when this call
        bound it, else the job id it was already bound to. Atomic across hubs."""

    async def bind_requests(self, bindings: Sequence[Binding]) -> list[str | None]:
        """`bind_request` for each binding, in order, in one round trip; a binding's
        envelope is appended to its `send_to` inbox if and only if it was made."""

    async def release_request(
        self, request_id: str, job_id: str, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Drop the binding if (and only if) it still points at `job_id`."""

    async def rebind_request(
        self, request_id: str, old_job_id: str, new_job_id: str, ttl_ms: int,
        *, tenant: str = DEFAULT_TENANT,
    ) -> bool:
        """Point the binding at `new_job_id` if it still points at `old_job_id` (a job
        whose home hub died is run again); False when someone else moved it first."""

    # --- job records --------------------------------------------------------------

    async def save_job(self, job_id: str, record: bytes, ttl_ms: int) -> None:
        """Keep a finished job's record (encoded) for `ttl_ms`."""

    async def save_jobs(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        """`save_job` for many records in one round trip where possible."""

    async def load_job(self, job_id: str) -> bytes | None:
        """A record saved by any hub, or None when unknown or expired."""

    # --- live sessions ---------------------------------------------------------------

    async def save_live(
        self, tenant: str, session_id: str, record: bytes, ttl_ms: int,
        *, utterance: tuple[int, bytes, int] | None = None,
    ) -> None:
        """Keep a live session's record (encoded) for `ttl_ms`; with `utterance`
        (index, payload, ttl_ms), also the payload of an utterance just cut, in the same
        call, so that another hub can run it again if this one dies."""

    async def load_live(self, tenant: str, session_id: str) -> bytes | None:
        """A live session's record, saved by any hub; None when unknown or expired."""

    async def load_utterance(self, tenant: str, session_id: str, index: int) -> bytes | None:
        """The payload of a session's utterance still running (None once it ended)."""

    async def drop_utterance(self, tenant: str, session_id: str, index: int) -> None:
        """The utterance's result is in: its payload is no longer needed."""

    # --- rooms -------------------------------------------------------------------------

    async def room_join(
        self, tenant: str, room: str, member_id: str, entry: bytes, *, max_members: int,
        ttl_ms: int,
    ) -> dict[str, bytes] | None:
        """Add a member to a room (or update it) unless the room is full (None); every
        member after the join. The room lapses `ttl_ms` after its last join."""

    async def room_leave(self, tenant: str, room: str, member_ids: Sequence[str]) -> None:
        """Remove members; a room with no members is gone."""

    async def room_members(self, tenant: str, room: str) -> dict[str, bytes]:
        """A room's members (empty when there is no such room)."""

    # --- published nodes --------------------------------------------------------------

    async def publish_node(self, node_id: str, entry: bytes, ttl_ms: int) -> None:
        """Publish (create or replace) a node's entry, cluster-wide."""

    async def remove_node(self, node_id: str) -> None:
        """Withdraw a node's entry, cluster-wide."""

    async def publish_nodes(
        self, entries: Sequence[tuple[str, bytes]], removals: Sequence[str], ttl_ms: int
    ) -> None:
        """Withdraw the entries of `removals`, then publish every `(node_id, entry)` of
        `entries`, in one call (a reconnect storm's joins in one round trip)."""

    async def clear_nodes(self) -> None:
        """Withdraw every entry of this hub's (a new run owns no node yet: its previous
        run's entries are stale)."""

    async def node_entries(self) -> dict[str, bytes]:
        """Every published node entry of every live hub (for a full resync)."""

    async def publish_fleet_update(self, update: bytes) -> None:
        """Broadcast a fleet change batch to every hub (pub/sub, at most once)."""

    def fleet_updates(self) -> AsyncIterator[bytes]:
        """Fleet change batches from every hub, this one's included, as they come.

        Ends (or raises `StoreUnavailable`) when the subscription is lost; the
        caller resubscribes and resyncs with `node_entries()`."""
        ...

    # --- presence and ownership -----------------------------------------------------

    async def announce(self, ttl_ms: int, *, has_nodes: bool = False) -> bool:
        """Mark this hub alive for `ttl_ms` (renewed periodically by the hub).

        False when the hub's presence was not there before this call (the first
        announcement, or the store lost it: lapsed, or the server restarted empty) or,
        with `has_nodes`, its published node entries were not (they lapsed while the
        store was frozen or unreachable): the hub must publish what it holds again."""

    async def beat(self) -> dict[str, HubBeat]:
        """Record that this hub is answering now (with its boot token); every hub that
        beats, this one included, with the time since its last beat and its boot."""

    async def live_hubs(self) -> set[str]:
        """Hubs whose presence has not lapsed, this one included."""

    async def known_hubs(self) -> set[str]:
        """Hubs that announced themselves and have not been dropped, live or not."""

    async def drop_hub(self, hub_id: str, *, upto: str | None = None) -> bool:
        """Forget a dead hub whose inbox has been drained (its inbox and its node entries).

        With `upto` (the last entry id drained, `"0-0"` for none) nothing is dropped
        and False returned when a newer entry arrived meanwhile (drain again), or when
        another hub holds the reaper lock (`InboxLocked` is raised then)."""

    async def claim_node(self, node_id: str, ttl_ms: int, *, take_over: bool = False) -> int:
        """Own `node_id` for `ttl_ms`; returns the ownership epoch (fencing token).

        Raises `OwnershipConflict` when another live hub owns it, unless
        `take_over` (then that hub's ownership ends and the epoch grows). An owner
        whose beats stopped for `hub_timeout` or that restarted (another boot) does
        not count as live. Renewing one's own claim keeps the epoch.
        """

    async def claim_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[tuple[int, str]]:
        """`claim_node` for many nodes in one call, without taking over: per node
        `(epoch, this hub)` when the claim holds, `(-1, owner)` when another live hub
        owns it (live as `claim_node` means it: beating, same boot; a reconnect storm's
        registrations of one loop turn)."""

    async def renew_nodes(self, node_ids: Sequence[str], ttl_ms: int) -> list[str]:
        """Renew this hub's claims on many nodes in one round trip where possible;
        returns the ids of nodes another hub owns now (this hub lost them)."""

    async def renew_claims(self, node_ids: Sequence[str], ttl_ms: int) -> dict[str, int | None]:
        """As `renew_nodes`, with each node's epoch now (None: another hub owns it). A
        claim whose lease had lapsed (a Redis restart lost it) is made again with a
        new epoch: the caller must use that one from now on (to release it)."""

    async def release_node(self, node_id: str, epoch: int) -> None:
        """Give up ownership, if still held with `epoch`."""

    async def node_owner(self, node_id: str) -> tuple[str, int] | None:
        """(hub id, epoch) of the node's current owner, or None."""

    # --- inbox ----------------------------------------------------------------------

    async def send_to_hub(self, hub_id: str, envelope: bytes) -> None:
        """Append one message to `hub_id`'s inbox."""

    async def send_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Append messages to inboxes, in order, in one round trip where possible."""

    async def read_inbox(
        self, *, block_ms: int, count: int, ack: Sequence[str] = (),
        records: RecordBatch | None = None,
    ) -> Sequence[tuple[str, bytes]]:
        """Up to `count` unacknowledged (entry id, envelope) pairs of this hub's inbox,
        waiting up to `block_ms` for the first. `ack` acknowledges entries of this
        hub's inbox, in the same round trip: they are acknowledged when the call
        returns (Redis runs the XACK right after the read, so while the read blocks
        they are still pending). `records` are written in the same round trip too,
        before `ack` (a job's record is stored no later than the entry that finished
        it is acknowledged); `records.saved` says whether they were. Their failure
        does not fail the read."""

    async def pending_inbox(self, *, count: int, after: str = "0-0") -> Sequence[tuple[str, bytes]]:
        """Up to `count` entries of this hub's inbox that were read under this hub's id
        and never acknowledged (by a previous run that died), ids after `after`."""

    async def ack_inbox(self, entry_ids: Sequence[str], *, hub_id: str | None = None) -> None:
        """Acknowledge handled entries (of `hub_id`'s inbox, by default this hub's)."""

    async def claim_inbox(
        self, hub_id: str, *, count: int, after: str = "0-0"
    ) -> Sequence[tuple[str, bytes]]:
        """Take over up to `count` entries of a dead hub's inbox with ids after `after`,
        in id order: those it read but never acknowledged, then those it never read.
        Empty when none are left. Page through an inbox by passing the last id
        returned as `after`. Takes (or renews) the reaper lock of that inbox; raises
        `InboxLocked` when another hub holds it."""

    async def dead_letter(self, hub_id: str, entry_id: str, envelope: bytes, why: str) -> None:
        """Move an entry that cannot be handled to the dead-letter stream and ack it."""

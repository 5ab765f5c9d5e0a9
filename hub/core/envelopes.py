"""Messages between hubs (cross-instance mode), carried by the store's inboxes.

A job has a *home* hub (where it was submitted; it owns the job record, the
deadlines and the client sessions) and, per attempt, an *owner* hub (where
the node is connected; it owns the node's slots). When the two differ, they
talk with these envelopes, MessagePack-encoded. Every envelope about a job
names the attempt, so a late or replayed one is fenced like a node message.
In local mode no envelope is ever sent: home and owner are the same hub and
call each other directly.
"""

from __future__ import annotations

from typing import Any

import msgspec

from hub.core.job_state import NODE_LOST
from hub.core.messages import (
    Capabilities,
    ClientOutbound,
    JobAccept,
    JobAssign,
    JobProgress,
    JobReject,
    JobResult,
    RoomResult,
    Submit,
)
from hub.core.principal import DEFAULT_TENANT


class _Envelope(msgspec.Struct, tag_field="kind", omit_defaults=True):
    sender: str
    """The hub that sent it."""


class Dispatch(_Envelope, tag="dispatch"):
    """Home -> owner: run this attempt on `node_id` if it has a free slot."""

    node_id: str
    request_id: str
    assign: JobAssign
    tenant: str = DEFAULT_TENANT
    """The job's tenant: an orphaned result is archived under it."""


class Refused(_Envelope, tag="refused"):
    """Owner -> home: the node could not take the attempt (gone, draining, full)."""

    node_id: str
    job_id: str
    attempt: int
    reason: str


class Revoke(_Envelope, tag="revoke"):
    """Home -> owner: take the attempt back from the node (timeout, cancel)."""

    node_id: str
    job_id: str
    attempt: int
    reason: str


class NodeEvent(_Envelope, tag="node_event"):
    """Owner -> home: a fenced node message about the home's job."""

    node_id: str
    request_id: str
    message: JobAccept | JobReject | JobProgress | JobResult
    tenant: str = DEFAULT_TENANT
    """The job's tenant, as its Dispatch said."""


class NodeLost(_Envelope, tag="node_lost"):
    """Owner -> home: the attempt ended on the node without a result: its session ended
    while it held it (`node_lost`), or it did not accept it in time (`accept_timeout`,
    timed by the owner: `OwnerDeadlines`)."""

    node_id: str
    job_id: str
    attempt: int
    outcome: str = NODE_LOST
    """The attempt's outcome at the home (`NODE_LOST`, `ACCEPT_TIMEOUT`); left out on the
    wire for `node_lost`, so that older hubs read the envelope as before."""


class Watch(_Envelope, tag="watch"):
    """Hub of a duplicate submit -> home: send me the job's `accepted` and `result`.

    Carries the submit itself, so that if the home hub turns out to be dead the
    hub that drains its inbox can run the job again for this client."""

    job_id: str
    client_id: str
    submit: Submit
    tenant: str = DEFAULT_TENANT
    """The duplicate submit's tenant, for running the job again if need be;
    the home adds the watcher only to a job of this tenant."""
    again: bool = False
    """Sent again because the home may have lost the first one (it restarted): ignored
    by a home that already has this watcher."""


class Unknown(_Envelope, tag="unknown"):
    """Home -> hub of a duplicate submit: the job its `Watch` named is unknown here (never
    recorded, its binding released, or another tenant's): resolve the request again
    there, under `tenant`."""

    job_id: str
    client_id: str
    submit: Submit
    tenant: str = DEFAULT_TENANT
    """The `Watch`'s tenant, echoed."""


class Held(msgspec.Struct, array_like=True):
    """One attempt in a `Reconcile`."""

    job_id: str
    attempt: int
    node_id: str
    request_id: str = ""
    tenant: str = DEFAULT_TENANT
    """The job's tenant, as its Dispatch said: an inherited job's result is
    archived under it, and only its own tenant's resubmits watch it."""


class Reconcile(_Envelope, tag="reconcile"):
    """Any hub -> a hub it sees run under a new boot token (restarted, or new to it):
    what the sender holds that involves the recipient's earlier runs.

    `running`: attempts on the sender's nodes of jobs homed at the recipient (the
    recipient's new run takes them over and answers their resubmits). `attempts`:
    the sender's jobs' attempts on the recipient's nodes (the recipient refuses those
    it does not hold: they died with its previous run)."""

    boot: str
    """The recipient's run this is meant for (another run ignores it)."""
    running: list[Held] = []
    attempts: list[Held] = []
    buried: bool = False
    """The sender had declared the recipient dead (it was frozen or cut off) and sees it
    again: it stopped every attempt of the recipient's jobs on its nodes then, and
    archived the results it read for them; `running` holds those it took since."""


class Deliver(_Envelope, tag="deliver"):
    """Home -> hub of a client session: send this message to that client."""

    client_id: str
    message: ClientOutbound


class NodeReplaced(_Envelope, tag="node_replaced"):
    """New owner -> old owner: a token allowed this node id took the node over
    here with ownership `epoch`; close the older session with 4005 (`replaced`)."""

    node_id: str
    epoch: int


# --- the admin surface, on any hub -------------------------------------------


class AdminRequest(_Envelope, tag="admin_request"):
    """Any hub -> the node's owner or the job's home: an operator's `action`
    (`drain`, `undrain` a node; `cancel` a job) on `target`; answered with an
    `AdminReply` carrying the same `ticket`."""

    ticket: int
    action: str
    target: str


class AdminReply(_Envelope, tag="admin_reply"):
    """Owner or home -> the hub that asked: how the `AdminRequest` `ticket` went
    (`ok`, `unknown_node`, `unknown_job`, `job_finished`)."""

    ticket: int
    outcome: str


class SessionTaken(_Envelope, tag="session_taken"):
    """Hub where a live session was just opened -> the hub that held it: a client
    opened it there; close your copy (its connection gets `session_closed`
    `replaced`)."""

    tenant: str
    session_id: str


class RoomDeliver(_Envelope, tag="room_deliver"):
    """A speaker's hub -> a hub with listeners in the room: one result, for every member
    of that hub listening in its language who joined before the utterance was cut."""

    tenant: str
    cut_ms: int
    """When the utterance was cut (the speaker hub's wall clock, Unix ms)."""
    result: RoomResult


class HandedJob(msgspec.Struct, array_like=True):
    """One unfinished job a draining hub hands on."""

    job_id: str
    """Its id at the draining hub: its request is bound to it."""
    tenant: str
    submit: Submit
    """The submit that made it, its `timeout_ms` what is left of the job's budget."""


class Handoff(_Envelope, tag="handoff"):
    """A draining hub -> a live hub: jobs it could not finish (still waiting for a slot,
    or cut off by `drain_timeout_ms`: revoked at their nodes). The recipient takes each
    over (its request bound to a new job there, unless a resubmit moved it first) and
    runs it; the clients, told `hub_shutdown`, get its result when they resubmit."""

    jobs: list[HandedJob]


Envelope = (
    Dispatch | Refused | Revoke | NodeEvent | NodeLost | Watch | Unknown | Reconcile | Deliver
    | NodeReplaced | AdminRequest | AdminReply | SessionTaken | RoomDeliver | Handoff
)


class NodeEntry(msgspec.Struct, array_like=True):
    """One node as its owning hub publishes it to the others (`FleetReplica`)."""

    node_id: str
    hub_id: str
    status: str
    running: int
    caps: Capabilities | None = None
    """Absent in load-only updates (the receiver keeps what it has)."""


class FleetUpdate(msgspec.Struct, array_like=True):
    """A batch of node changes from one hub (pub/sub); empty, it is a beacon."""

    hub_id: str
    upserts: list[NodeEntry] = []
    removals: list[str] = []
    waiting: bool = False
    """Jobs wait for a slot on the sending hub: publish load changes at once."""
    draining: bool = False
    """The sending hub drains: its nodes are about to move to another hub."""


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_update_decoder = msgspec.msgpack.Decoder(FleetUpdate)
_entry_decoder = msgspec.msgpack.Decoder(NodeEntry)


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_envelope(data: bytes) -> Envelope:
    result: Envelope = _envelope_decoder.decode(data)
    return result


def decode_fleet_update(data: bytes) -> FleetUpdate:
    result: FleetUpdate = _update_decoder.decode(data)
    return result


def decode_node_entry(data: bytes) -> NodeEntry:
    result: NodeEntry = _entry_decoder.decode(data)
    return result

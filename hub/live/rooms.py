"""`Rooms`: conversations of several live sessions, each listener hearing the others in
its own language, across hubs.

A member is a client connection listening in one language (`room_join`), and,
with `session_id`, also speaking into the room through one of its open live
sessions. Membership lives in the store (tenant-scoped: one hash per room, so
members on every hub are one room) and, for this hub's own members, here.

For each utterance a speaking session cuts, the speaker's hub reads the room's
members and runs one job per distinct listen language other than the
speaker's (request id `<session_id>/<index>/<lang>`, the speaker's own
parameters with that target), and an ASR-only job when someone listens in the
speaker's language (their transcript). One job serves every room the session
speaks into. Results go out per room, speaker and language in index order: to
this hub's members listening in that language directly, and to each other hub
with such members as one `RoomDeliver` envelope (fanned out there), never one
store command per listener. A member gets results of utterances cut after it
joined (the cut's wall-clock time against its join's).

Members of a hub that stopped answering are left out when a room is read, and
removed from the store by the first hub to notice: a dying hub's members drop
out within `hub_timeout_ms`, the rest of the room goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.config import HubConfig
from hub.core.envelopes import RoomDeliver
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.messages import (
    Accepted,
    ErrorInfo,
    Pipeline,
    Progress,
    Rejected,
    Result,
    RoomJoin,
    RoomJoined,
    RoomLeave,
    RoomResult,
    Submit,
)
from hub.core.metrics import Metrics
from hub.core.principal import Principal
from hub.core.utterances import Utterance
from hub.jobs.home.home import JobHome
from hub.jobs.links import Link
from hub.live.session import LiveSession
from hub.store.base import Store

ASR_ONLY: Final = Pipeline(asr=True, nmt=False, tts=False)
ROOM_TTL_MS: Final = 24 * 3600 * 1000
"""A room's members lapse a day after its last join (if its hubs all died meanwhile)."""


class MemberEntry(msgspec.Struct, array_like=True):
    """A member as the store holds it."""

    hub: str
    lang: str
    speaker: str | None = None


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(MemberEntry)


@dataclass(slots=True)
class Member:
    """One of this hub's connections in a room."""

    member_id: str
    conn: Link
    tenant: str
    room: str
    lang: str
    joined_ms: int
    speaker: LiveSession | None = None


@dataclass(slots=True)
class RoomJob:
    """One job for one listen language of one utterance, and who waits for it."""

    speaker: LiveSession
    index: int
    lang: str
    cut_ms: int
    rooms: dict[str, set[str]] = field(default_factory=dict)
    """room -> the other hubs with members listening in `lang` there."""


class LangQueue:
    """The results of one (room, speaker, language), released in the order their
    utterances were cut (indexes need not be consecutive: a language may be absent
    from the room for a while)."""

    __slots__ = ("_done", "_order")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: dict[int, RoomResult] = {}

    def expect(self, index: int) -> None:
        self._order.append(index)

    def done(self, index: int, result: RoomResult) -> list[RoomResult]:
        self._done[index] = result
        out: list[RoomResult] = []
        while self._order and self._order[0] in self._done:
            out.append(self._done.pop(self._order.popleft()))
        return out

    def __bool__(self) -> bool:
        return bool(self._order)


class RoomLink:
    """The `Link` a speaking session's room jobs answer through (one per session, so
    that request ids are its own)."""

    __slots__ = ("_rooms", "peer_id", "speaker")

    def __init__(self, peer_id: str, speaker: LiveSession, rooms: Rooms) -> None:
        self.peer_id = peer_id
        self.speaker = speaker
        self._rooms = rooms

    async def send(self, message: msgspec.Struct) -> None:
        self._rooms.job_message(self, message)

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        self._rooms.job_message(self, message)

    async def close(self, code: int, reason: str) -> None:
        return None

    def abort(self) -> None:
        return None


class Rooms:
    def __init__(
        self, *, config: HubConfig, home: JobHome, store: Store, peers: Peers, metrics: Metrics,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self._home = home
        self._store = store
        self._peers = peers
        self._metrics = metrics
        self.local: dict[tuple[str, str], dict[str, Member]] = {}
        """(tenant, room) -> this hub's members, by member id."""
        self._by_conn: dict[str, dict[str, Member]] = {}
        """A connection's memberships: peer id -> room -> member."""
        self._links: dict[int, RoomLink] = {}
        """A speaking session (by identity) -> its room jobs' link."""
        self._jobs: dict[tuple[int, str], RoomJob] = {}
        """(link identity, request id) -> the room job waiting for its answer."""
        self._queues: dict[tuple[str, str, str, str], LangQueue] = {}
        """(tenant, room, speaker session id, lang) -> results in cut order."""
        self._ids = itertools.count(1)
        self._chores: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Rooms({len(self.local)} rooms here)"

    def __len__(self) -> int:
        return len(self.local)

    def view(self, limit: int) -> list[dict[str, Any]]:
        """This hub's rooms, the most members first (for the console): the room, its
        tenant, its members here and their listen languages."""
        rooms = sorted(self.local.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
        return [
            {"room": room, "tenant": tenant, "members": len(members),
             "langs": sorted({m.lang for m in members.values()}),
             "speakers": sum(m.speaker is not None for m in members.values())}
            for (tenant, room), members in rooms
        ]

    # --- joining and leaving ------------------------------------------------------------

    async def join(
        self, conn: Link, principal: Principal, message: RoomJoin,
        speaker: LiveSession | None,
    ) -> None:
        """`room_join`; `speaker` is the connection's open session named by
        `session_id` (the caller resolved it). Answers `room_joined`."""
        tenant, room = principal.tenant, message.room
        held = self._by_conn.get(conn.peer_id, {})
        if room not in held and len(held) >= self.config.max_rooms_per_connection:
            raise ProtocolError(
                error_codes.ROOM_LIMIT,
                f"this connection is in {len(held)} rooms (max_rooms_per_connection is "
                f"{self.config.max_rooms_per_connection})", room=room,
            )
        if speaker is not None and speaker.two_way is not None:
            raise ProtocolError(
                error_codes.INVALID_FIELD,
                "a two-way session cannot speak into a room (its language is not known "
                "until each utterance is heard)", path="$.session_id", room=room,
                session_id=speaker.session_id,
            )
        member_id = f"{self.hub_id}/{conn.peer_id}"
        entry = MemberEntry(self.hub_id, message.listen_lang,
                            None if speaker is None else speaker.session_id)
        members = await self._store.room_join(
            tenant, room, member_id, _entry_encoder.encode(entry),
            max_members=self.config.max_room_members, ttl_ms=ROOM_TTL_MS,
        )
        if members is None:
            raise ProtocolError(
                error_codes.ROOM_LIMIT,
                f"room {room} has {self.config.max_room_members} members "
                "(max_room_members)", room=room,
            )
        member = held.get(room)
        if member is None:
            member = Member(member_id, conn, tenant, room, message.listen_lang, _wall_ms())
            self._by_conn.setdefault(conn.peer_id, {})[room] = member
            self.local.setdefault((tenant, room), {})[member_id] = member
        member.lang = message.listen_lang
        member.speaker = speaker
        live = self._alive(members)
        conn.queue(RoomJoined(
            room=room, members=len(live), langs=sorted({e.lang for e in live.values()}),
        ))

    async def leave(self, conn: Link, message: RoomLeave) -> None:
        member = self._by_conn.get(conn.peer_id, {}).get(message.room)
        if member is None:
            raise ProtocolError(error_codes.INVALID_FIELD, f"not in room {message.room}",
                                path="$.room", room=message.room)
        await self._drop(member)

    async def _drop(self, member: Member) -> None:
        self._forget(member)
        with contextlib.suppress(StoreUnavailable):  # its hub's death cleans it up anyway
            await self._store.room_leave(member.tenant, member.room, [member.member_id])

    def _forget(self, member: Member) -> None:
        rooms = self._by_conn.get(member.conn.peer_id)
        if rooms is not None and rooms.get(member.room) is member:
            del rooms[member.room]
            if not rooms:
                del self._by_conn[member.conn.peer_id]
        key = (member.tenant, member.room)
        local = self.local.get(key)
        if local is not None and local.get(member.member_id) is member:
            del local[member.member_id]
            if not local:
                del self.local[key]

    def connection_lost(self, conn: Link) -> None:
        """A connection's memberships end with it (a resumed session joins again)."""
        for member in list(self._by_conn.get(conn.peer_id, {}).values()):
            self._background(self._drop(member))

    def session_gone(self, session: LiveSession) -> None:
        """A speaking session ended: it speaks into no room, and its link goes."""
        for rooms in self._by_conn.values():
            for member in rooms.values():
                if member.speaker is session:
                    member.speaker = None
        link = self._links.pop(id(session), None)
        if link is not None:
            self._home.client_disconnected(link)

    def _alive(self, members: dict[str, bytes]) -> dict[str, MemberEntry]:
        """The members of live hubs; those of hubs that stopped answering are removed
        from the store in the background."""
        alive: dict[str, MemberEntry] = {}
        for member_id, data in members.items():
            entry = _entry_decoder.decode(data)
            if entry.hub == self.hub_id or self._peers.is_live(entry.hub):
                alive[member_id] = entry
        return alive

    # --- a speaker's utterance ------------------------------------------------------------

    def speaks_in(self, session: LiveSession) -> list[Member]:
        """The memberships through which `session` speaks."""
        rooms = self._by_conn.get(session.conn.peer_id, {}) if session.conn is not None else {}
        return [m for m in rooms.values() if m.speaker is session]

    def spoken(self, session: LiveSession, index: int, utterance: Utterance) -> None:
        """The session cut utterance `index`: run its room jobs (in the background: the
        room's members are read from the store first)."""
        memberships = self.speaks_in(session)
        if memberships:
            self._background(self._run(session, index, utterance, memberships, _wall_ms()))

    async def _run(
        self, session: LiveSession, index: int, utterance: Utterance, memberships: list[Member],
        cut_ms: int,
    ) -> None:
        by_lang: dict[str, dict[str, set[str]]] = {}
        for member in memberships:
            try:
                members = self._alive(await self._store.room_members(member.tenant, member.room))
            except StoreUnavailable as exc:
                logger.warning("room {}: members unreadable, utterance {} of {} not "
                               "translated for it: {}", member.room, index,
                               session.session_id, exc)
                continue
            for member_id, entry in members.items():
                if member_id == member.member_id:
                    continue  # the speaker does not hear itself
                hubs = by_lang.setdefault(entry.lang, {}).setdefault(member.room, set())
                if entry.hub != self.hub_id:
                    hubs.add(entry.hub)
        if not by_lang:
            return
        link = self._link(session)
        for lang, rooms in by_lang.items():
            request_id = f"{session.session_id}/{index}/{lang}"
            job = RoomJob(session, index, lang, cut_ms, rooms)
            self._jobs[(id(link), request_id)] = job
            for room in rooms:
                self._queue(session, room, lang).expect(index)
            self._metrics.room_jobs.inc()
            await self._home.submit(link, self._submit(session, index, lang, utterance),
                                    session.principal)

    def _submit(self, session: LiveSession, index: int, lang: str, utterance: Utterance) -> Submit:
        opened = session.open
        same = lang == session.src_lang
        return Submit(
            request_id=f"{session.session_id}/{index}/{lang}",
            src_lang=session.src_lang,
            tgt_lang=lang,
            session_id=session.session_id,
            features=opened.features,
            pipeline=ASR_ONLY if same else opened.pipeline,
            preferred_pool=opened.preferred_pool,
            timeout_ms=opened.timeout_ms,
            payload={
                "audio": utterance.audio,
                "audio_format": msgspec.structs.asdict(opened.audio_format),
                "utterance_index": index,
                "duration_ms": utterance.duration_ms,
            },
        )

    def _link(self, session: LiveSession) -> RoomLink:
        link = self._links.get(id(session))
        if link is None:
            link = self._links[id(session)] = RoomLink(f"r{next(self._ids)}", session, self)
            self._home.client_connected(link, session.principal, internal=True)
        return link

    def _queue(self, session: LiveSession, room: str, lang: str) -> LangQueue:
        key = (session.tenant, room, session.session_id, lang)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = LangQueue()
        return queue

    # --- results ---------------------------------------------------------------------------

    def job_message(self, link: RoomLink, message: msgspec.Struct) -> None:
        """The job path's answer about one of a speaker's room jobs."""
        if type(message) is Accepted or type(message) is Progress:
            return  # a room hears results only
        if type(message) is Result:
            job = self._jobs.pop((id(link), message.request_id), None)
            if job is not None:
                self._done(job, message.ok, message.output, message.error)
        elif type(message) is Rejected:
            job = self._jobs.pop((id(link), message.request_id), None)
            if job is not None:
                self._done(job, False, None, ErrorInfo(message.code, message.message))

    def _done(self, job: RoomJob, ok: bool, output: Any, error: ErrorInfo | None) -> None:
        speaker = job.speaker
        for room, hubs in job.rooms.items():
            result = RoomResult(
                room=room, speaker=speaker.session_id, index=job.index, lang=job.lang, ok=ok,
                output=output, error=error,
            )
            key = (speaker.tenant, room, speaker.session_id, job.lang)
            queue = self._queues.get(key)
            if queue is None:
                continue
            for due in queue.done(job.index, result):
                self._fan_out(speaker.tenant, due, job.cut_ms, hubs)
            if not queue:
                del self._queues[key]

    def _fan_out(self, tenant: str, result: RoomResult, cut_ms: int, hubs: set[str]) -> None:
        self.deliver(tenant, result, cut_ms)
        for hub in hubs:
            if self._peers.is_live(hub):
                self._peers.send(hub, RoomDeliver(
                    self.hub_id, tenant=tenant, cut_ms=cut_ms, result=result
                ))

    def deliver(self, tenant: str, result: RoomResult, cut_ms: int) -> None:
        """A room result for this hub's members listening in its language (from a
        speaker here, or another hub's `RoomDeliver`)."""
        members = self.local.get((tenant, result.room))
        if not members:
            return
        for member in members.values():
            if member.lang == result.lang and member.joined_ms <= cut_ms:
                if member.speaker is not None and member.speaker.session_id == result.speaker:
                    continue
                member.conn.queue(result)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        self._chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("a room task failed")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


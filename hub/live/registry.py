"""`LiveSessions`: this hub's live sessions, by tenant and session id, and their timers.

What a client connection's session messages do (`open`, `audio`, `close`),
what its end does (`connection_lost`: its sessions are detached, not closed),
and what the hub's lifecycle does to sessions (`drain`: cut what is
buffered; `shutdown`: `session_closed` `hub_shutdown`).

Timers cost nothing per chunk: a chunk only records when it came
(`last_audio_ms`). One deadline per session waits in the hub's
`DeadlineLoop` for its pause: when it fires early (audio came meanwhile) it
is pushed again to the new moment, so a session streaming steadily costs one
heap entry, moved once per `pause_ms`. A detached session with nothing
running gets one idle deadline (`session_idle_ms`).

The store keeps what must survive this hub: each session's record (its
parameters, next index and last audio chunk taken; saved at open and with
every cut) and each running utterance's audio (saved at the cut, dropped at
its result). A client reopening the session elsewhere (`resume_after`) gets
it from there; the hub that held it is told (`SessionTaken`) and lets it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Final

from loguru import logger

from hub.cluster.peers import Peers
from hub.core import error_codes
from hub.core.capabilities import AT_CAPACITY, DRAINING, OFFLINE, Requirements
from hub.core.config import HubConfig
from hub.core.envelopes import SessionTaken
from hub.core.errors import ProtocolError, StoreUnavailable
from hub.core.fleet_view import FleetView
from hub.core.messages import (
    AUTO,
    Audio,
    RoomJoin,
    SessionClose,
    SessionClosed,
    SessionOpen,
    SessionOpened,
    UtteranceResult,
)
from hub.core.metrics import Metrics
from hub.core.principal import Principal
from hub.core.selector import breakdown
from hub.core.stages import both_ways
from hub.core.utterances import CLOSE, PAUSE, SeqGap
from hub.jobs.home.home import JobHome
from hub.jobs.links import Link
from hub.live.rooms import Rooms
from hub.live.session import LiveSession, decode_payload, decode_record, encode_record
from hub.runtime.deadline_loop import Clock, DeadlineLoop
from hub.store.base import Store

CLOSED: Final = "closed"
REPLACED: Final = "replaced"
IDLE_TIMEOUT: Final = "idle_timeout"
HUB_SHUTDOWN: Final = "hub_shutdown"

Key = tuple[str, str]
"""(tenant, session id)."""
Timer = tuple[str, Key]
"""("pause" | "idle", key)."""

_SERVING: Final = (AT_CAPACITY, DRAINING, OFFLINE, "eligible")
"""Breakdown reasons of nodes that do serve a pipeline (busy or not)."""


class LiveSessions:
    def __init__(
        self, *, config: HubConfig, home: JobHome, store: Store, peers: Peers,
        fleet: FleetView, metrics: Metrics, clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.hub_id = config.hub_id
        self._home = home
        self._store = store
        self._peers = peers
        self._fleet = fleet
        self._metrics = metrics
        self.clock = clock if clock is not None else Clock()
        self.sessions: dict[Key, LiveSession] = {}
        self._by_conn: dict[str, dict[str, Key]] = {}
        """A connection's sessions: peer id -> session id -> key."""
        self._chores: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.timers: DeadlineLoop[Timer] = DeadlineLoop(self.clock, self._due)
        self.accepting = True
        """False once the hub drains: `session_open` and new audio are refused."""
        # The record outlives every binding of its utterances' request ids, so that a
        # session id reopened later goes on counting instead of meeting old results.
        self._record_ttl_ms = (
            config.idempotency_ttl_ms + config.job_budget_ms(None) + config.session_idle_ms
        )
        self._utterance_ttl_ms = config.job_budget_ms(None) + config.session_idle_ms
        self.rooms = Rooms(config=config, home=home, store=store, peers=peers, metrics=metrics)

    def __repr__(self) -> str:
        return f"LiveSessions({len(self.sessions)} sessions)"

    def __len__(self) -> int:
        return len(self.sessions)

    async def run(self) -> None:
        """Fire pause and idle deadlines; runs until cancelled."""
        await self.timers.run()

    # --- client messages --------------------------------------------------------------

    async def open(self, conn: Link, principal: Principal, message: SessionOpen) -> None:
        """`session_open`: a new session, the same one again (its connection replaced),
        or one resumed from the store. Answers `session_opened`; `ProtocolError`
        to refuse (`session_limit`, `no_node` with reasons, `hub_shutdown`, ...)."""
        sid = message.session_id
        if not self.accepting:
            raise ProtocolError(
                error_codes.HUB_SHUTDOWN, "the hub is shutting down", session_id=sid
            )
        _validate(message)
        key = (principal.tenant, sid)
        held = self._by_conn.get(conn.peer_id, {})
        if sid not in held and len(held) >= self.config.max_sessions_per_connection:
            raise ProtocolError(
                error_codes.SESSION_LIMIT,
                f"this connection holds {len(held)} sessions (max_sessions_per_connection "
                f"is {self.config.max_sessions_per_connection})", session_id=sid,
            )
        self._check_served(message)
        session = self.sessions.get(key)
        taken_from: str | None = None
        if session is None:
            session, taken_from = await self._load(principal, message)
            self.sessions[key] = session
            self._home.client_connected(session.link, principal, internal=True)
        else:
            session.open = message
        resumed = message.resume_after is not None
        if session.conn is not None and session.conn is not conn:
            self._send_closed(session, REPLACED)
            self._forget_conn(session.conn, key)
        self._by_conn.setdefault(conn.peer_id, {})[sid] = key
        self.timers.discard(("idle", key))
        conn.queue(SessionOpened(
            session_id=sid, resumed=resumed, next_index=session.next_index,
            last_seq=session.cutter.last_seq,
        ))
        session.connect(conn, message.resume_after)
        session.flush()
        if taken_from is not None and taken_from != self.hub_id and self._peers.is_live(
            taken_from
        ):
            self._peers.send(taken_from, SessionTaken(self.hub_id, tenant=key[0], session_id=sid))
        try:
            await session.save()
        except StoreUnavailable as exc:
            logger.warning("live session {}: saving its record failed: {}", sid, exc)

    async def _load(
        self, principal: Principal, message: SessionOpen
    ) -> tuple[LiveSession, str | None]:
        """A session this hub does not hold: from its record if the store has one (the
        index counter goes on), else new; and the hub that held it, if any."""
        data = await self._store.load_live(principal.tenant, message.session_id)
        next_index, last_seq, holder = 0, -1, None
        if data is not None:
            record = decode_record(data)
            next_index, last_seq, holder = record.next_index, record.last_seq, record.holder
        session = LiveSession(
            hub_id=self.hub_id, peer_id=f"s{next(self._ids)}", principal=principal,
            open_message=message, submit=self._home.submit, persist=self._persist,
            load_payload=self._load_payload, resulted=self._resulted,
            settled=self._maybe_closed, next_index=next_index, last_seq=last_seq,
        )
        return session, holder

    def _check_served(self, message: SessionOpen) -> None:
        """`no_node` (with reasons) when no node in the fleet serves the session's
        pipeline at all; a busy, draining or offline one still counts."""
        langs = message.langs if message.src_lang == AUTO else None
        req = Requirements(
            src_lang=message.src_lang, tgt_lang=message.tgt_lang or AUTO,
            pipeline=message.pipeline, features=frozenset(message.features),
            directions=() if langs is None else both_ways(langs[0], langs[1]),
        )
        reasons = breakdown(self._fleet.snapshot, req)
        if not any(reasons.get(reason) for reason in _SERVING):
            detail = ", ".join(f"{r}={n}" for r, n in reasons.items()) or "no nodes"
            raise ProtocolError(
                error_codes.NO_NODE, f"no node serves this session ({detail})",
                session_id=message.session_id, reasons=reasons,
            )

    def audio(self, conn: Link, message: Audio) -> None:
        """An `audio` chunk: buffered, and cut into an utterance by the rules."""
        session = self._attached(conn, message.session_id)
        if not self.accepting:
            raise ProtocolError(
                error_codes.HUB_SHUTDOWN, "the hub is shutting down: audio is not taken",
                session_id=session.session_id,
            )
        self._metrics.audio_bytes.inc(amount=len(message.data))
        try:
            utterance = session.cutter.add(
                message.seq, message.data, is_final=message.is_final,
                duration_ms=message.duration_ms,
            )
        except SeqGap as exc:
            raise ProtocolError(
                error_codes.INVALID_FIELD, str(exc), path="$.seq", session_id=session.session_id
            ) from None
        if utterance is not None:
            self._metrics.utterances.inc(utterance.cut)
            self.rooms.spoken(session, session.cut(utterance), utterance)
        elif session.cutter.buffered:
            now = self.clock.now_ms()
            session.last_audio_ms = now
            pause_ms = session.open.pause_ms
            if pause_ms and not session.pause_armed:
                session.pause_armed = True
                self.timers.push(now + pause_ms, ("pause", (session.tenant, session.session_id)))

    def _cut(self, session: LiveSession, reason: str) -> None:
        """Cut what the session buffered, if anything (a pause, a close, a drain)."""
        utterance = session.cutter.cut(reason)
        if utterance is not None:
            self._metrics.utterances.inc(utterance.cut)
            self.rooms.spoken(session, session.cut(utterance), utterance)

    async def close(self, conn: Link, message: SessionClose) -> None:
        """`session_close`: cut what is buffered; `session_closed` once every utterance
        is delivered."""
        session = self._attached(conn, message.session_id)
        self._cut(session, CLOSE)
        session.closing = True
        self._maybe_closed(session)

    def _attached(self, conn: Link, session_id: str) -> LiveSession:
        keys = self._by_conn.get(conn.peer_id)
        key = None if keys is None else keys.get(session_id)
        session = None if key is None else self.sessions.get(key)
        if session is None or session.conn is not conn:
            raise ProtocolError(
                error_codes.UNKNOWN_SESSION,
                f"no open session {session_id} on this connection", session_id=session_id,
            )
        return session

    # --- the connection's end, another hub, timers ------------------------------------

    async def join_room(self, conn: Link, principal: Principal, message: RoomJoin) -> None:
        """`room_join`: with `session_id`, that session of this connection speaks into
        the room too."""
        speaker = None
        if message.session_id is not None:
            try:
                speaker = self._attached(conn, message.session_id)
            except ProtocolError as exc:
                exc.room = message.room
                raise
        await self.rooms.join(conn, principal, message, speaker)

    def connection_lost(self, conn: Link) -> None:
        """The client's connection ended: its sessions live on, detached; its rooms
        memberships end."""
        self.rooms.connection_lost(conn)
        for key in self._by_conn.pop(conn.peer_id, {}).values():
            session = self.sessions.get(key)
            if session is None or session.conn is not conn:
                continue
            session.detach()
            self._arm_idle(session)

    def taken(self, envelope: SessionTaken) -> None:
        """Another hub opened one of this hub's sessions: let it go."""
        key = (envelope.tenant, envelope.session_id)
        session = self.sessions.get(key)
        if session is None:
            return
        logger.info("live session {} moved to hub {}", envelope.session_id, envelope.sender)
        if session.conn is not None:
            self._send_closed(session, REPLACED)
        self._forget(session)

    def _arm_idle(self, session: LiveSession) -> None:
        """A detached session with nothing running is idle from now on: it ends
        `session_idle_ms` later unless a client reopens it or work arrives."""
        if session.conn is None and not session.running and not session.tasks:
            session.idle_since_ms = self.clock.now_ms()
            self.timers.push(
                session.idle_since_ms + self.config.session_idle_ms,
                ("idle", (session.tenant, session.session_id)),
            )

    async def _due(self, timer: Timer) -> None:
        kind, key = timer
        session = self.sessions.get(key)
        if session is None:
            return
        now = self.clock.now_ms()
        if kind == "pause":
            if not session.cutter.buffered:
                session.pause_armed = False
                return
            due = session.last_audio_ms + session.open.pause_ms
            if now < due:
                self.timers.push(due, timer)  # audio came meanwhile: wait for its pause
                return
            session.pause_armed = False
            self._cut(session, PAUSE)
            return
        # idle: detached long enough, with nothing running, is over
        since = session.idle_since_ms
        if session.conn is not None or session.running or session.tasks or since is None:
            return  # not idle now; it is armed again when it is
        if now - since >= self.config.session_idle_ms:
            logger.info("live session {} idle: closed", session.session_id)
            self._forget(session)

    # --- results ------------------------------------------------------------------------

    async def _persist(
        self, session: LiveSession, index: int | None, payload: bytes | None
    ) -> None:
        utterance = None if index is None or payload is None else (
            index, payload, self._utterance_ttl_ms
        )
        await self._store.save_live(
            session.tenant, session.session_id, encode_record(session.record()),
            self._record_ttl_ms, utterance=utterance,
        )

    async def _load_payload(self, session: LiveSession, index: int) -> dict[str, Any] | None:
        data = await self._store.load_utterance(session.tenant, session.session_id, index)
        return None if data is None else decode_payload(data)

    def _resulted(self, session: LiveSession, index: int, result: UtteranceResult) -> None:
        seconds = session.cut_seconds(index)
        if seconds is not None:
            self._metrics.utterance_seconds.observe(seconds)
        self._metrics.recent_utterances.finished(
            time.monotonic(), code=None if result.ok else (
                result.error.code if result.error else error_codes.FAILED
            ), seconds=seconds,
        )
        self._background(self._drop(session, index))
        self._maybe_closed(session)

    async def _drop(self, session: LiveSession, index: int) -> None:
        with contextlib.suppress(StoreUnavailable):  # it lapses by itself
            await self._store.drop_utterance(session.tenant, session.session_id, index)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _maybe_closed(self, session: LiveSession) -> None:
        if session.closing and not session.closed and session.drained:
            self._send_closed(session, CLOSED)
            self._forget(session)
        elif session.conn is None and not session.running and session.idle_since_ms is None:
            self._arm_idle(session)

    def _send_closed(self, session: LiveSession, reason: str) -> None:
        if session.conn is not None:
            session.conn.queue(SessionClosed(
                session_id=session.session_id, reason=reason, utterances=session.next_index
            ))

    def _forget_conn(self, conn: Link, key: Key) -> None:
        keys = self._by_conn.get(conn.peer_id)
        if keys is not None and keys.get(key[1]) == key:
            del keys[key[1]]
            if not keys:
                del self._by_conn[conn.peer_id]

    def _forget(self, session: LiveSession) -> None:
        key = (session.tenant, session.session_id)
        if self.sessions.get(key) is not session:
            return
        session.closed = True
        del self.sessions[key]
        if session.conn is not None:
            self._forget_conn(session.conn, key)
            session.conn = None
        self.timers.discard(("pause", key))
        self.timers.discard(("idle", key))
        self.rooms.session_gone(session)
        self._home.client_disconnected(session.link)

    # --- the hub's lifecycle ----------------------------------------------------------

    async def drain(self) -> None:
        """The hub drains: no new session or audio; what each session buffered is cut
        now (`cut: close`) and submitted before the job path stops taking submits, so
        that it runs and is delivered while running jobs finish."""
        self.accepting = False
        for session in list(self.sessions.values()):
            self._cut(session, CLOSE)
        starting = [task for s in self.sessions.values() for task in s.tasks]
        if starting:
            await asyncio.wait(starting)

    @property
    def busy(self) -> int:
        """Utterances cut and not yet submitted (a drain waits for them too)."""
        return sum(len(s.tasks) for s in self.sessions.values())

    def shutdown(self) -> None:
        """The hub stops: every session with a connection gets `session_closed`
        `hub_shutdown` (after the results that made it)."""
        self.accepting = False
        for session in list(self.sessions.values()):
            session.flush()
            self._send_closed(session, HUB_SHUTDOWN)
            self._forget(session)

    def sessions_of(self, conn: Link) -> Iterable[LiveSession]:
        for key in self._by_conn.get(conn.peer_id, {}).values():
            session = self.sessions.get(key)
            if session is not None:
                yield session


def _validate(message: SessionOpen) -> None:
    """What the message's types cannot say: `tgt_lang` unless two-way; two-way
    (`src_lang: auto`) with exactly two distinct `langs`, which go with it only."""
    sid = message.session_id
    langs = message.langs
    if message.src_lang == AUTO:
        if langs is None or len(langs) != 2 or langs[0] == langs[1]:
            raise ProtocolError(
                error_codes.INVALID_FIELD,
                "a two-way session (src_lang: auto) needs `langs`: two distinct languages",
                path="$.langs", session_id=sid,
            )
        return
    if message.tgt_lang is None:
        raise ProtocolError(
            error_codes.MISSING_FIELD, "missing required field `tgt_lang`", path="$.tgt_lang",
            session_id=sid,
        )
    if langs is not None:
        raise ProtocolError(
            error_codes.INVALID_FIELD, "`langs` goes with src_lang: auto only", path="$.langs",
            session_id=sid,
        )

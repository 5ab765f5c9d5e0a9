"""`LiveSession`: one live speech session: its audio cut into utterance jobs, their
results sent back in order.

A session is the hub's, not its connection's: it outlives a dropped
connection (until `session_idle_ms`) and a client reattaches to it with
`session_open` (`connect`), on this hub or another one (`LiveSessions`, which
owns the sessions and their timers, builds it there from the store).

Each cut utterance is a job submitted through the same call a client's
`submit` makes (`JobHome.submit`), under the request id `<session_id>/<index>`,
by a `Link` of the session's own (`SessionLink`): the job path answers it as
it answers any client (`accepted` or `rejected`, `progress`, `result`), and
this class turns those answers into `utterance_cut`, `partial` and
`utterance_result`. Results wait in `InOrder` until every earlier utterance
has its own, then go to the session's connection, if it has one. A resume
(`connect` with `resume_after`) delivers again what the session still holds,
and asks the job path again (the same request ids: idempotent) for the rest:
from the archive, from a job still running anywhere, or by running again one
whose hub died (its audio was saved in the store at the cut).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from loguru import logger

from hub.core.errors import StoreUnavailable
from hub.core.messages import (
    AUTO,
    Accepted,
    AudioFormat,
    ErrorInfo,
    Partial,
    Progress,
    Rejected,
    Result,
    SessionOpen,
    Submit,
    UtteranceCut,
    UtteranceResult,
)
from hub.core.principal import Principal
from hub.core.utterances import Cutter, InOrder, Utterance
from hub.jobs.links import Link

Submitter = Callable[[Link, Submit, Principal], Awaitable[None]]
"""How a session submits an utterance job (`JobHome.submit`)."""


class LiveRecord(msgspec.Struct, kw_only=True):
    """What survives the session's hub, in the store: enough for another hub to go
    on (the index counter, the audio it took, its parameters) and for a hub that held
    it to learn it moved."""

    open: SessionOpen
    next_index: int
    last_seq: int
    holder: str
    """The hub that holds the session now."""


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(LiveRecord)
_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def encode_record(record: LiveRecord) -> bytes:
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> LiveRecord:
    record: LiveRecord = _record_decoder.decode(data)
    return record


@dataclass(slots=True)
class PendingCut:
    """An utterance cut and submitted, not yet announced (`utterance_cut` waits for
    its job id)."""

    cut: str
    duration_ms: int | None
    size: int
    last_seq: int


class SessionLink:
    """The `Link` a session's utterance jobs answer through: the job path's messages go
    to the session, never to a socket, so they never wait on a peer either."""

    __slots__ = ("_session", "peer_id")

    def __init__(self, peer_id: str, session: LiveSession) -> None:
        self.peer_id = peer_id
        self._session = session

    async def send(self, message: msgspec.Struct) -> None:
        self._session.job_message(message)

    def queue(self, message: msgspec.Struct, *, flush: bool = False) -> None:
        self._session.job_message(message)

    async def close(self, code: int, reason: str) -> None:
        return None

    def abort(self) -> None:
        return None


class LiveSession:
    def __init__(
        self,
        *,
        hub_id: str,
        peer_id: str,
        principal: Principal,
        open_message: SessionOpen,
        submit: Submitter,
        persist: Callable[[LiveSession, int | None, bytes | None], Awaitable[None]],
        load_payload: Callable[[LiveSession, int], Awaitable[dict[str, Any] | None]],
        resulted: Callable[[LiveSession, int, UtteranceResult], None],
        settled: Callable[[LiveSession], None],
        next_index: int = 0,
        last_seq: int = -1,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """`persist(session, index, payload)` saves the record (and an utterance's
        payload); `load_payload` reads a running utterance's payload back (a resume
        asks for it again); `resulted` is told of every result (metrics, store);
        `settled`, whenever an utterance's start is over (the session may be done)."""
        self.hub_id = hub_id
        self.principal = principal
        self.tenant = principal.tenant
        self.session_id = open_message.session_id
        self.open = open_message
        self.link = SessionLink(peer_id, self)
        self.conn: Link | None = None
        """The client connection the session is attached to (None while detached)."""
        self.cutter = Cutter(
            open_message.audio_format, open_message.max_utterance_ms,
            open_message.max_utterance_bytes, last_seq=last_seq,
        )
        self.next_index = next_index
        self.last_cut_seq = last_seq
        """The last audio chunk in an utterance cut so far (-1: none)."""
        self.results: InOrder[UtteranceResult] = InOrder(next_index)
        self.running: dict[int, str | None] = {}
        """Utterances submitted and not resulted: index -> job id (None until accepted)."""
        self.job_index: dict[str, int] = {}
        self._pending_cuts: dict[int, PendingCut] = {}
        self._cut_at: dict[int, float] = {}
        self.affinity: str | None = None
        """The node that served the last utterance: the next one goes there if it can."""
        self.closing = False
        """`session_close` came: it ends once every utterance is delivered."""
        self.closed = False
        self.last_audio_ms = 0
        self.pause_armed = False
        self.idle_since_ms: int | None = None
        """Since when the session is detached with nothing running (None: it is not)."""
        self.tasks: set[asyncio.Task[None]] = set()
        self._saving = asyncio.Lock()
        self._submit = submit
        self._persist = persist
        self._load_payload = load_payload
        self._resulted = resulted
        self._settled = settled
        self._now = now

    def __repr__(self) -> str:
        state = "attached" if self.conn is not None else "detached"
        return (
            f"LiveSession({self.session_id!r}, {state}, next={self.next_index}, "
            f"running={len(self.running)})"
        )

    @property
    def audio_format(self) -> AudioFormat:
        return self.open.audio_format

    @property
    def src_lang(self) -> str:
        return self.open.src_lang

    @property
    def tgt_lang(self) -> str:
        return AUTO if self.two_way is not None else (self.open.tgt_lang or "")

    @property
    def two_way(self) -> tuple[str, str] | None:
        """The two languages of a two-way session (`src_lang: auto`)."""
        langs = self.open.langs
        if self.open.src_lang == AUTO and langs is not None and len(langs) == 2:
            return langs[0], langs[1]
        return None

    def direction(self, output: Any) -> tuple[str, str]:
        """An utterance's (src_lang, tgt_lang): the session's, or in two-way mode the
        language the node detected (`output.src_lang`) and the other one."""
        langs = self.two_way
        if langs is None:
            return self.src_lang, self.tgt_lang
        detected = output.get("src_lang") if isinstance(output, dict) else None
        if detected == langs[0]:
            return langs
        if detected == langs[1]:
            return langs[1], langs[0]
        return AUTO, AUTO

    @property
    def idle(self) -> bool:
        """Nothing left to do for it: detached, nothing running, nothing buffered."""
        return self.conn is None and not self.running and not self.tasks

    def record(self) -> LiveRecord:
        """What the store keeps: the last chunk *cut*, not the last taken: a hub that
        resumes the session from this record has no uncut audio, so the client must
        resend from there."""
        return LiveRecord(
            open=self.open, next_index=self.next_index, last_seq=self.last_cut_seq,
            holder=self.hub_id,
        )

    # --- sending to the client ------------------------------------------------------

    def _send(self, message: msgspec.Struct) -> None:
        if self.conn is not None:
            self.conn.queue(message)

    def flush(self) -> None:
        """Send the results now due, in index order (while attached)."""
        if self.conn is None:
            return
        for result in self.results.due():
            self.conn.queue(result)

    # --- cutting ------------------------------------------------------------------------

    def cut(self, utterance: Utterance) -> int:
        """Make the cut utterance a job: persisted (its audio too), then submitted, in a
        task of the session's (the client's next audio is read meanwhile). Its index."""
        index = self.next_index
        self.next_index += 1
        self.last_cut_seq = utterance.last_seq
        self.running[index] = None
        self.idle_since_ms = None
        self._pending_cuts[index] = PendingCut(
            utterance.cut, utterance.duration_ms, len(utterance.audio), utterance.last_seq
        )
        self._cut_at[index] = self._now()
        payload: dict[str, Any] = {
            "audio": utterance.audio,
            "audio_format": msgspec.structs.asdict(self.audio_format),
            "utterance_index": index,
            "duration_ms": utterance.duration_ms,
        }
        if self.two_way is not None:
            payload["langs"] = list(self.two_way)
        self._spawn(self._start(index, payload))
        return index

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                "live session {}: an utterance failed to start", self.session_id
            )
        self._settled(self)

    async def save(self, index: int | None = None, payload: bytes | None = None) -> None:
        """Save the record (and an utterance's payload) in the store. One save at a time,
        each writing the session's state as it is then: saves on different connections
        could land out of order, and an older record (a smaller next index) must never
        overwrite a newer one."""
        async with self._saving:
            await self._persist(self, index, payload)

    async def _start(self, index: int, payload: dict[str, Any]) -> None:
        try:
            await self.save(index, _payload_encoder.encode(payload))
        except StoreUnavailable as exc:
            # Submitted all the same: in cross-instance mode its binding will most
            # likely be refused too (`store_unavailable`), and that is its answer.
            logger.warning("live session {}: saving utterance {} failed: {}",
                           self.session_id, index, exc)
        await self._submit(self.link, self._utterance_submit(index, payload), self.principal)

    def _utterance_submit(self, index: int, payload: dict[str, Any] | None) -> Submit:
        open_message = self.open
        return Submit(
            request_id=f"{self.session_id}/{index}",
            src_lang=open_message.src_lang,
            tgt_lang=self.tgt_lang,
            session_id=self.session_id,
            features=open_message.features,
            pipeline=open_message.pipeline,
            preferred_node_id=self.affinity,
            preferred_pool=open_message.preferred_pool,
            payload=payload,
            timeout_ms=open_message.timeout_ms,
            langs=list(self.two_way) if self.two_way is not None else None,
        )

    # --- answers from the job path ------------------------------------------------------

    def _index_of(self, request_id: str) -> int | None:
        prefix, _, tail = request_id.rpartition("/")
        if prefix != self.session_id or not tail.isdigit():
            return None
        return int(tail)

    def job_message(self, message: msgspec.Struct) -> None:
        """What the job path sent about one of the session's utterance jobs."""
        if type(message) is Progress:
            index = self.job_index.get(message.job_id)
            if index is not None and index in self.running:
                self._send(Partial(session_id=self.session_id, index=index, data=message.data))
        elif type(message) is Accepted:
            index = self._index_of(message.request_id)
            if index is None:
                return
            self.job_index[message.job_id] = index
            if index in self.running:
                self.running[index] = message.job_id
            self._announce(index, message.job_id)
        elif type(message) is Result:
            index = self._index_of(message.request_id)
            if index is None:
                return
            if message.ok and message.node_id:
                self.affinity = message.node_id
            src, tgt = self.direction(message.output if message.ok else None)
            self._result(index, UtteranceResult(
                session_id=self.session_id, index=index, job_id=message.job_id,
                node_id=message.node_id or None, ok=message.ok, output=message.output,
                error=message.error, src_lang=src, tgt_lang=tgt,
            ))
        elif type(message) is Rejected:
            index = self._index_of(message.request_id)
            if index is None:
                return
            self._announce(index, None)
            self._result(index, UtteranceResult(
                session_id=self.session_id, index=index, job_id=None, node_id=None,
                ok=False, error=ErrorInfo(message.code, message.message),
                src_lang=self.src_lang, tgt_lang=self.tgt_lang,
            ))
        else:  # an `error` after the answer: the job path's own failure, logged there
            logger.debug("live session {}: {}", self.session_id, message)

    def _announce(self, index: int, job_id: str | None) -> None:
        pending = self._pending_cuts.pop(index, None)
        if pending is not None:
            self._send(UtteranceCut(
                session_id=self.session_id, index=index, job_id=job_id, cut=pending.cut,
                duration_ms=pending.duration_ms, size=pending.size, last_seq=pending.last_seq,
            ))

    def _result(self, index: int, result: UtteranceResult) -> None:
        self.running.pop(index, None)
        if result.job_id is not None:
            self.job_index.pop(result.job_id, None)
        if not self.results.add(index, result):
            return  # delivered already (a resume asked again)
        self.flush()
        self._resulted(self, index, result)

    def cut_seconds(self, index: int) -> float | None:
        """How long ago utterance `index` was cut on this hub (once: for the metric)."""
        cut_at = self._cut_at.pop(index, None)
        return None if cut_at is None else self._now() - cut_at

    # --- attaching -------------------------------------------------------------------

    def connect(self, conn: Link, resume_after: int | None) -> None:
        """The session's connection is `conn` now. With `resume_after` (the last index the
        client has), every result after it is delivered again: those the session still
        holds at once, the others once the job path answers their request ids again."""
        self.conn = conn
        self.idle_since_ms = None
        if resume_after is None:
            return
        start = resume_after + 1
        self.results.restart(start)
        for index in range(start, self.next_index):
            if self.results.has(index) or index in self.running:
                continue
            self.running[index] = None
            self._spawn(self._ask_again(index))

    async def _ask_again(self, index: int) -> None:
        """A result the session no longer holds (delivered before a drop, or made on
        another hub): submit its request id again. The job path answers from the job
        wherever it runs, from its record, or, when nobody holds it (its hub died), runs
        it again with the audio saved at the cut."""
        try:
            payload = await self._load_payload(self, index)
        except StoreUnavailable:
            payload = None
        await self._submit(self.link, self._utterance_submit(index, payload), self.principal)

    def detach(self) -> None:
        self.conn = None

    @property
    def drained(self) -> bool:
        """Every utterance cut so far has its result delivered."""
        return not self.running and not self.tasks and self.results.next >= self.next_index

    def missing(self) -> list[int]:
        """Indexes the session waits on (for a resume's log line and tests)."""
        return sorted(self.running)

    def undelivered(self) -> int:
        return self.next_index - self.results.next


def decode_payload(data: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = _payload_decoder.decode(data)
    return payload

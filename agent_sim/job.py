"""What a `NodeAgent`'s job handler and fault policy see.

`JobContext` is one accepted job attempt as passed to the handler,
`JobFailed` is what a handler raises to report `ok: false`, `JobRejected` what
it raises to give the job back to the hub for another node, and
`FaultPolicy` is consulted on each `job_assign` to inject faults.

A job made of a live session's utterance (protocol v1.2, "Utterance jobs")
carries its audio in the payload: bytes from a MessagePack hub, base64 text
from a JSON one. `JobContext.utterance` is that audio as bytes either way,
with its format, index and duration (`Utterance`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from agent_sim.behaviour import FaultDecision
from hub.core.messages import AudioFormat, JobAssign, Pipeline

__all__ = [
    "FaultPolicy",
    "JobContext",
    "JobFailed",
    "JobHandler",
    "JobRejected",
    "Utterance",
    "utterance_of",
]

_UNREAD: Final = object()


@dataclass(frozen=True, slots=True)
class Utterance:
    """A live session's utterance, as its job's payload carries it."""

    audio: bytes
    audio_format: AudioFormat
    index: int
    """The utterance's index in its session (0, 1, ...)."""
    duration_ms: int | None
    """Known for `pcm_s16le`, or when the client gave each chunk's duration."""
    langs: list[str] | None = None
    """A two-way session's two languages (the job's `src_lang` is `"auto"`): the node
    says which one was spoken in its output's `src_lang`."""


def utterance_of(payload: Any) -> Utterance | None:
    """The utterance an utterance job's payload holds; None for any other payload."""
    if not isinstance(payload, dict):
        return None
    audio = payload.get("audio")
    index = payload.get("utterance_index")
    duration = payload.get("duration_ms")
    if type(index) is not int or not (duration is None or type(duration) is int):
        return None
    if isinstance(audio, str):  # a JSON hub sends bytes as base64 text
        try:
            audio = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return None
    if not isinstance(audio, bytes):
        return None
    try:
        audio_format = msgspec.convert(payload.get("audio_format"), AudioFormat)
    except msgspec.ValidationError:
        return None
    langs = payload.get("langs")
    if not (langs is None or (isinstance(langs, list) and all(type(x) is str for x in langs))):
        return None
    return Utterance(
        audio=audio, audio_format=audio_format, index=index, duration_ms=duration, langs=langs
    )


class JobFailed(Exception):
    """Raise from a handler to report `job_result` with `ok: false` and this error."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class JobRejected(Exception):
    """Raise from a handler to give the job back: the agent sends `job_reject` and the
    hub runs the job on another node (this one is excluded for it). For a failure that
    another node would not have (out of GPU memory, a model not loaded): unlike
    `JobFailed`, which is final, the client does not see it, only a later result."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class JobContext:
    """One accepted job attempt, as the handler sees it."""

    __slots__ = (
        "_progress",
        "_utterance",
        "attempt",
        "deadline_ms",
        "features",
        "job_id",
        "node_id",
        "payload",
        "pipeline",
        "session_id",
        "src_lang",
        "tgt_lang",
    )

    def __init__(
        self,
        *,
        node_id: str,
        assign: JobAssign,
        progress: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.node_id: str = node_id
        self.job_id: str = assign.job_id
        self.attempt: int = assign.attempt
        self.session_id: str = assign.session_id
        self.src_lang: str = assign.src_lang
        self.tgt_lang: str = assign.tgt_lang
        self.features: list[str] = assign.features
        self.pipeline: Pipeline = assign.pipeline
        self.payload: Any = assign.payload
        self.deadline_ms: int = assign.deadline_ms
        self._progress = progress
        self._utterance: Any = _UNREAD

    @property
    def utterance(self) -> Utterance | None:
        """The live session's utterance this job is (its audio as bytes, whatever the
        encoding); None for a job submitted otherwise. `payload` stays as it came."""
        if self._utterance is _UNREAD:
            self._utterance = utterance_of(self.payload)
        utterance: Utterance | None = self._utterance
        return utterance

    @property
    def audio(self) -> bytes | None:
        """The utterance's audio (`utterance.audio`), or None."""
        utterance = self.utterance
        return None if utterance is None else utterance.audio

    @property
    def audio_format(self) -> AudioFormat | None:
        """The utterance's audio format (`utterance.audio_format`), or None."""
        utterance = self.utterance
        return None if utterance is None else utterance.audio_format

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, attempt={self.attempt}, "
            f"{self.src_lang}->{self.tgt_lang}, node_id={self.node_id!r})"
        )

    async def progress(self, data: Any) -> None:
        """Send `job_progress`; a no-op once the connection is gone (the job is cancelled)."""
        await self._progress(data)


JobHandler = Callable[[JobContext], Awaitable[Any]]


class FaultPolicy(Protocol):
    """Consulted on each job_assign the agent could accept (not when busy or draining)."""

    def on_assign(self, assign: JobAssign) -> FaultDecision: ...

"""A live session's audio cut into utterances, and its results put back in order. Pure.

`Cutter` buffers one session's audio chunks and cuts an utterance when a
chunk is marked final, when the audio reaches `max_utterance_ms` (computed
for `pcm_s16le`, else the sum of the chunks' `duration_ms`) or
`max_utterance_bytes`, and when its owner says so (a pause, the session
closing). Chunks arrive numbered (`seq`): one the cutter has seen is
ignored (a client resending after a reconnect), a gap is refused. What the
cutter holds is the uncut audio; `Utterance` is what a cut hands out.

`InOrder` holds the results of a session's utterances until every earlier
one has its own, so they leave in index order whatever order the jobs end in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from hub.core.messages import PCM_S16LE, AudioFormat

FINAL: Final = "final"
PAUSE: Final = "pause"
MAX_DURATION: Final = "max_duration"
MAX_BYTES: Final = "max_bytes"
CLOSE: Final = "close"
CUT_REASONS: Final = (FINAL, PAUSE, MAX_DURATION, MAX_BYTES, CLOSE)


@dataclass(frozen=True, slots=True)
class Utterance:
    audio: bytes
    duration_ms: int | None
    """Known for PCM, or when every chunk said its `duration_ms`; else None."""
    cut: str
    first_seq: int
    last_seq: int


class SeqGap(Exception):
    """A chunk numbered past the next one expected (chunks were lost)."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"audio seq {got} arrived, {expected} expected next")
        self.expected = expected
        self.got = got


@dataclass(slots=True)
class Cutter:
    audio_format: AudioFormat
    max_ms: int
    max_bytes: int
    last_seq: int = -1
    """The last chunk taken (cut or not); -1 before the first."""
    _chunks: list[bytes] = field(default_factory=list)
    _size: int = 0
    _declared_ms: float = 0.0
    _undeclared: bool = False
    """A chunk of a non-PCM codec came without `duration_ms`."""
    _first_seq: int = 0

    @property
    def buffered(self) -> int:
        """Bytes of uncut audio held."""
        return self._size

    def _bytes_per_ms(self) -> float:
        fmt = self.audio_format
        return fmt.sample_rate_hz * fmt.channels * 2 / 1000

    def duration_ms(self) -> float | None:
        """The uncut audio's duration, when it can be known."""
        if self.audio_format.codec == PCM_S16LE:
            return self._size / self._bytes_per_ms()
        return None if self._undeclared else self._declared_ms

    def add(
        self, seq: int, data: bytes, *, is_final: bool = False, duration_ms: int | None = None
    ) -> Utterance | None:
        """Take one chunk; the utterance it completes, if any. A chunk already taken
        (`seq` <= `last_seq`) changes nothing; `SeqGap` past the next."""
        if seq <= self.last_seq:
            return None
        if seq != self.last_seq + 1:
            raise SeqGap(self.last_seq + 1, seq)
        if not self._chunks:
            self._first_seq = seq
        self.last_seq = seq
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if duration_ms is None:
            if data and self.audio_format.codec != PCM_S16LE:
                self._undeclared = True
        else:
            self._declared_ms += duration_ms
        if is_final:
            return self.cut(FINAL)
        if self._size >= self.max_bytes:
            return self.cut(MAX_BYTES)
        duration = self.duration_ms()
        if duration is not None and duration >= self.max_ms:
            return self.cut(MAX_DURATION)
        return None

    def cut(self, reason: str) -> Utterance | None:
        """Cut what is buffered (None when nothing is)."""
        if not self._size:
            self._chunks.clear()
            return None
        duration = self.duration_ms()
        audio = b"".join(self._chunks)
        utterance = Utterance(
            audio=audio,
            duration_ms=None if duration is None else round(duration),
            cut=reason,
            first_seq=self._first_seq,
            last_seq=self.last_seq,
        )
        self._chunks.clear()
        self._size = 0
        self._declared_ms = 0.0
        self._undeclared = False
        return utterance


R = TypeVar("R")


class InOrder(Generic[R]):
    """Results by utterance index, released in index order from `next`; the last `keep`
    released stay, so that a resume can deliver them again (`restart`)."""

    __slots__ = ("_held", "keep", "next")

    def __init__(self, start: int = 0, *, keep: int = 64) -> None:
        self.next = start
        """The index whose result goes out next."""
        self.keep = keep
        self._held: dict[int, R] = {}

    def __len__(self) -> int:
        return len(self._held)

    def has(self, index: int) -> bool:
        return index in self._held

    def add(self, index: int, result: R) -> bool:
        """Hold a result; False when that index has one already (the first stands)."""
        if index in self._held:
            return False
        self._held[index] = result
        return True

    def due(self) -> list[R]:
        """The results now due, in order (empty while the next one is missing); older
        ones past `keep` are forgotten."""
        held = self._held
        out: list[R] = []
        while self.next in held:
            out.append(held[self.next])
            self.next += 1
        if out:
            floor = self.next - self.keep
            for index in [i for i in held if i < floor]:
                del held[index]
        return out

    def restart(self, start: int) -> None:
        """Release again from `start` (a resume: the client has every result below it);
        the next `due` starts there with what is still held."""
        self.next = start
        for index in [i for i in self._held if i < start]:
            del self._held[index]

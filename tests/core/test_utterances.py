"""The pure parts of live sessions: the cutter's rules and results put back in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.messages import AudioFormat
from hub.core.utterances import (
    CLOSE,
    FINAL,
    MAX_BYTES,
    MAX_DURATION,
    Cutter,
    InOrder,
    SeqGap,
)

PCM16K = AudioFormat()
MS100 = bytes(3200)  # 100 ms of 16 kHz mono 16-bit PCM


def cutter(max_ms: int = 10_000, max_bytes: int = 1 << 20, fmt: AudioFormat = PCM16K) -> Cutter:
    return Cutter(fmt, max_ms, max_bytes)


def test_a_final_chunk_cuts_everything_buffered() -> None:
    c = cutter()
    assert c.add(0, MS100) is None and c.add(1, MS100) is None
    cut = c.add(2, b"\x01\x02", is_final=True)
    assert cut is not None and cut.cut == FINAL
    assert cut.audio == MS100 * 2 + b"\x01\x02" and (cut.first_seq, cut.last_seq) == (0, 2)
    assert c.buffered == 0 and c.last_seq == 2


def test_pcm_duration_is_computed_from_the_format() -> None:
    stereo48k = AudioFormat(sample_rate_hz=48_000, channels=2)
    c = cutter(max_ms=1_000, fmt=stereo48k)
    one_second = bytes(48_000 * 2 * 2)
    cut = c.add(0, one_second[:-4])
    assert cut is None  # a hair short of a second
    cut = c.add(1, b"\x00" * 4)
    assert cut is not None and cut.cut == MAX_DURATION and cut.duration_ms == 1000


def test_other_codecs_use_the_durations_the_chunks_state() -> None:
    opus = AudioFormat(codec="opus")
    c = cutter(max_ms=250, fmt=opus)
    assert c.add(0, b"x" * 10, duration_ms=100) is None
    assert c.add(1, b"x" * 10, duration_ms=100) is None
    cut = c.add(2, b"x" * 10, duration_ms=60)
    assert cut is not None and cut.cut == MAX_DURATION and cut.duration_ms == 260
    # Without durations the limit cannot apply; the size limit and the rest still do.
    c = cutter(max_ms=100, max_bytes=25, fmt=opus)
    assert c.add(0, b"x" * 10) is None and c.add(1, b"x" * 10) is None
    cut = c.add(2, b"x" * 10)
    assert cut is not None and cut.cut == MAX_BYTES and cut.duration_ms is None


def test_resent_chunks_are_ignored_and_a_gap_is_refused() -> None:
    c = cutter()
    c.add(0, MS100)
    c.add(1, MS100)
    assert c.add(1, MS100) is None and c.add(0, b"zz") is None  # resent: ignored
    assert c.buffered == 2 * len(MS100)
    with pytest.raises(SeqGap) as info:
        c.add(3, MS100)
    assert (info.value.expected, info.value.got) == (2, 3)
    assert c.last_seq == 1  # nothing taken


def test_a_cut_of_nothing_is_no_utterance() -> None:
    c = cutter()
    assert c.cut(CLOSE) is None
    assert c.add(0, b"", is_final=True) is None  # an empty final chunk: nothing to cut
    assert c.last_seq == 0


def test_the_seq_count_goes_on_from_a_resumed_point() -> None:
    c = Cutter(PCM16K, 10_000, 1 << 20, last_seq=41)
    assert c.add(41, MS100) is None and c.buffered == 0
    assert c.add(42, MS100) is None and c.buffered == len(MS100)


@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60),
       st.integers(min_value=1024, max_value=20_000))
def test_cuts_lose_and_duplicate_no_audio(sizes: list[int], max_bytes: int) -> None:
    """Whatever the chunks, the utterances cut (plus what is left) are the audio sent,
    in order, and no utterance holds more than one chunk past the size limit."""
    c = cutter(max_ms=600_000, max_bytes=max_bytes)
    sent = b""
    got = b""
    for seq, size in enumerate(sizes):
        chunk = bytes([seq % 251]) * size
        sent += chunk
        cut = c.add(seq, chunk)
        if cut is not None:
            assert len(cut.audio) - size < max_bytes
            got += cut.audio
    rest = c.cut(CLOSE)
    got += b"" if rest is None else rest.audio
    assert got == sent


def test_results_leave_in_index_order() -> None:
    order: InOrder[str] = InOrder()
    assert order.add(2, "c") and order.due() == []
    assert order.add(0, "a") and order.due() == ["a"]
    assert not order.add(0, "again")  # the first result for an index stands
    assert order.add(1, "b") and order.due() == ["b", "c"]
    assert order.next == 3


def test_a_restart_delivers_again_what_is_still_held() -> None:
    order: InOrder[int] = InOrder(keep=2)
    for index in range(5):
        order.add(index, index)
    assert order.due() == [0, 1, 2, 3, 4]
    order.restart(3)
    assert order.due() == [3, 4]
    order.restart(0)  # older than `keep`: forgotten, so nothing is due from 0
    assert order.due() == [] and not order.has(0) and order.has(3)


@given(st.permutations(list(range(12))))
def test_any_arrival_order_releases_each_once_in_order(arrival: list[int]) -> None:
    order: InOrder[int] = InOrder()
    released: list[int] = []
    for index in arrival:
        order.add(index, index)
        released += order.due()
    assert released == list(range(12))

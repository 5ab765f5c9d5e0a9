"""The live benchmark's load generator: raw-websockets MessagePack clients, one process.

Modes (`--mode`):
- `ingest`: `--conns` connections, `--sessions-per-conn` sessions each
  (`pause_ms: 0`, `max_utterance_ms: 600000`: cut only by
  `max_utterance_bytes`, few cuts), each connection writing 100 ms PCM chunks
  (3,200 bytes) as fast as its socket takes them (`--batch` frames a write,
  websockets' flow control between writes) for `--duration` seconds. Against the
  floor (`--target floor`) the same frames, without `session_open`. Prints
  `{"sent": frames, ...}`.
- `realtime`: `--sessions` sessions, each writing one 100 ms chunk every
  100 ms (each session at its own phase within the 100 ms), every utterance
  `--min-chunks`..`--max-chunks` chunks long, its last chunk `is_final`. Starts at
  the wall-clock time read from stdin (several generators start together), ends
  after `--duration` s: each session, at its next chunk, sends an empty
  `is_final` chunk (a cut if anything is buffered) and `session_close`, then
  waits for `session_closed`. Per utterance: cut lag (the final chunk written
  -> its `utterance_cut` read) and result lag (-> its `utterance_result` read);
  per chunk: how late it was written against its schedule (the generator's own
  lateness: a rig that falls behind is not the hub's fault).
- `overhead`: one connection, one session; `--count` rounds (after
  `--warmup`), each: one utterance (`--chunks` chunks written, a pause for the
  hub to take them, then the final chunk: timed to its `utterance_cut` and its
  `utterance_result`), one plain `submit` (payload `"x"`, timed to its `result`)
  and one `submit` carrying the same audio as its payload (`{"audio": bytes,
  ...}`), in a rotating order, one thing in flight at a time.
- `idle`: `--sessions` sessions over connections of `--sessions-per-conn`
  each, opened then left alone (no audio at all); prints `{"ready": N}` and
  holds them until SIGTERM. With `--no-open`, the connections only (no
  `session_open`): what the connections alone cost.

Usage: python benchmarks/_live_load.py --url ws://127.0.0.1:P --mode ingest
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvloop
from _procs import emit, raise_nofile
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

MSGPACK = Subprotocol("hub.v1.msgpack")
RATE_HZ = 16_000
CHUNK_MS = 100
CHUNK = bytes(RATE_HZ * 2 * CHUNK_MS // 1000)  # 100 ms of 16 kHz mono s16le: 3,200 bytes
HANDSHAKES_AT_ONCE = 200


class AudioMsg(msgspec.Struct, tag_field="type", tag="audio", omit_defaults=True):
    session_id: str
    seq: int
    data: bytes
    is_final: bool = False


class Reply(msgspec.Struct):
    """What the generator reads of the hub's messages (other fields are skipped)."""

    type: str
    session_id: str = ""
    index: int = -1
    request_id: str = ""
    ok: bool = True
    code: str = ""
    message: str = ""
    cut: str = ""
    error: Any = None
    """A failed `utterance_result`'s `{code, message}`."""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Reply).decode


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def session_open(sid: str, args: argparse.Namespace, **extra: Any) -> bytes:
    return _encode({"type": "session_open", "session_id": sid, "src_lang": args.src,
                    "tgt_lang": args.tgt, **extra})


async def _connect(args: argparse.Namespace) -> ClientConnection:
    path = "/client" if args.target == "floor" else "/v1/client"
    return await connect(args.url.rstrip("/") + path, subprotocols=[MSGPACK],
                         compression=None, ping_interval=None, max_size=None,
                         open_timeout=120, close_timeout=2)


async def _open_sessions(ws: ClientConnection, sids: list[str], args: argparse.Namespace,
                         **extra: Any) -> None:
    """Open `sids` on `ws` and read their `session_opened` (anything else: an error)."""
    for sid in sids:
        await ws.send(session_open(sid, args, **extra))
    for _ in sids:
        reply = _decode(await ws.recv())
        if reply.type != "session_opened":
            raise RuntimeError(f"session_open refused: {reply}")


async def open_conns(args: argparse.Namespace, sessions: int, per_conn: int,
                     **extra: Any) -> list[tuple[ClientConnection, list[str]]]:
    """`sessions` sessions over connections of `per_conn` each (none against the
    floor), `HANDSHAKES_AT_ONCE` connections opening at a time."""
    groups = [
        [f"{args.prefix}{i}" for i in range(first, min(sessions, first + per_conn))]
        for first in range(0, sessions, per_conn)
    ]

    async def one(sids: list[str]) -> tuple[ClientConnection, list[str]]:
        ws = await _connect(args)
        if args.target == "hub" and not args.no_open:
            await _open_sessions(ws, sids, args, **extra)
        return ws, sids

    out: list[tuple[ClientConnection, list[str]]] = []
    for first in range(0, len(groups), HANDSHAKES_AT_ONCE):
        batch = groups[first:first + HANDSHAKES_AT_ONCE]
        out.extend(await asyncio.gather(*(one(g) for g in batch)))
    return out


@dataclass
class Tally:
    errors: int = 0
    error_sample: str | None = None
    cuts: int = 0
    results: int = 0
    failed_results: int = 0
    closed: int = 0

    def error(self, reply: Reply) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = f"{reply.type} {reply.code} {reply.message}"[:300]


# --- ingest ----------------------------------------------------------------------------


async def _count_replies(ws: ClientConnection, tally: Tally) -> None:
    try:
        async for frame in ws:
            reply = _decode(frame)
            if reply.type == "utterance_cut":
                tally.cuts += 1
            elif reply.type == "utterance_result":
                tally.results += 1
            elif reply.type == "error":
                tally.error(reply)
    except Exception:  # the connection ends with the run
        return


async def ingest(args: argparse.Namespace) -> None:
    conns = await open_conns(args, args.conns * args.sessions_per_conn, args.sessions_per_conn,
                             pause_ms=0, max_utterance_ms=600_000)
    tally = Tally()
    readers = [asyncio.create_task(_count_replies(ws, tally)) for ws, _ in conns]
    emit(ready=len(conns))
    sent = [0]
    deadline = time.monotonic() + args.duration

    async def flood(ws: ClientConnection, sids: list[str]) -> None:
        protocol = ws.protocol
        seqs = dict.fromkeys(sids, 0)
        batch = args.batch
        try:
            while time.monotonic() < deadline:
                # `batch` frames a write, round-robin over the connection's sessions;
                # the context's exit waits while the socket's buffer is over its limit.
                async with ws.send_context():
                    for i in range(batch):
                        sid = sids[i % len(sids)]
                        seq = seqs[sid]
                        seqs[sid] = seq + 1
                        protocol.send_binary(_encode(AudioMsg(sid, seq, CHUNK)))
                sent[0] += batch
        except Exception as exc:  # a closed connection ends this flood only
            tally.errors += 1
            tally.error_sample = tally.error_sample or f"send: {exc!r}"

    cpu_before = cpu_seconds()
    started = time.monotonic()
    await asyncio.gather(*(flood(ws, sids) for ws, sids in conns))
    elapsed = time.monotonic() - started
    emit(sent=sent[0], seconds=elapsed, cpu_s=cpu_seconds() - cpu_before,
         errors=tally.errors, error_sample=tally.error_sample, cuts=tally.cuts,
         results=tally.results)
    for task in readers:
        task.cancel()


# --- real time -----------------------------------------------------------------------


@dataclass(eq=False)
class Live:
    sid: str
    ws: ClientConnection
    rng: random.Random
    seq: int = 0
    index: int = 0
    left: int = 0
    """Chunks left in the current utterance."""
    final_sent: dict[int, tuple[float, bool]] = field(default_factory=dict)
    """Utterance index -> (when its final chunk was written, within the measured window)."""
    next_result: int = 0
    out_of_order: int = 0
    ending: bool = False
    closed: bool = False


class Realtime:
    def __init__(self, args: argparse.Namespace,
                 conns: list[tuple[ClientConnection, list[str]]]) -> None:
        self.args = args
        rng = random.Random(args.seed)
        self.sessions = [Live(sid, ws, random.Random(rng.random())) for ws, sids in conns
                         for sid in sids]
        self.by_sid = {s.sid: s for s in self.sessions}
        self.tally = Tally()
        self.cut_lags: list[float] = []
        self.result_lags: list[float] = []
        self.late: list[float] = []
        self.cut_by: dict[str, int] = {}
        self.failed_by: dict[str, int] = {}
        self.frames = 0
        self.finals = 0
        self.max_buffer = 0
        self.all_closed = asyncio.Event()
        self.open_count = len(self.sessions)

    def _utterance_chunks(self, live: Live) -> int:
        return live.rng.randint(self.args.min_chunks, self.args.max_chunks)

    async def read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                now = time.monotonic()
                reply = _decode(frame)
                kind = reply.type
                if kind == "utterance_cut":
                    self.tally.cuts += 1
                    self.cut_by[reply.cut] = self.cut_by.get(reply.cut, 0) + 1
                    live = self.by_sid[reply.session_id]
                    sent = live.final_sent.get(reply.index)
                    if sent is not None and sent[1]:
                        self.cut_lags.append((now - sent[0]) * 1000)
                elif kind == "utterance_result":
                    self.tally.results += 1
                    if not reply.ok:
                        self.tally.failed_results += 1
                        code = (reply.error or {}).get("code", "?")
                        self.failed_by[code] = self.failed_by.get(code, 0) + 1
                    live = self.by_sid[reply.session_id]
                    if reply.index != live.next_result:
                        live.out_of_order += 1
                    live.next_result = reply.index + 1
                    sent = live.final_sent.pop(reply.index, None)
                    if sent is not None and sent[1]:
                        self.result_lags.append((now - sent[0]) * 1000)
                elif kind == "session_closed":
                    self.tally.closed += 1
                    live = self.by_sid[reply.session_id]
                    if not live.closed:
                        live.closed = True
                        self.open_count -= 1
                        if self.open_count == 0:
                            self.all_closed.set()
                elif kind == "error":
                    self.tally.error(reply)
        except Exception:  # the connection ends with the run
            return

    def _write(self, live: Live, *frames: bytes) -> None:
        ws = live.ws
        protocol = ws.protocol
        for frame in frames:
            protocol.send_binary(frame)
        ws.transport.writelines(protocol.data_to_send())
        size = ws.transport.get_write_buffer_size()
        if size > self.max_buffer:
            self.max_buffer = size

    def _chunk(self, live: Live, now: float, measured: bool) -> None:
        if live.left == 0:
            live.left = self._utterance_chunks(live)
        live.left -= 1
        final = live.left == 0
        self._write(live, _encode(AudioMsg(live.sid, live.seq, CHUNK, final)))
        live.seq += 1
        self.frames += 1
        if final:
            live.final_sent[live.index] = (time.monotonic(), measured)
            live.index += 1
            self.finals += 1

    def _end(self, live: Live) -> None:
        """The session's last chunk: empty and final (a cut of what is buffered), then
        `session_close`."""
        live.ending = True
        if live.left:
            live.final_sent[live.index] = (time.monotonic(), False)
            live.index += 1
            self.finals += 1
        self._write(live, _encode(AudioMsg(live.sid, live.seq, b"", True)),
                    _encode({"type": "session_close", "session_id": live.sid}))
        live.seq += 1

    async def stream(self, start: float) -> None:
        """Every session's chunks on schedule from `start` (monotonic) for `--duration`.

        The generator wakes once a tick (`--tick-ms`) and writes every chunk due by
        then: waking for each chunk's own moment would spin the loop on sub-millisecond
        timers (libuv's resolution is 1 ms) and cost the load more than its writes."""
        args = self.args
        period = CHUNK_MS / 1000
        tick = args.tick_ms / 1000
        end = start + args.duration
        measure_from = start + args.warmup
        heap = [(start + live.rng.random() * period, i) for i, live in enumerate(self.sessions)]
        heapq.heapify(heap)
        late = self.late
        while heap:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, i = heapq.heappop(heap)
                live = self.sessions[i]
                late.append((now - due) * 1000)
                if due >= end:
                    self._end(live)
                    continue
                self._chunk(live, now, due >= measure_from)
                heapq.heappush(heap, (due + period, i))
            if heap:
                # The next tick, or the next chunk due if that is later.
                wake = max(heap[0][0], now + tick)
                await asyncio.sleep(max(0.0, wake - time.monotonic()))

    def report(self, drained: bool, cpu_s: float, seconds: float) -> dict[str, Any]:
        unanswered = sum(len(s.final_sent) for s in self.sessions)
        return {
            "sessions": len(self.sessions),
            "frames": self.frames,
            "utterances": self.finals,
            "cuts": self.tally.cuts,
            "cut_by": self.cut_by,
            "results": self.tally.results,
            "failed_results": self.tally.failed_results,
            "failed_by": self.failed_by,
            "unanswered": unanswered,
            "out_of_order": sum(s.out_of_order for s in self.sessions),
            "closed": self.tally.closed,
            "drained": drained,
            "errors": self.tally.errors,
            "error_sample": self.tally.error_sample,
            "cut_lags_ms": [round(x, 3) for x in self.cut_lags],
            "result_lags_ms": [round(x, 3) for x in self.result_lags],
            "late_p50_ms": pct(self.late, 0.50),
            "late_p99_ms": pct(self.late, 0.99),
            "late_max_ms": max(self.late, default=None),
            "max_write_buffer": self.max_buffer,
            "cpu_s": cpu_s,
            "seconds": seconds,
        }


async def realtime(args: argparse.Namespace) -> None:
    conns = await open_conns(args, args.sessions, args.sessions_per_conn, pause_ms=args.pause_ms,
                             max_utterance_ms=600_000)
    bench = Realtime(args, conns)
    readers = [asyncio.create_task(bench.read(ws)) for ws, _ in conns]
    emit(ready=len(bench.sessions))
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_wall = float(line.strip())
    gc.collect()
    start = time.monotonic() + max(0.0, start_wall - time.time())
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu_before = cpu_seconds()
    await bench.stream(start)
    try:
        await asyncio.wait_for(bench.all_closed.wait(), args.drain_timeout)
        drained = True
    except TimeoutError:
        drained = False
    emit(realtime=bench.report(drained, cpu_seconds() - cpu_before, time.monotonic() - start))
    for task in readers:
        task.cancel()


# --- overhead ----------------------------------------------------------------------------


class Waiter:
    """One thing in flight at a time: the reader completes the futures of the replies the
    round waits for (registered before the frame that asks for them is written: an
    `utterance_result` may be read right behind its `utterance_cut`)."""

    def __init__(self) -> None:
        self.wanted: dict[tuple[str, str], asyncio.Future[float]] = {}
        self.tally = Tally()

    def expect(self, kind: str, key: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.wanted[(kind, key)] = future
        return future

    async def read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            now = time.perf_counter()
            reply = _decode(frame)
            if reply.type == "error" or (reply.type in ("result", "utterance_result")
                                         and not reply.ok):
                self.tally.error(reply)
            key = reply.request_id or f"{reply.session_id}/{reply.index}"
            future = self.wanted.pop((reply.type, key), None)
            if future is not None and not future.done():
                future.set_result(now)


async def overhead(args: argparse.Namespace) -> None:
    (ws, sids), = await open_conns(args, 1, 1, pause_ms=0, max_utterance_ms=600_000)
    sid = sids[0]
    waiter = Waiter()
    reader = asyncio.create_task(waiter.read(ws))
    audio = CHUNK * args.chunks
    audio_payload = {"audio": audio, "audio_format": {"codec": "pcm_s16le",
                     "sample_rate_hz": RATE_HZ, "channels": 1},
                     "utterance_index": 0, "duration_ms": CHUNK_MS * args.chunks}
    seq = 0
    index = 0
    submits = 0
    cut_lags: list[float] = []
    utterance_rtts: list[float] = []
    submit_rtts: list[float] = []
    audio_rtts: list[float] = []

    async def utterance(record: bool) -> None:
        nonlocal seq, index
        for _ in range(args.chunks - 1):
            await ws.send(_encode(AudioMsg(sid, seq, CHUNK)))
            seq += 1
        await asyncio.sleep(args.settle_ms / 1000)  # the hub has taken them: not timed
        cut = waiter.expect("utterance_cut", f"{sid}/{index}")
        result = waiter.expect("utterance_result", f"{sid}/{index}")
        started = time.perf_counter()
        await ws.send(_encode(AudioMsg(sid, seq, CHUNK, True)))
        seq += 1
        cut_at = await asyncio.wait_for(cut, args.timeout)
        result_at = await asyncio.wait_for(result, args.timeout)
        index += 1
        if record:
            cut_lags.append((cut_at - started) * 1000)
            utterance_rtts.append((result_at - started) * 1000)

    async def submit(payload: Any, into: list[float] | None) -> None:
        nonlocal submits
        submits += 1
        request_id = f"{args.prefix}q{submits}"
        frame = _encode({"type": "submit", "request_id": request_id, "src_lang": args.src,
                         "tgt_lang": args.tgt, "payload": payload})
        await asyncio.sleep(args.settle_ms / 1000)  # the same quiet start as an utterance's
        done = waiter.expect("result", request_id)
        started = time.perf_counter()
        await ws.send(frame)
        finished = await asyncio.wait_for(done, args.timeout)
        if into is not None:
            into.append((finished - started) * 1000)

    steps = [
        lambda record: utterance(record),
        lambda record: submit("x", submit_rtts if record else None),
        lambda record: submit(audio_payload, audio_rtts if record else None),
    ]
    cpu_before = cpu_seconds()
    for i in range(args.warmup + args.count):
        record = i >= args.warmup
        if i == args.warmup:
            gc.collect()
        for k in range(3):  # the order rotates: none is always first after the pause
            await steps[(i + k) % 3](record)
    emit(overhead={
        "count": args.count, "chunks": args.chunks, "audio_bytes": len(audio),
        "cut_lags_ms": [round(x, 4) for x in cut_lags],
        "utterance_rtts_ms": [round(x, 4) for x in utterance_rtts],
        "submit_rtts_ms": [round(x, 4) for x in submit_rtts],
        "audio_submit_rtts_ms": [round(x, 4) for x in audio_rtts],
        "errors": waiter.tally.errors, "error_sample": waiter.tally.error_sample,
        "cpu_s": cpu_seconds() - cpu_before,
    })
    reader.cancel()


# --- idle ----------------------------------------------------------------------------------


async def idle(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    conns = await open_conns(args, args.sessions, args.sessions_per_conn)
    emit(ready=0 if args.no_open else sum(len(sids) for _, sids in conns), conns=len(conns))
    await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the hub or the floor")
    parser.add_argument("--mode", choices=("ingest", "realtime", "overhead", "idle"),
                        required=True)
    parser.add_argument("--target", choices=("hub", "floor"), default="hub")
    parser.add_argument("--prefix", default="s", help="session id prefix (unique per process)")
    parser.add_argument("--conns", type=int, default=16, help="ingest: connections")
    parser.add_argument("--sessions", type=int, default=100, help="realtime, idle: sessions")
    parser.add_argument("--sessions-per-conn", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="ingest: frames a write")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="realtime: seconds not measured; overhead: rounds not measured")
    parser.add_argument("--min-chunks", type=int, default=10)
    parser.add_argument("--max-chunks", type=int, default=20)
    parser.add_argument("--tick-ms", type=float, default=5.0,
                        help="realtime: how often the generator wakes to write what is due")
    parser.add_argument("--pause-ms", type=int, default=1000, help="realtime: the sessions'")
    parser.add_argument("--drain-timeout", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=1000, help="overhead: timed rounds")
    parser.add_argument("--chunks", type=int, default=10, help="overhead: chunks an utterance")
    parser.add_argument("--settle-ms", type=float, default=5.0,
                        help="overhead: quiet time before each timed message")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-open", action="store_true",
                        help="idle: open connections only, no sessions")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    args = parser.parse_args()
    if args.mode == "overhead":
        args.warmup = int(args.warmup)
    raise_nofile(args.sessions + args.conns + 1024)
    uvloop.run({"ingest": ingest, "realtime": realtime, "overhead": overhead,
                "idle": idle}[args.mode](args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

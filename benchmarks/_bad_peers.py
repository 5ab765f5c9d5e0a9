"""The bad peers of benchmarks/bad_peers.py, one process each (raw websockets).

Modes:
- `stall`: `--clients` clients (1 by default) that stop reading. Each, again
  and again: connect to `URL/v1/client`, submit `--jobs` jobs (their results
  are big: the fleet serving `--src`/`--tgt` answers with `--output-bytes`),
  stop reading its socket, hold still for `--hold` seconds, then read again to
  see how the hub ended the session (close code 4006 expected) and start over.
- `churn`: a node registering at the capability limit every `--interval`
  seconds (0: as fast as the hub answers): connect to `URL/v1/node`, `register`
  with `--entries` capability entries, wait for the answer, close; a new node
  id each time. `--layout spread` puts the entries over the four lists with
  short names; `--layout pairs` makes them all language pairs whose names are
  `--name-chars` long (the largest register the limits allow).
- `caps`: a registered node that sends its largest valid `capabilities`
  update (`--entries` language pairs, names `--name-chars` long) again and
  again, as fast as its socket takes them; two different sets in turn, so
  every update is a change.
- `submits`: `--sessions` client connections, each sending submits (payload a
  string of `--payload-bytes`, pair `--src`/`--tgt`) as fast as its socket
  takes them, at most `--window` unanswered at a time, `--count` per session
  (0: until stopped); `--timeout-ms` / `--queue-timeout-ms` set on each.
  Prints `{"sent": ...}` when every session has sent its `--count`.
- `idle`: `--count` client sessions that connect and then do nothing.

With `--token`, every connection carries it (`auth = "jwt"` hubs). A
connection the hub closes is opened again (a bad peer does not give up), and
counted. Prints `{"ready": ...}` once the bad behaviour is under way, and on
SIGTERM a `{"summary": ...}` line with what it saw, then exits.

Usage: python benchmarks/_bad_peers.py --url ws://127.0.0.1:P --mode stall
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from typing import Any

import uvloop
from _procs import emit, raise_nofile
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TOKEN: list[str] = []
"""The bearer token of every connection (`--token`), if any."""

HUB_ERRORS = (ConnectionClosed, OSError, TimeoutError)
"""What a connection the hub refuses or closes raises."""


async def _open(url: str) -> ClientConnection:
    headers = {"Authorization": f"Bearer {TOKEN[0]}"} if TOKEN else None
    return await connect(url, compression=None, ping_interval=None, max_size=None,
                         open_timeout=60, close_timeout=2, additional_headers=headers)


def _close_code(ws: ClientConnection) -> str:
    received = ws.protocol.close_rcvd  # none: dropped before it read the close frame
    return str(received.code) if received is not None else "none"


async def _stall_one(args: argparse.Namespace, stop: asyncio.Event, client: int,
                    closes: Counter[str], rounds: list[int], started: asyncio.Event) -> None:
    head = f'{{"type":"submit","src_lang":"{args.src}","tgt_lang":"{args.tgt}","request_id":"'
    while not stop.is_set():
        try:
            ws = await _open(args.url + "/v1/client")
        except HUB_ERRORS:
            closes["refused"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            for i in range(args.jobs):
                await ws.send(f'{head}stall-{client}-{rounds[client]}-{i}"}}')
        except HUB_ERRORS:
            pass
        ws.transport.pause_reading()  # the process stops reading its socket
        rounds[client] += 1
        started.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.hold):
                await stop.wait()
        ws.transport.resume_reading()
        try:
            async with asyncio.timeout(5):
                async for _ in ws:
                    pass
        except HUB_ERRORS:
            pass
        closes[_close_code(ws)] += 1
        ws.transport.abort()


async def stall(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    closes: Counter[str] = Counter()
    rounds = [0] * args.clients
    started = [asyncio.Event() for _ in range(args.clients)]
    tasks = [asyncio.create_task(_stall_one(args, stop, i, closes, rounds, started[i]))
             for i in range(args.clients)]
    await asyncio.gather(*(event.wait() for event in started))
    emit(ready="stall", clients=args.clients)
    await asyncio.gather(*tasks)
    return {"clients": args.clients, "rounds": sum(rounds), "close_codes": dict(closes)}


def _name(prefix: str, i: int, chars: int) -> str:
    """A distinct capability name `chars` long (at most the 256 a name may have)."""
    head = f"{prefix}{i}-"
    return head + "x" * max(0, chars - len(head))


def _capabilities(args: argparse.Namespace, generation: int = 0) -> dict[str, Any]:
    entries = args.entries
    if args.layout == "pairs":
        return {"max_concurrency": 1, "language_pairs": [
            {"src": _name(f"s{generation}-", i, args.name_chars),
             "tgt": _name(f"t{generation}-", i, args.name_chars)} for i in range(entries)
        ]}
    quarter, rest = divmod(entries, 4)
    return {
        "max_concurrency": 1,
        "language_pairs": [{"src": f"s{i}", "tgt": f"t{i}"} for i in range(quarter + rest)],
        "asr_languages": [f"a{i}" for i in range(quarter)],
        "tts_languages": [f"b{i}" for i in range(quarter)],
        "features": [f"f{i}" for i in range(quarter)],
    }


def _register_frame(node_id: str, caps_json: str) -> str:
    return f'{{"type":"register","node_id":"{node_id}","capabilities":{caps_json}}}'


async def churn(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    answers: Counter[str] = Counter()
    seconds: list[float] = []
    count = 0
    caps_json = json.dumps(_capabilities(args))
    next_at = time.monotonic()
    while not stop.is_set():
        frame = _register_frame(f"{args.node_id}-{count}", caps_json)
        started = time.perf_counter()
        try:
            ws = await _open(args.url + "/v1/node")
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            answers[reply.get("code") or reply["type"]] += 1
            await ws.close()
        except HUB_ERRORS as exc:
            answers[f"closed:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)
        seconds.append(time.perf_counter() - started)
        count += 1
        if count == 1:
            emit(ready="churn", frame_bytes=len(frame))
        next_at = max(next_at + args.interval, time.monotonic()) if args.interval else 0
        if next_at:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - time.monotonic())):
                    await stop.wait()
    seconds.sort()
    return {
        "registers": count,
        "frame_bytes": len(_register_frame(f"{args.node_id}-0", caps_json)),
        "answers": dict(answers),
        "register_p50_ms": 1000 * seconds[len(seconds) // 2] if seconds else None,
        "register_max_ms": 1000 * seconds[-1] if seconds else None,
    }


async def _drain(ws: ClientConnection, seen: Counter[str]) -> None:
    """Read what the hub sends (counted by type and code) until the connection ends."""
    with contextlib.suppress(*HUB_ERRORS):
        async for frame in ws:
            msg = json.loads(frame)
            seen[msg.get("code") or msg.get("type", "?")] += 1


async def caps(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    sets = [json.dumps(_capabilities(args, generation)) for generation in (0, 1)]
    frames = [f'{{"type":"capabilities","capabilities":{one}}}'.encode() for one in sets]
    register = _register_frame(args.node_id, sets[1])
    seen: Counter[str] = Counter()
    sent = connections = 0
    first = time.perf_counter()
    while not stop.is_set():
        try:
            ws = await _open(args.url + "/v1/node")
            await ws.send(register)
            reply = json.loads(await ws.recv())
        except HUB_ERRORS:
            seen["register_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        connections += 1
        if reply.get("type") != "registered":
            seen[f"register:{reply.get('code')}"] += 1
            ws.transport.abort()
            await asyncio.sleep(0.1)
            continue
        reader = asyncio.create_task(_drain(ws, seen))
        if connections == 1:
            emit(ready="caps", frame_bytes=len(frames[0]))
            first = time.perf_counter()
        try:
            while not stop.is_set():
                await ws.send(frames[sent % 2], text=True)
                sent += 1
        except HUB_ERRORS:
            pass
        reader.cancel()
        if not stop.is_set():
            seen[f"closed:{_close_code(ws)}"] += 1
        ws.transport.abort()
    elapsed = time.perf_counter() - first
    return {"updates_sent": sent, "updates_per_s": round(sent / elapsed, 1) if elapsed else 0,
            "frame_bytes": len(frames[0]), "connections": connections, "received": dict(seen)}


class _Submitter:
    """One client connection of the `submits` mode."""

    def __init__(self, args: argparse.Namespace, index: int, stats: Counter[str],
                 stop: asyncio.Event) -> None:
        self.args, self.index, self.stats, self.stop = args, index, stats, stop
        self.sent = 0
        self.unanswered: set[str] = set()
        self.room = asyncio.Event()
        self.room.set()
        options = {"type": "submit", "src_lang": args.src, "tgt_lang": args.tgt}
        if args.timeout_ms:
            options["timeout_ms"] = args.timeout_ms
        if args.queue_timeout_ms is not None:
            options["queue_timeout_ms"] = args.queue_timeout_ms
        head = json.dumps(options)[:-1]
        self.head = f'{head}, "request_id": "'.encode()
        if args.payload_kind == "list":  # [0,0,...]: the most values a byte can hold
            items = max(1, (args.payload_bytes - 1) // 2)
            payload = b"[" + b"0," * (items - 1) + b"0]"
        else:
            payload = b'"' + b"x" * args.payload_bytes + b'"'
        self.tail = b'", "payload": ' + payload + b"}"

    async def read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(*HUB_ERRORS):
            async for frame in ws:
                msg = json.loads(frame)
                kind = msg.get("type")
                if kind == "accepted":
                    self.stats["accepted"] += 1
                    continue
                if kind == "result":
                    self.stats["result_ok" if msg.get("ok") else "result_failed"] += 1
                elif kind in ("rejected", "error"):
                    self.stats[f"{kind}:{msg.get('code')}"] += 1
                else:
                    continue
                self.unanswered.discard(msg.get("request_id", ""))
                if not self.args.window or len(self.unanswered) < self.args.window:
                    self.room.set()

    async def run(self, done: asyncio.Event) -> None:
        args = self.args
        while not self.stop.is_set() and (not args.count or self.sent < args.count):
            try:
                ws = await _open(args.url + "/v1/client")
            except HUB_ERRORS:
                self.stats["connect_failed"] += 1
                await asyncio.sleep(0.1)
                continue
            self.stats["connections"] += 1
            self.unanswered.clear()
            self.room.set()
            reader = asyncio.create_task(self.read(ws))
            try:
                while not self.stop.is_set() and (not args.count or self.sent < args.count):
                    await self.room.wait()
                    request_id = f"f{self.index}-{self.sent}"
                    self.unanswered.add(request_id)
                    if args.window and len(self.unanswered) >= args.window:
                        self.room.clear()
                    await ws.send(b"".join((self.head, request_id.encode(), self.tail)),
                                  text=True)
                    self.sent += 1
                    self.stats["sent"] += 1
            except HUB_ERRORS:
                pass
            if self.stop.is_set() or (args.count and self.sent >= args.count):
                done.set()
                await self.stop.wait()  # hold what was sent until the end
            reader.cancel()
            if ws.close_code is not None:
                self.stats[f"closed:{_close_code(ws)}"] += 1
            ws.transport.abort()
        done.set()


async def submits(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    stats: Counter[str] = Counter()
    peers = [_Submitter(args, i, stats, stop) for i in range(args.sessions)]
    done = [asyncio.Event() for _ in peers]
    first = time.perf_counter()
    tasks = [asyncio.create_task(peer.run(event)) for peer, event in zip(peers, done, strict=True)]
    emit(ready="submits", frame_bytes=len(peers[0].head) + len(peers[0].tail) + 8)

    async def all_sent() -> None:
        await asyncio.gather(*(event.wait() for event in done))
        if not stop.is_set():
            emit(sent=sum(peer.sent for peer in peers),
                 seconds=round(time.perf_counter() - first, 2))

    announce = asyncio.create_task(all_sent())
    await asyncio.gather(*tasks)
    announce.cancel()
    elapsed = time.perf_counter() - first
    return {"sessions": args.sessions, "sent": stats.pop("sent", 0),
            "submits_per_s": round(sum(p.sent for p in peers) / elapsed, 1),
            "payload_bytes": args.payload_bytes, "received": dict(stats)}


async def idle(args: argparse.Namespace, stop: asyncio.Event) -> dict[str, Any]:
    conns: list[ClientConnection] = []
    for first in range(0, args.count, args.batch):
        batch = min(args.batch, args.count - first)
        conns.extend(await asyncio.gather(
            *(_open(args.url + "/v1/client") for _ in range(batch))
        ))
    emit(ready="idle", connections=len(conns))
    await stop.wait()
    open_at_end = sum(1 for ws in conns if ws.close_code is None)
    for ws in conns:
        ws.transport.abort()
    return {"connections": len(conns), "open_at_end": open_at_end}


MODES = {"stall": stall, "churn": churn, "caps": caps, "submits": submits, "idle": idle}


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    summary = await MODES[args.mode](args, stop)
    emit(summary={"mode": args.mode, **summary})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the hub")
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--token", default=None, help="bearer token (auth = jwt hubs)")
    parser.add_argument("--jobs", type=int, default=64, help="stall: jobs in flight")
    parser.add_argument("--clients", type=int, default=1, help="stall: stalled clients")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="big")
    parser.add_argument("--hold", type=float, default=13.0,
                        help="stall: seconds without reading (past slow_peer_timeout_ms)")
    parser.add_argument("--entries", type=int, default=1024,
                        help="churn, caps: capability entries")
    parser.add_argument("--layout", choices=("spread", "pairs"), default="spread",
                        help="churn: entries over the four lists (short names) or all pairs")
    parser.add_argument("--name-chars", type=int, default=256,
                        help="churn (pairs), caps: length of each language code")
    parser.add_argument("--node-id", default="churn", help="churn (prefix), caps: node id")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="churn: seconds between registers (0: back to back)")
    parser.add_argument("--sessions", type=int, default=1, help="submits: connections")
    parser.add_argument("--window", type=int, default=256,
                        help="submits: unanswered submits per session at most (0: any)")
    parser.add_argument("--payload-bytes", type=int, default=1, help="submits: payload")
    parser.add_argument("--payload-kind", choices=("str", "list"), default="str",
                        help="submits: a string of `--payload-bytes`, or a list of 0s as long")
    parser.add_argument("--timeout-ms", type=int, default=0, help="submits: timeout_ms")
    parser.add_argument("--queue-timeout-ms", type=int, default=None,
                        help="submits: queue_timeout_ms")
    parser.add_argument("--count", type=int, default=2000,
                        help="idle: connections; submits: per session (0: until stopped)")
    parser.add_argument("--batch", type=int, default=200, help="idle: concurrent handshakes")
    args = parser.parse_args()
    if args.token:
        TOKEN.append(args.token)
    raise_nofile(args.count + 1024)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

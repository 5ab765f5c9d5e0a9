"""Rooms: a conversation of 64 members in 8 languages with 4 speakers, local and
cross-instance, beside a one-listener room measured in the same run.

Separate processes: the hub(s) (`hub serve` via benchmarks/_hub_proc.py; in
cross-instance mode two hubs on a throwaway redis-server, speakers on the first,
the nodes on the second, listeners half on each), translator nodes that answer
at once (benchmarks/_room_nodes.py), and the members in this process (raw
websockets, MessagePack).

Per mode it measures, over `--utterances` utterances (each one 100 ms chunk
with `is_final`, the speakers in turn, one every `--gap-ms`):

- jobs per utterance: the hub's `nodehub_room_jobs_total` per utterance (one
  per listen language present, other than the speaker's own, plus one
  ASR-only for its own), and the speaker's own job;
- utterance-to-last-listener latency p50/p99: from the client sending the
  chunk that ends the utterance to the last listener's `room_result` for it;
  and to every listener (p50/p99 over all deliveries);
- the same latency in a one-listener room (one speaker, one listener), run
  before and after the big room in the same process, against the same hubs;
- fan-out cost: hub CPU time (all hubs, /proc) per `room_result` delivered, in
  the big room and in the one-listener room; in cross-instance mode Redis
  commands per utterance (`INFO commandstats`), which must not grow with the
  listeners (one envelope per hub with listeners, not one per listener).

Prints a table per mode and writes `--json PATH`.

Usage: python benchmarks/rooms.py [--modes local,cross_instance] [--utterances 200]
       [--gap-ms 50] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from _procs import ProcGroup, calls_delta, http_get, metric_value, redis_commandstats
from _topology import TOPOLOGIES, Topology
from websockets.asyncio.client import ClientConnection, connect

LANGS = ["en", "de", "fr", "es", "it", "pt", "zh", "ja"]
MEMBERS = 64
SPEAKERS = 4
CHUNK = bytes(3200)  # 100 ms of 16 kHz mono PCM


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Member:
    """One client connection in a room: records when each room_result arrives."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.arrived: dict[tuple[str, int], float] = {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            message = msgspec.msgpack.decode(frame)
            if message.get("type") == "room_result":
                self.arrived[(message["speaker"], message["index"])] = time.perf_counter()
            else:
                self.inbox.put_nowait(message)

    async def expect(self, kind: str) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.inbox.get(), 30)
            if message.get("type") == kind:
                return message
            if message.get("type") == "error":
                raise RuntimeError(f"{self.name}: {message}")

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(msgspec.msgpack.encode(message))

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def member(url: str, name: str) -> Member:
    ws = await connect(url + "/v1/client", subprotocols=["hub.v1.msgpack"],  # type: ignore[list-item]
                       max_size=None, compression=None, ping_interval=None)
    return Member(ws, name)


async def room(
    speaker_url: str, listener_urls: list[str], room_name: str, speakers: int, listeners: int,
) -> tuple[list[tuple[Member, str]], list[Member]]:
    """Open the speakers' sessions and join everyone; (speakers with their sids, listeners)."""
    talkers: list[tuple[Member, str]] = []
    for i in range(speakers):
        m = await member(speaker_url, f"speaker-{i}")
        sid = f"{room_name}-s{i}"
        src = LANGS[i % len(LANGS)]
        await m.send({"type": "session_open", "session_id": sid, "src_lang": src,
                      "tgt_lang": LANGS[(i + 1) % len(LANGS)], "pause_ms": 0})
        await m.expect("session_opened")
        await m.send({"type": "room_join", "room": room_name, "listen_lang": src,
                      "session_id": sid})
        await m.expect("room_joined")
        talkers.append((m, sid))
    heard: list[Member] = []
    for i in range(listeners):
        m = await member(listener_urls[i % len(listener_urls)], f"listener-{i}")
        await m.send({"type": "room_join", "room": room_name,
                      "listen_lang": LANGS[i % len(LANGS)]})
        await m.expect("room_joined")
        heard.append(m)
    return talkers, heard


async def speak(
    talkers: list[tuple[Member, str]], utterances: int, gap_s: float
) -> dict[tuple[str, int], float]:
    """Each utterance: one final chunk, the speakers in turn; when each was sent."""
    sent: dict[tuple[str, int], float] = {}
    seqs: dict[str, int] = defaultdict(int)
    for n in range(utterances):
        m, sid = talkers[n % len(talkers)]
        seq = seqs[sid]
        seqs[sid] += 1
        sent[(sid, seq)] = time.perf_counter()
        await m.send({"type": "audio", "session_id": sid, "seq": seq, "data": CHUNK,
                      "is_final": True})
        await asyncio.sleep(gap_s)
    return sent


async def settle(listeners: list[Member], expected: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(len(m.arrived) for m in listeners) < expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)


def quantiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])


def hub_metric(topology: Topology, name: str) -> float:
    total = 0.0
    for hub in topology.hubs:
        port = hub.argv[hub.argv.index("--port") + 1]
        text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        total += metric_value(text, name) or 0.0
    return total


async def measure_room(
    topology: Topology, speaker_url: str, listener_urls: list[str], name: str,
    speakers: int, listeners: int, utterances: int, gap_s: float,
) -> dict[str, Any]:
    talkers, heard = await room(speaker_url, listener_urls, name, speakers, listeners)
    listen_langs = [LANGS[i % len(LANGS)] for i in range(listeners)]
    jobs_before = hub_metric(topology, "nodehub_room_jobs_total")
    cpu_before = sum(cpu_seconds(h.pid) for h in topology.hubs)
    redis_before = (redis_commandstats(topology.redis_port)
                    if topology.redis_port is not None else None)
    sent = await speak(talkers, utterances, gap_s)
    # Every listener but those of the speaker's... (all: a speaker never hears itself,
    # listeners are separate connections) gets each utterance once.
    expected = utterances * listeners
    await settle(heard, expected)
    cpu = sum(cpu_seconds(h.pid) for h in topology.hubs) - cpu_before
    jobs = hub_metric(topology, "nodehub_room_jobs_total") - jobs_before
    redis_calls = None
    if redis_before is not None and topology.redis_port is not None:
        delta = calls_delta(redis_commandstats(topology.redis_port), redis_before)
        redis_calls = sum(delta.values())
    to_every: list[float] = []
    to_last: list[float] = []
    delivered = 0
    for key, t0 in sent.items():
        times = [m.arrived[key] for m in heard if key in m.arrived]
        delivered += len(times)
        to_every += [(t - t0) * 1000 for t in times]
        if len(times) == listeners:
            to_last.append((max(times) - t0) * 1000)
    for m, _ in talkers:
        await m.close()
    for m in heard:
        await m.close()
    every_p50, every_p99 = quantiles(to_every)
    last_p50, last_p99 = quantiles(to_last)
    return {
        "room": name, "speakers": speakers, "listeners": listeners,
        "listen_langs": len(set(listen_langs)), "utterances": utterances,
        "delivered": delivered, "expected": expected,
        "room_jobs_per_utterance": jobs / utterances,
        "to_listener_p50_ms": every_p50, "to_listener_p99_ms": every_p99,
        "to_last_listener_p50_ms": last_p50, "to_last_listener_p99_ms": last_p99,
        "hub_cpu_us_per_result": 1e6 * cpu / max(delivered, 1),
        "redis_commands_per_utterance": None if redis_calls is None
        else redis_calls / utterances,
    }


async def run_mode(mode: str, utterances: int, gap_ms: float) -> dict[str, Any]:
    with ProcGroup() as procs:
        topology = TOPOLOGIES[mode](procs, None)
        nodes = procs.spawn("nodes", "_room_nodes.py", "--url", topology.node_url,
                            "--count", "2", "--langs", ",".join(LANGS))
        nodes.expect("ready", 30)
        if mode == "cross_instance":
            # Every hub must see the nodes before a speaker opens a session there.
            deadline = time.monotonic() + 30
            while True:
                listed = json.loads(http_get(topology.http_url.rstrip("/") + "/v1/nodes"))
                if len(listed) >= 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        listener_urls = list(dict.fromkeys([topology.client_url, topology.node_url]))
        gap_s = gap_ms / 1000
        solo_runs = []
        big = None
        for step in ("solo", "big", "solo"):
            if step == "solo":
                solo_runs.append(await measure_room(
                    topology, topology.client_url, [topology.node_url],
                    f"solo{len(solo_runs)}", 1, 1, utterances // 2, gap_s,
                ))
            else:
                big = await measure_room(
                    topology, topology.client_url, listener_urls, "big", SPEAKERS,
                    MEMBERS - SPEAKERS, utterances, gap_s,
                )
        assert big is not None
        solo = {
            key: statistics.median(r[key] for r in solo_runs)
            for key in ("to_listener_p50_ms", "to_listener_p99_ms", "hub_cpu_us_per_result")
        }
        return {"mode": mode, "big_room": big, "one_listener": solo,
                "one_listener_runs": solo_runs}


def table(result: dict[str, Any]) -> str:
    big, solo = result["big_room"], result["one_listener"]
    lines = [
        f"rooms, {result['mode']} mode: {big['speakers']} speakers + {big['listeners']} "
        f"listeners in {big['listen_langs']} languages, {big['utterances']} utterances",
        f"  delivered                      {big['delivered']} of {big['expected']}",
        f"  room jobs per utterance        {big['room_jobs_per_utterance']:.2f} "
        "(+1: the speaker's own)",
        f"  to last listener p50 / p99     {big['to_last_listener_p50_ms']:.2f} / "
        f"{big['to_last_listener_p99_ms']:.2f} ms",
        f"  to any listener p50 / p99      {big['to_listener_p50_ms']:.2f} / "
        f"{big['to_listener_p99_ms']:.2f} ms",
        f"  one-listener room p50 / p99    {solo['to_listener_p50_ms']:.2f} / "
        f"{solo['to_listener_p99_ms']:.2f} ms (same run)",
        f"  hub CPU per result delivered   {big['hub_cpu_us_per_result']:.1f} us "
        f"(one-listener room: {solo['hub_cpu_us_per_result']:.1f} us)",
    ]
    if big["redis_commands_per_utterance"] is not None:
        lines.append(f"  Redis commands per utterance   {big['redis_commands_per_utterance']:.1f} "
                     f"(one-listener room: "
                     f"{result['one_listener_runs'][0]['redis_commands_per_utterance']:.1f})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="local,cross_instance")
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--quick", action="store_true", help="60 utterances")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    utterances = 60 if args.quick else args.utterances
    results = []
    for mode in args.modes.split(","):
        result = uvloop.run(run_mode(mode, utterances, args.gap_ms))
        results.append(result)
        print(table(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "results": results,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load": os.getloadavg()},
            "argv": sys.argv[1:],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

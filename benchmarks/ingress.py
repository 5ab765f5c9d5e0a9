"""What the ingress rules cost per frame: decoding typical frames with the hub's codecs
(`node_codec`, `client_codec`: msgspec plus `IngressRules`) against the bare wire model
(`Codec` without rules), measured in the same run, same process.

Frames: a `submit` and a `job_result` as in docs/protocol.md's example (a small
map payload/output), a `job_accept` (no free-form field: one dict lookup), a
`heartbeat`, a `register` with 16 capability entries, and a `submit` whose
payload is a 2 KB map of 50 keys (an upper bound of "ordinary"). Both
encodings. Each figure is the best of `--repeats` timings of `--n` decodes
(the best, not the mean: the machine is shared and noisy).

Usage: python benchmarks/ingress.py [--n 100000] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from hub.core.messages import ClientInbound, Codec, NodeInbound, client_codec, node_codec

EXAMPLE_SUBMIT = {
    "type": "submit", "request_id": "req-7f3a", "src_lang": "en", "tgt_lang": "de",
    "features": ["emotion_detection"], "timeout_ms": 60000,
    "payload": {"audio_url": "s3://bucket/utt-1.wav", "sample_rate": 16000},
}
EXAMPLE_RESULT = {
    "type": "job_result", "job_id": "hub-a.acab85cb.1", "attempt": 1, "ok": True,
    "output": {"text": "hello world", "translation": "hallo Welt",
               "audio_url": "s3://bucket/out-1.wav"},
}
FRAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "submit": ("client", EXAMPLE_SUBMIT),
    "job_result": ("node", EXAMPLE_RESULT),
    "job_accept": ("node", {"type": "job_accept", "job_id": "hub-a.acab85cb.1", "attempt": 1}),
    "heartbeat": ("node", {"type": "heartbeat", "running": 2, "cpu": 12.5, "gpu": 40.0}),
    "register": ("node", {"type": "register", "node_id": "gpu-01", "capabilities": {
        "max_concurrency": 4,
        "language_pairs": [{"src": "en", "tgt": t} for t in ("de", "fr", "es", "it")],
        "asr_languages": ["en", "de", "fr", "es"], "tts_languages": ["de", "fr", "es", "it"],
        "features": ["emotion_detection", "speaker_identification", "voice_cloning", "vad"],
    }}),
    "submit_2kb_map": ("client", {**EXAMPLE_SUBMIT, "payload": {
        f"field_{i}": f"value-{i:04d}-{'v' * 20}" for i in range(50)
    }}),
}


def best_ns(decode: Any, frame: bytes, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            decode(frame)
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for binary in (False, True):
        encode = msgspec.msgpack.encode if binary else msgspec.json.encode
        bare = {"node": Codec(NodeInbound, binary=binary),
                "client": Codec(ClientInbound, binary=binary)}
        ruled = {"node": node_codec(binary=binary), "client": client_codec(binary=binary)}
        for name, (endpoint, message) in FRAMES.items():
            frame = encode(message)
            bare_ns = best_ns(bare[endpoint].decode, frame, args.n, args.repeats)
            ruled_ns = best_ns(ruled[endpoint].decode, frame, args.n, args.repeats)
            rows.append({
                "frame": name, "encoding": "msgpack" if binary else "json",
                "bytes": len(frame), "bare_ns": bare_ns, "with_rules_ns": ruled_ns,
                "rules_ns": ruled_ns - bare_ns,
            })
            print(f"  {rows[-1]['encoding']:<8}{name:<16}{bare_ns:>8.0f} ns bare, "
                  f"{ruled_ns:>8.0f} ns with the rules", flush=True)
    return {
        "benchmark": "ingress",
        "rows": rows,
        "settings": {"n": args.n, "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }


def print_table(out: dict[str, Any]) -> None:
    print()
    print(f"ingress rules per decoded frame (best of {out['settings']['repeats']} x "
          f"{out['settings']['n']}; shared machine)")
    print(f"{'encoding':<10}{'frame':<16}{'bytes':>7}{'bare ns':>10}{'rules ns':>10}"
          f"{'ruled ns':>10}{'+%':>7}")
    for row in out["rows"]:
        print(f"{row['encoding']:<10}{row['frame']:<16}{row['bytes']:>7}{row['bare_ns']:>10.0f}"
              f"{row['rules_ns']:>10.0f}{row['with_rules_ns']:>10.0f}"
              f"{100 * row['rules_ns'] / row['bare_ns']:>6.0f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="decodes per timing")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    out = run(args)
    print_table(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A speech-to-text node for live sessions: each utterance's audio in, its text out.

    NODE_ID=asr-1 NODEHUB_TOKEN=<node token> python examples/speech_node.py ws://127.0.0.1:8765

The "model" is a toy that counts the bursts of sound in the audio: put yours in `transcribe`.
"""

import array
import asyncio
import os
import sys

from agent_sim import Capabilities, JobContext, JobFailed, NodeAgent, run_node

# ASR only (no language_pairs, no tts_languages): it serves sessions that turn the other
# stages off, i.e. opened with pipeline {"nmt": false, "tts": false}.
CAPABILITIES = Capabilities(asr_languages=["en"], max_concurrency=2, labels={"model": "toy"})


def transcribe(audio: bytes, sample_rate_hz: int, channels: int) -> str:
    samples = array.array("h", audio[: len(audio) // 2 * 2])  # pcm_s16le
    frame = sample_rate_hz * channels // 50  # 20 ms
    bursts, was_loud = 0, False
    for start in range(0, len(samples), frame):
        loud = max(map(abs, samples[start : start + frame]), default=0) > 500
        bursts += loud and not was_loud
        was_loud = loud
    return " ".join(["blah"] * bursts)


async def recognise(job: JobContext) -> dict[str, object]:
    utterance = job.utterance  # the audio as bytes (whatever the encoding), its format...
    if utterance is None or utterance.audio_format.codec != "pcm_s16le":
        raise JobFailed("bad_payload", "this node takes pcm_s16le live-session utterances")
    fmt = utterance.audio_format
    await job.progress({"heard_ms": utterance.duration_ms})  # the client's `partial`
    # CPU-bound work off the event loop: heartbeats go on meanwhile.
    text = await asyncio.to_thread(transcribe, utterance.audio, fmt.sample_rate_hz, fmt.channels)
    return {"text": text}  # the client's `utterance_result.output`


async def main() -> None:
    agent = NodeAgent(
        node_id=os.environ.get("NODE_ID", "asr-1"), capabilities=CAPABILITIES,
        hub_urls=sys.argv[1:] or ["ws://127.0.0.1:8765"], handler=recognise,
        token=os.environ.get("NODEHUB_TOKEN"), binary=True,  # audio as bytes, not base64
    )
    await run_node(agent)  # serve; on SIGTERM drain: no new jobs, running ones finish


if __name__ == "__main__":
    asyncio.run(main())

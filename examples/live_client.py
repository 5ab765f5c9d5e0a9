"""Stream a WAV file (16-bit PCM) in real time over a live session; print what comes back.

    NODEHUB_TOKEN=<client token> python examples/live_client.py speech.wav ws://127.0.0.1:8765 [ws://hub-b:8765]
"""

import array
import asyncio
import os
import sys
import uuid
import wave

from agent_sim import (
    AudioFormat,
    HubClient,
    LiveSession,
    Partial,
    Pipeline,
    SessionClosed,
    UtteranceCut,
    UtteranceResult,
)

CHUNK_MS = 100
SILENCE = 500  # a chunk whose loudest sample is below this is silence (a toy VAD)


async def stream(session: LiveSession, wav: wave.Wave_read) -> None:
    speaking = False
    while data := wav.readframes(wav.getframerate() * CHUNK_MS // 1000):
        loud = max(map(abs, array.array("h", data)), default=0) > SILENCE
        if loud or speaking:  # silence is not sent; the first silent chunk ends an utterance
            await session.send_audio(data, is_final=not loud)
        speaking = loud
        await asyncio.sleep(CHUNK_MS / 1000)  # as fast as a microphone, no faster
    await session.close()  # the hub cuts what is left, delivers every result, then closes


async def main(path: str, urls: list[str]) -> None:
    with wave.open(path, "rb") as wav:
        assert wav.getsampwidth() == 2, "16-bit PCM only"
        audio_format = AudioFormat(sample_rate_hz=wav.getframerate(), channels=wav.getnchannels())
        # On a dropped connection the client reconnects (the next URL, if several) and the
        # session resumes there by itself: no result is lost or repeated, no audio either.
        async with HubClient(urls, token=os.environ.get("NODEHUB_TOKEN")) as client:
            session = await client.live_session(
                uuid.uuid4().hex, "en", "de", audio_format=audio_format,
                pipeline=Pipeline(nmt=False, tts=False),  # speech to text
            )
            sender = asyncio.create_task(stream(session, wav))
            async for event in session:  # in order; ends after session_closed
                match event:
                    case UtteranceCut():
                        line = f"cut {event.index}: {event.duration_ms} ms ({event.cut})"
                    case Partial():
                        line = f"partial {event.index}: {event.data}"
                    case UtteranceResult(ok=True):
                        line = f"result {event.index}: {event.output}"
                    case UtteranceResult():
                        line = f"failed {event.index}: {event.error}"
                    case SessionClosed():
                        line = f"closed: {event.reason}, {event.utterances} utterances"
                print(line, flush=True)
            await sender


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:] or ["ws://127.0.0.1:8765"]))

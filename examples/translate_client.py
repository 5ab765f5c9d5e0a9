"""Translate a text: submit, print progress and the result; on hub_shutdown try again.

    NODEHUB_TOKEN=<client token> python examples/translate_client.py "hello world" ws://hub-a:8765 [ws://hub-b:8765]
"""

import asyncio
import os
import sys
import uuid

from agent_sim import ConnectionLost, HubClient, Pipeline


async def translate(text: str, urls: list[str], tgt: str = "de") -> None:
    request_id = uuid.uuid4().hex  # the same for every try: the job runs once per request id
    for attempt in range(8):
        url = urls[attempt % len(urls)]  # the next hub on each try
        try:
            async with HubClient(url, token=os.environ.get("NODEHUB_TOKEN")) as client:
                job = await client.submit(
                    "en", tgt, request_id=request_id, payload={"text": text},
                    pipeline=Pipeline(asr=False, tts=False),  # text only: no speech stages
                )
                shown = 0
                for _ in range(3000):  # print progress as it comes, for up to 5 minutes
                    done, _ = await asyncio.wait([job.result], timeout=0.1)
                    for data in job.progress[shown:]:
                        print("progress", data, flush=True)
                    shown = len(job.progress)
                    if done:
                        break
                if not job.result.done():
                    raise TimeoutError("no answer within 5 minutes")
                # A `result`, or a `rejected` (no job was made); `ConnectionLost` when the
                # connection dropped before the answer.
                answer = job.result.result()
        except (OSError, ConnectionLost) as exc:  # unreachable, dropped, or no answer
            print(f"{url}: {exc!r}; trying again", flush=True)
        else:
            if getattr(answer, "ok", False):
                print("result ok", answer.output, "from", answer.node_id, flush=True)
                return
            code = getattr(answer, "code", None) or answer.error.code  # rejected / failed
            if code != "hub_shutdown":
                raise SystemExit(f"failed: {code}: {answer}")
            print(f"{url}: hub_shutdown; trying again", flush=True)
        await asyncio.sleep(0.5)
    raise SystemExit("no hub could take the job")


if __name__ == "__main__":
    asyncio.run(translate(sys.argv[1], sys.argv[2:] or ["ws://127.0.0.1:8765"]))

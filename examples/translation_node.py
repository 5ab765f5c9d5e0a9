"""A translation-only node: text in, text out, en->de and en->fr (docs/sdk.md).

    NODE_ID=translator-1 NODEHUB_TOKEN=<node token> python examples/translation_node.py ws://127.0.0.1:8765
"""

import asyncio
import os
import sys

from agent_sim import Capabilities, JobContext, JobFailed, LanguagePair, NodeAgent, run_node

CAPABILITIES = Capabilities(
    language_pairs=[LanguagePair(src="en", tgt="de"), LanguagePair(src="en", tgt="fr")],
    # No asr_languages / tts_languages: this node serves only jobs that turn speech off,
    # i.e. submitted with pipeline {"asr": false, "tts": false}.
    features=["glossary"],
    max_concurrency=4,  # jobs at once; the hub never sends more
    pool=1,  # e.g. one pool per GPU type; clients may prefer a pool
    labels={"gpu": "L4", "model": "toy-dictionary"},
)
WORDS = {"de": {"hello": "hallo", "world": "Welt"}, "fr": {"hello": "bonjour", "world": "monde"}}


async def translate(job: JobContext) -> dict[str, str]:
    text = job.payload.get("text") if isinstance(job.payload, dict) else None
    if not isinstance(text, str):
        raise JobFailed("bad_payload", "payload.text must be a string")  # final: not retried
    out = []
    for done, word in enumerate(text.split(), 1):
        out.append(WORDS[job.tgt_lang].get(word.lower(), word))
        await asyncio.sleep(0.02)  # the model at work
        await job.progress({"words": done})  # forwarded to the client as `progress`
    return {"text": " ".join(out)}  # the client's `result.output`


async def main() -> None:
    agent = NodeAgent(
        node_id=os.environ.get("NODE_ID", "translator-1"), capabilities=CAPABILITIES,
        hub_urls=sys.argv[1:] or ["ws://127.0.0.1:8765"], handler=translate,
        token=os.environ.get("NODEHUB_TOKEN"),
    )
    await run_node(agent)  # serve; on SIGTERM drain: no new jobs, running ones finish


if __name__ == "__main__":
    asyncio.run(main())

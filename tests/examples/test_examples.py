"""The node author's examples (examples/, docs/sdk.md) run as their own processes against
real hubs: the translation node registers what it says, serves the client
example's job with progress, drains on SIGTERM (running jobs finish, no new ones come),
and the client example tries the next hub when one answers `hub_shutdown`. The live
client streams a spoken WAV (espeak-ng) to a simulated speech node and to the speech
node example, and prints cuts, partials and results in order."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent_sim import Fleet, get_profile
from hub.app.hub import Hub
from hub.core.snapshot import DRAINING
from tests.conftest import MakeHub, Net
from tests.support.auth import SECRET, token
from tests.support.hubtest import caps, wait_until

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_S = 60.0


class Example:
    """One example script as a child process; its output in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def exited(self, timeout_s: float = RUN_S) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout_s}s:\n{self.output()}") from None


Start = Callable[..., Awaitable[Example]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    running: list[Example] = []

    async def spawn(script: str, *args: str, env: dict[str, str] | None = None) -> Example:
        log = tmp_path / f"{script}.{len(running)}.log"
        out = await asyncio.to_thread(log.open, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLES / script), *args,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        finally:
            out.close()
        example = Example(proc, log)
        running.append(example)
        return example

    yield spawn
    for example in running:
        if example.proc.returncode is None:
            example.proc.kill()
        with contextlib.suppress(ProcessLookupError):
            await example.proc.wait()


def registered(hub: Hub, node_id: str) -> Callable[[], bool]:
    return lambda: node_id in hub.service.registry.registered


async def test_the_node_serves_the_client_and_drains_on_sigterm(
    make_hub: MakeHub, net: Net, start: Start
) -> None:
    hub = await make_hub(auth="jwt", jwt_secret=SECRET)
    node = await start("translation_node.py", hub.url, env={
        "NODE_ID": "translator-1", "NODEHUB_TOKEN": token("node", sub="translator-1"),
    })
    await wait_until(registered(hub, "translator-1"), 30, "the example node registered")
    state = hub.fleet.snapshot.get("translator-1")
    assert state is not None
    assert state.caps.language_pairs == {("en", "de"), ("en", "fr")}
    assert not state.caps.asr_languages and not state.caps.tts_languages
    assert state.caps.pool == 1 and state.caps.max_concurrency == 4
    # The client example: progress per word, then the result.
    client_env = {"NODEHUB_TOKEN": token("client")}
    client = await start("translate_client.py", "hello world", hub.url, env=client_env)
    assert await client.exited() == 0, client.output()
    out = client.output()
    assert "progress {'words': 1}" in out and "progress {'words': 2}" in out
    assert "result ok {'text': 'hallo Welt'} from translator-1" in out
    # The pitfall the guide explains: the default pipeline (speech in, speech out) finds
    # no node, since this node serves no ASR or TTS language.
    raw = await net.client(hub, token=token("client"))
    await raw.submit("speech", "en", "de")
    rejected = await raw.expect("rejected", code="no_node")
    assert rejected["reasons"] == {"asr_lang_unsupported": 1}
    # SIGTERM while a job runs (60 words, ~1.2 s): the node drains, the job finishes.
    long = await start("translate_client.py", " ".join(["hello"] * 60), hub.url, env=client_env)
    await wait_until(
        lambda: sum(len(n.assignments) for n in hub.service.registry.registered.values()) > 0,
        30, "the long job running on the node")
    node.proc.send_signal(signal.SIGTERM)
    await wait_until(
        lambda: (s := hub.fleet.snapshot.get("translator-1")) is None or s.status == DRAINING,
        10, "the node draining")
    assert await long.exited() == 0, long.output()
    assert "result ok" in long.output() and "hallo hallo" in long.output()
    assert await node.exited(30) == 0, node.output()
    assert "every job finished" in node.output()
    await wait_until(lambda: not registered(hub, "translator-1")(), 10, "the node gone")


async def test_the_client_tries_the_next_hub_on_hub_shutdown(
    make_hub: MakeHub, net: Net, start: Start
) -> None:
    a = await make_hub(hub_id="hub-a")
    b = await make_hub(hub_id="hub-b")
    # On hub A a node takes the job and never answers; hub B has the example node.
    holder = await net.node(a, "holder", caps([("en", "de")], asr=[], tts=[]))
    await start("translation_node.py", b.url, env={"NODE_ID": "translator-b"})
    await wait_until(registered(b, "translator-b"), 30, "the example node on hub B")
    client = await start("translate_client.py", "hello world", a.url, b.url)
    assign = await holder.assigned(wait_s=30)
    await holder.accept(assign)
    url_a = a.url
    await a.aclose()  # hub A stops: its unfinished job ends with hub_shutdown
    assert await client.exited() == 0, client.output()
    out = client.output()
    assert f"{url_a}: hub_shutdown; trying again" in out
    assert "result ok {'text': 'hallo Welt'} from translator-b" in out


# --- live sessions ------------------------------------------------------------------------

SPOKEN = "Hello there. This is a live test."


@pytest.fixture
def speech_wav(tmp_path: Path) -> Path:
    """Real speech: espeak-ng's voice saying two sentences (22.05 kHz mono 16-bit)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPOKEN], check=True, timeout=30)
    return path


LINE = re.compile(r"^(cut|partial|result|failed) (\d+): (.*)$")


def live_events(output: str) -> tuple[list[tuple[str, int, Any]], str]:
    """The live client's lines as (kind, index, value), and its `closed:` line."""
    events: list[tuple[str, int, Any]] = []
    closed = ""
    for line in output.splitlines():
        if line.startswith("closed: "):
            closed = line
        elif match := LINE.match(line):
            kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
            value = ast.literal_eval(rest) if kind in ("partial", "result") else rest
            events.append((kind, index, value))
    return events, closed


def check_live_order(events: list[tuple[str, int, Any]], closed: str) -> int:
    """Per utterance its cut, its partials, then its result; results in index order, one
    each, as many as `session_closed` counted. Returns that count."""
    match = re.fullmatch(r"closed: closed, (\d+) utterances", closed)
    assert match is not None, closed
    count = int(match.group(1))
    results = [index for kind, index, _ in events if kind == "result"]
    assert results == list(range(count)), events
    for index in range(count):
        kinds = [kind for kind, i, _ in events if i == index]
        assert kinds[0] == "cut" and kinds[-1] == "result", kinds
        assert set(kinds[1:-1]) <= {"partial"}, kinds
    return count


async def test_the_live_client_streams_speech_to_a_simulated_speech_node(
    make_hub: MakeHub, start: Start, speech_wav: Path
) -> None:
    hub = await make_hub()
    async with Fleet(hub_urls=[hub.url], nodes=1, seed=2,
                     profile=get_profile("speech", time_scale=0.2)) as fleet:
        await fleet.wait_registered(30)
        # Two clients stream the same file at once: the same audio, the same transcripts.
        clients = [await start("live_client.py", str(speech_wav), hub.url) for _ in range(2)]
        for client in clients:
            assert await client.exited() == 0, client.output()
    parsed = [live_events(client.output()) for client in clients]
    assert parsed[0][0] == parsed[1][0]
    events, closed = parsed[0]
    count = check_live_order(events, closed)
    assert count >= 2  # a sentence each: the client's VAD cut at the silence between them
    durations = {index: int(value.split(" ms ")[0]) for kind, index, value in events
                 if kind == "cut"}
    for kind, index, value in events:
        if kind == "result":
            # The fake recogniser: 2.5 words a second of audio; the text is the transcript.
            words = value["transcript"].split()
            assert len(words) == max(1, round(durations[index] / 1000 * 2.5)), value
            assert value["audio_ms"] == durations[index]
            assert value["text"].endswith(value["transcript"])
        if kind == "partial":
            assert value["stage"] == "asr" and value["audio_ms"] % 200 == 0
            assert value["audio_ms"] < durations[index]


async def test_the_speech_node_example_serves_the_live_client(
    make_hub: MakeHub, start: Start, speech_wav: Path
) -> None:
    hub = await make_hub()
    await start("speech_node.py", hub.url, env={"NODE_ID": "asr-1"})
    await wait_until(registered(hub, "asr-1"), 30, "the speech node registered")
    state = hub.fleet.snapshot.get("asr-1")
    assert state is not None and state.caps.asr_languages == {"en"}
    assert not state.caps.language_pairs and not state.caps.tts_languages
    client = await start("live_client.py", str(speech_wav), hub.url)
    assert await client.exited() == 0, client.output()
    events, closed = live_events(client.output())
    count = check_live_order(events, closed)
    assert count >= 2
    for kind, index, value in events:
        if kind == "result":  # a burst of sound or more in each utterance
            assert set(value["text"].split()) == {"blah"}, value
        if kind == "partial":
            durations = [int(v.split(" ms ")[0]) for k, i, v in events
                         if k == "cut" and i == index]
            assert value == {"heard_ms": durations[0]}

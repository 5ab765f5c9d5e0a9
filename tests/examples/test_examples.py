"""The node author's examples (examples/, docs/sdk.md) run as their own processes against
real hubs: the translation node registers what it says, serves the client
example's job with progress, drains on SIGTERM (running jobs finish, no new ones come),
and the client example tries the next hub when one answers `hub_shutdown`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

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

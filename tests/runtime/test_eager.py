"""`eager_task`: the first step runs in the caller's step, as the new task; the
task then behaves as any other (result, exception, cancellation, timeouts,
context), on asyncio's loop and on uvloop's."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator

import pytest
import uvloop

from hub.runtime.eager import eager_task

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[..., object]]:
    loop = LOOPS[request.param]()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


def test_the_first_step_runs_before_eager_task_returns(run: Callable[..., object]) -> None:
    steps: list[str] = []

    async def job(gate: asyncio.Future[int]) -> int:
        steps.append("first")
        value = await gate
        steps.append("rest")
        return value * 2

    async def main() -> None:
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = eager_task(job(gate))
        assert steps == ["first"]  # ran in this step, before any loop turn
        gate.set_result(21)
        assert await task == 42
        assert steps == ["first", "rest"]

    run(main())


def test_the_first_step_runs_as_the_new_task_in_its_own_context(
    run: Callable[..., object],
) -> None:
    seen: dict[str, object] = {}

    async def job() -> None:
        seen["first"] = asyncio.current_task()
        var.set("job")
        await asyncio.sleep(0)
        seen["later"] = asyncio.current_task()
        seen["var"] = var.get()

    async def main() -> None:
        caller = asyncio.current_task()
        task = eager_task(job())
        assert asyncio.current_task() is caller  # the caller is current again
        assert var.get() == "unset"  # the task's context is its own
        await task
        assert seen == {"first": task, "later": task, "var": "job"}

    run(main())


def test_a_result_or_an_error_of_the_first_step_comes_out_of_the_task(
    run: Callable[..., object],
) -> None:
    async def done() -> str:
        return "at once"

    async def fails() -> None:
        raise ValueError("first step")

    async def main() -> None:
        assert await eager_task(done()) == "at once"
        with pytest.raises(ValueError, match="first step"):
            await eager_task(fails())

    run(main())


def test_a_cancel_before_the_task_s_first_turn_reaches_the_coroutine(
    run: Callable[..., object],
) -> None:
    cleaned: list[bool] = []

    async def job(gate: asyncio.Future[None]) -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    async def main() -> None:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = eager_task(job(gate))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == [True]

    run(main())


def test_a_timeout_entered_in_the_first_step_cancels_the_task_not_the_caller(
    run: Callable[..., object],
) -> None:
    async def job() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.get_running_loop().create_future()  # never done
        except TimeoutError:
            return "timed out"
        return "not reached"

    async def main() -> None:
        task = eager_task(job())
        assert await asyncio.wait_for(task, 5.0) == "timed out"
        await asyncio.sleep(0.02)  # the caller was not cancelled by it

    run(main())

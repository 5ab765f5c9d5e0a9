"""`eager_task`: a task whose first step runs at once, in the caller's step.

`asyncio.create_task` runs a coroutine's first step on the next event-loop
turn, after a poll and whatever else is ready. For a submit that writes its
Redis binding before its first real wait, that turn is time on the job's
critical path (about 10-20 us on the reference box). Python 3.12 has eager
tasks for this; on 3.11 this module does the same for one task, the way 3.12
does it: the task is created, its first step runs at once as the current task
(the caller's task is swapped out for it) and in the task's own context, and
the task's scheduled first step then hands over whatever the coroutine is
waiting on instead of advancing it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

# The same hooks 3.12's eager tasks use to say which task is running.
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task


class _Started(Coroutine[Any, Any, T]):
    """A coroutine advanced to its first suspension by `advance`; the task's first
    `send` gets what it is waiting on (or its result, or its exception)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._first: tuple[str, Any] | None = None

    def advance(self) -> None:
        try:
            self._first = ("yield", self._coro.send(None))
        except StopIteration as stop:
            self._first = ("return", stop.value)
        except BaseException as exc:  # re-raised in the task's first step
            self._first = ("raise", exc)

    def _replay(self) -> Any:
        assert self._first is not None
        kind, payload = self._first
        self._first = None
        if kind == "return":
            raise StopIteration(payload)
        if kind == "raise":
            raise payload
        return payload

    def send(self, value: Any) -> Any:
        if self._first is not None:
            return self._replay()
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        if self._first is not None and self._first[0] != "yield":
            return self._replay()  # it already finished: cancelling it changes nothing
        # Suspended (or cancelled before the task's first turn): the exception goes
        # in at the coroutine's wait, as for any task.
        self._first = None
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("an eagerly started coroutine belongs to its task")


def eager_task(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Run `coro` now up to its first wait, as the returned task, which finishes it."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    started = _Started(coro)
    task = loop.create_task(started, name=name, context=context)
    caller = asyncio.current_task(loop)
    if caller is not None:
        _leave_task(loop, caller)
    _enter_task(loop, task)
    try:
        context.run(started.advance)
    finally:
        _leave_task(loop, task)
        if caller is not None:
            _enter_task(loop, caller)
    return task

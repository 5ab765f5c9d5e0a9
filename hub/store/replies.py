"""What `RedisStore` makes of Redis's answers: failures translated into
`StoreUnavailable`, and the replies of the hot-path commands decoded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from redis import exceptions as redis_errors

from hub.core.errors import StoreUnavailable
from hub.store.meter import ERROR as ERROR_KIND
from hub.store.meter import UNAVAILABLE as UNAVAILABLE_KIND
from hub.store.meter import StoreMeter

NO_METER = StoreMeter()

P = ParamSpec("P")
R = TypeVar("R")

UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    ConnectionError,
    OSError,
)


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Raise `StoreUnavailable` for any failure to talk to Redis; time the call and count
    its failure with the store's `meter` (a `StoreMeter`)."""
    op = fn.__name__.lstrip("_")

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        meter: StoreMeter = getattr(args[0], "meter", NO_METER)
        started = time.perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except StoreUnavailable:
            meter.failed(op, UNAVAILABLE_KIND)
            raise
        except UNAVAILABLE as exc:
            meter.failed(op, UNAVAILABLE_KIND)
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        except redis_errors.ResponseError as exc:
            if "LOADING" in str(exc) or "READONLY" in str(exc):
                meter.failed(op, UNAVAILABLE_KIND)
                raise StoreUnavailable(f"Redis is not serving: {exc}") from exc
            meter.failed(op, ERROR_KIND)
            raise
        meter.observe(op, time.perf_counter() - started)
        return result

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


async def settle(futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
    """Each future's reply, or the exception it failed with (an error reply, or the
    connection's failure)."""
    outcomes: list[Any] = []
    for future in futures:
        try:
            outcomes.append(await future)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(reply: Any) -> list[tuple[str, bytes]]:
    """Flatten an XREADGROUP reply into (entry id, envelope) pairs."""
    entries: list[tuple[str, bytes]] = []
    if not reply:
        return entries
    streams = reply.items() if isinstance(reply, dict) else reply
    for _, messages in streams:
        for entry_id, fields in messages:
            if isinstance(fields, list):  # a raw reply: [field, value, ...]
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            if fields and b"e" in fields:
                entries.append((entry_id.decode(), fields[b"e"]))
    return entries

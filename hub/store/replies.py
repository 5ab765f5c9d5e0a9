"""What `RedisStore` makes of Redis's answers: failures translated into
`StoreUnavailable`, and the replies of the hot-path commands decoded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from redis import exceptions as redis_errors

from hub.core.errors import StoreUnavailable

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
    """Raise `StoreUnavailable` for any failure to talk to Redis."""

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        except redis_errors.ResponseError as exc:
            if "LOADING" in str(exc) or "READONLY" in str(exc):
                raise StoreUnavailable(f"Redis is not serving: {exc}") from exc
            raise

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

"""`RespPipe`: one pipelined Redis connection for the per-job hot path.

redis-py's asyncio client checks a connection out of a pool, writes one
command, and waits for its reply before the connection serves anyone else; on
this project's 2-core reference machine that is 150-250 us a command, and a
cross-hub job has two such hops on its critical path (benchmarks/redis_hop.py
measures both transports). This pipe writes every command of one event-loop
turn in at most two writes (the first command at once, the rest at the end of
the turn), never waits for a reply before sending the next command,
and parses replies with hiredis (redis-py's own parser) straight in
`data_received`, resolving one future per command in order. One connection
keeps the commands' order, so inbox entries sent through it arrive in the
order they were sent.

It serves the commands of the hot path (EVALSHA of the bind-and-dispatch,
send, save and claim scripts, XREADGROUP and XACK); everything else goes
through redis-py. Where it connects (address, TLS context, user, password,
db) is an `Endpoint` from `RedisConnector`, asked each time a pipe is
opened: with Sentinel, the master of that moment. Failures surface as
`ConnectionError` (connection lost, reply timeout) or
`redis.exceptions.ResponseError` (an error reply), the same types redis-py
raises, so `RedisStore` translates both alike. A `READONLY` reply means the
server was demoted (a failover): the pipe fails as if the connection were
lost, so the next one is opened to the new master.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis import exceptions as redis_errors

from hub.runtime.loop_turn import LoopTurn
from hub.store.connector import Endpoint, RedisConnector

Reply = Any
WATCHDOG_S = 0.5
"""How often a pipe checks its oldest command for an overdue reply."""


class RespPipe(asyncio.Protocol):
    """A pipelined connection; `call` may be used from any number of tasks."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[tuple[asyncio.Future[Reply], float]] = deque()
        """Each command's future and the loop time by which its reply is due."""
        self._buffer: list[bytes] = []
        self._turn = LoopTurn(at_end=self._flush)
        self._lost: Exception | None = None

    # --- opening and closing ----------------------------------------------------------

    @classmethod
    async def open_url(cls, url: str, *, timeout_s: float) -> RespPipe:
        """`open` at where `url` (any `redis_url` form) points now."""
        connector = RedisConnector(url)
        try:
            endpoint = await connector.endpoint(timeout_s=timeout_s)
        finally:
            await connector.aclose()
        return await cls.open(endpoint, timeout_s=timeout_s)

    @classmethod
    async def open(cls, endpoint: Endpoint, *, timeout_s: float) -> RespPipe:
        """Connect, authenticate and select the endpoint's database."""
        loop = asyncio.get_running_loop()
        pipe = cls()
        async with asyncio.timeout(timeout_s):
            if endpoint.path is not None:
                await loop.create_unix_connection(lambda: pipe, endpoint.path)
            else:
                await loop.create_connection(
                    lambda: pipe, endpoint.host, endpoint.port, ssl=endpoint.tls,
                    server_hostname=endpoint.host if endpoint.tls is not None else None,
                )
            handshake = []
            if endpoint.password:
                auth = [endpoint.username or "default", endpoint.password]
                handshake.append(pipe.call("AUTH", *auth))
            if endpoint.db:
                handshake.append(pipe.call("SELECT", endpoint.db))
            try:
                for reply in handshake:
                    await reply
            except BaseException:
                pipe.close()
                raise
        return pipe

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def closed(self) -> bool:
        return self._lost is not None

    # --- commands ----------------------------------------------------------------------

    def call(self, *args: str | bytes | int, timeout_s: float = 10.0) -> asyncio.Future[Reply]:
        """Send a command (the first of a loop turn at once, the turn's others at its
        end); its reply. With no reply within `timeout_s` the connection is given up
        and every waiting command fails (a watchdog, not a timer per command)."""
        return self.call_many([args], timeout_s=timeout_s)[0]

    def call_many(
        self, commands: Sequence[Sequence[str | bytes | int]], *, timeout_s: float = 10.0
    ) -> list[asyncio.Future[Reply]]:
        """Send several commands in one write (as `call`, which sends one); their
        replies, in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Reply]] = [loop.create_future() for _ in commands]
        if self._lost is not None:
            for future in futures:
                future.set_exception(ConnectionError(f"Redis connection lost: {self._lost}"))
            return futures
        due = loop.time() + timeout_s
        self._waiting.extend((future, due) for future in futures)
        data = b"".join(_pack(args) for args in commands)
        if self._turn.first():
            # The first write of a loop turn leaves at once; the turn's others
            # follow in one write at its end.
            assert self._transport is not None
            self._transport.write(data)
        else:
            self._buffer.append(data)
        return futures

    def _flush(self) -> None:
        if self._buffer and self._transport is not None and self._lost is None:
            self._transport.writelines(self._buffer)
        self._buffer = []

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        asyncio.get_running_loop().call_later(WATCHDOG_S, self._watch)

    def _watch(self) -> None:
        if self._lost is not None:
            return
        loop = asyncio.get_running_loop()
        # Replies come in order: the oldest command is the first one overdue.
        if self._waiting and self._waiting[0][1] < loop.time():
            self._fail(TimeoutError("no reply from Redis in time"))
            return
        loop.call_later(WATCHDOG_S, self._watch)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("unexpected reply from Redis"))
                return
            future, _ = self._waiting.popleft()
            if future.done():  # its caller gave up (cancelled); the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("READONLY"):
                    # A demoted master (a failover): this connection is done for.
                    future.set_exception(ConnectionError(f"Redis: {reply}"))
                    self._fail(ConnectionError("the server is a replica now"))
                    return
                future.set_exception(redis_errors.ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("closed"))

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
        lost = ConnectionError(f"Redis connection lost: {exc}")
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(lost)
        self._buffer = []
        if self._transport is not None:
            self._transport.close()


def _pack(args: Sequence[str | bytes | int]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)

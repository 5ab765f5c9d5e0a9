"""The hub's log output: human lines that name the node and the job, or
`--log-json` lines of one flat JSON object each.

JSON lines carry `ts` (UTC, RFC 3339 with milliseconds), `level`, `msg`, `hub_id`,
then `event`, `job_id`, `request_id`, `node_id`, `attempt` where they apply, then
any other field the line was logged with (`peer`, `reason`, `outcome`, ...), and
`exc` (the traceback, code only) for an exception. Human lines put the same
fields after the message as `key=value`.

Never loguru's `diagnose`: it prints every local variable of a traceback, peers'
frames included. The traceback itself is kept.

Whatever a peer sent may end up in a line (a node's reject reason, a result's
`error.code`, a request id, an exception's text), so every line passes
`_patch` first: its message, each field's value and the text of a traceback's
exceptions are made `loggable` (hub/core/loggable.py): control characters,
newlines included, escaped and the length bounded. A peer can neither start a
line of its own nor fill the log with one string.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Generator
from datetime import UTC
from typing import Any, Final, TextIO

import msgspec
from loguru import logger

from hub.core.loggable import FIELD_LIMIT, MESSAGE_LIMIT, loggable

FIELDS: Final = ("event", "job_id", "request_id", "node_id", "attempt")
"""The job's fields, in this order, right after `hub_id`."""
HUMAN: Final = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{extra[hub_id]} | {message}{extra[_fields]}\n{extra[_exc]}"
)
_PLAIN: Final = (int, float, bool)

_encode = msgspec.json.Encoder(enc_hook=str).encode


def _patch(record: Any) -> None:
    """Every line's message and field values made `loggable` (a loguru patcher: it runs
    once a line, before any sink). Values that are not plain become their `str`."""
    record["message"] = loggable(record["message"], MESSAGE_LIMIT)
    extra: dict[str, Any] = record["extra"]
    for name, value in extra.items():
        if type(value) is str:
            extra[name] = loggable(value, FIELD_LIMIT)
        elif value is not None and not isinstance(value, _PLAIN):
            extra[name] = loggable(str(value), FIELD_LIMIT)


class _EscapedTraceback(traceback.TracebackException):
    """A traceback whose exception lines (`ValueError: ...`, notes) are `loggable`: an
    exception's text may hold what a peer sent. The rest is the hub's own code."""

    def format_exception_only(self) -> Generator[str, None, None]:
        for line in super().format_exception_only():
            yield loggable(line.removesuffix("\n"), MESSAGE_LIMIT) + "\n"


def format_exception(exception: Any) -> str:
    """A loguru record's exception as traceback text (no trailing newline)."""
    top = _EscapedTraceback(exception.type, exception.value, exception.traceback)
    # The chained exceptions (cause, context, a group's members) are built as plain
    # `TracebackException`s by the standard library: make them escape their text too.
    pending: list[traceback.TracebackException] = [top]
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.__class__ = _EscapedTraceback
        if node.__notes__:  # split into lines before `format_exception_only` sees them
            node.__notes__ = [loggable(str(note), MESSAGE_LIMIT) for note in node.__notes__]
        pending.extend(n for n in (node.__cause__, node.__context__) if n is not None)
        pending.extend(node.exceptions or ())
    return "".join(top.format()).rstrip()


def flat_record(record: Any) -> dict[str, Any]:
    """A loguru record as the flat object of one JSON line."""
    extra: dict[str, Any] = record["extra"]
    line: dict[str, Any] = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        ),
        "level": record["level"].name,
        "msg": record["message"],
        "hub_id": extra.get("hub_id"),
    }
    for name in FIELDS:
        value = extra.get(name)
        if value is not None:
            line[name] = value
    for name, value in extra.items():
        if name not in line and not name.startswith("_") and value is not None:
            line[name] = value
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        line["exc"] = format_exception(exception)
    return line


class JsonLines:
    """A loguru sink: one flat JSON object a line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, message: Any) -> None:
        self.stream.write(_encode(flat_record(message.record)).decode() + "\n")
        self.stream.flush()


def _human(record: Any) -> str:
    extra = record["extra"]
    fields = " ".join(f"{name}={extra[name]}" for name in FIELDS if extra.get(name) is not None)
    extra["_fields"] = f"  [{fields}]" if fields else ""
    exception = record["exception"]
    has_exc = exception is not None and exception.type is not None
    extra["_exc"] = format_exception(exception) + "\n" if has_exc else ""
    return HUMAN


def configure_logging(
    level: str, *, json: bool, hub_id: str | None = None, stream: TextIO | None = None
) -> None:
    """Log at `level` to `stream` (stderr): flat JSON lines, or human lines. Lines
    logged without a `hub_id` of their own carry `hub_id`."""
    logger.remove()
    logger.configure(extra={"hub_id": hub_id or "-", "_fields": "", "_exc": ""}, patcher=_patch)
    out = stream if stream is not None else sys.stderr
    if json:
        logger.add(
            JsonLines(out).write, level=level.upper(), format="{message}", enqueue=False,
            diagnose=False, backtrace=False, catch=True,
        )
    else:
        logger.add(
            out, level=level.upper(), format=_human, enqueue=False, diagnose=False,
            backtrace=False, colorize=None,
        )

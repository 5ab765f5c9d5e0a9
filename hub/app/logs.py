"""The hub's log output: human lines that name the node and the job, or
`--log-json` lines of one flat JSON object each.

JSON lines carry `ts` (UTC, RFC 3339 with milliseconds), `level`, `msg`, `hub_id`,
then `event`, `job_id`, `request_id`, `node_id`, `attempt` where they apply, then
any other field the line was logged with (`peer`, `reason`, `outcome`, ...), and
`exc` (the traceback, code only) for an exception. Human lines put the same
fields after the message as `key=value`.

Never loguru's `diagnose`: it prints every local variable of a traceback, peers'
frames included. The traceback itself is kept.
"""

from __future__ import annotations

import sys
import traceback
from datetime import UTC
from typing import Any, Final, TextIO

import msgspec
from loguru import logger

FIELDS: Final = ("event", "job_id", "request_id", "node_id", "attempt")
"""The job's fields, in this order, right after `hub_id`."""
HUMAN: Final = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "{extra[hub_id]} | {message}{extra[_fields]}\n{exception}"
)

_encode = msgspec.json.Encoder(enc_hook=str).encode


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
        line["exc"] = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        ).rstrip()
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
    return HUMAN


def configure_logging(
    level: str, *, json: bool, hub_id: str | None = None, stream: TextIO | None = None
) -> None:
    """Log at `level` to `stream` (stderr): flat JSON lines, or human lines. Lines
    logged without a `hub_id` of their own carry `hub_id`."""
    logger.remove()
    logger.configure(extra={"hub_id": hub_id or "-", "_fields": ""})
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

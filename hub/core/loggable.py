"""Peers' strings made fit for a log line: escaped and bounded. Pure string work.

A node's reject reason, a result's `error.code`, a request id, a token's
`sub`: whatever a peer sent may be written into the log. `loggable` writes
each control character as an escape, so a newline cannot start a forged line
and a NUL or a terminal escape is never written raw, and keeps the first
characters of an overlong string, so one string cannot fill the log.
`hub.app.logs` applies it to every line; the job log (`JobLog`) also bounds
each value it names to `FIELD_LIMIT`, so that a long one leaves the rest of
its line readable.

A backslash is left as it is: `\\n` in a line may be a peer's two
characters, never a line break.
"""

from __future__ import annotations

import re
from typing import Final

FIELD_LIMIT: Final = 200
"""Characters kept of one value (`request_id=`, `reason=`, a value named in a message)."""
MESSAGE_LIMIT: Final = 1000
"""Characters kept of a whole message (the hub's text and the values it names), and of
each exception line of a traceback."""

# C0, DEL and C1 controls (newlines among them), the other line and paragraph
# separators, bidirectional marks and overrides (text that displays in another order
# than it reads) and lone surrogates (which UTF-8 cannot encode).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def loggable(text: str, limit: int = FIELD_LIMIT) -> str:
    """`text` fit for one log line: its first `limit` characters (then `…` and its
    length, when longer), each control character written as an escape (`\\n`,
    `\\x00`, `\\u2028`). Unchanged (the same object) when already fit."""
    if len(text) <= limit and (
        # ASCII without C0 or DEL: most strings, checked faster than by the pattern.
        (text.isascii() and text.isprintable()) or _UNSAFE.search(text) is None
    ):
        return text
    if len(text) > limit:
        text = f"{text[:limit]}…[{len(text)} chars]"
    return _UNSAFE.sub(_escape, text)

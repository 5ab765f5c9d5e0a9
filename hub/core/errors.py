"""Every exception the hub raises on purpose, under one root.

A `ProtocolError` carries a wire code (see docs/protocol.md, "Error codes")
and, for decode failures, the JSON path of the offending field, so the I/O
layer can turn it into an `error` message without knowing what went wrong.
"""

from __future__ import annotations


class HubError(Exception):
    """Root of every exception nodehub raises deliberately."""


class ProtocolError(HubError):
    """A peer sent something the protocol refuses; `code` is the wire code."""

    def __init__(
        self, code: str, message: str, *, path: str | None = None, job_id: str | None = None,
        session_id: str | None = None, reasons: dict[str, int] | None = None,
        room: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        self.job_id = job_id
        """The job the refused message was about, when it decoded far enough to tell."""
        self.session_id = session_id
        """The live session the refused message was about."""
        self.reasons = reasons
        """With `no_node`: why no node serves it (`{reason: count}`)."""
        self.room = room
        """The room the refused message was about."""

    def __repr__(self) -> str:
        return f"ProtocolError(code={self.code!r}, message={self.message!r}, path={self.path!r})"


class ConfigError(HubError):
    """The configuration is invalid; the message says which key and why."""


class StoreUnavailable(HubError):
    """The state store (Redis in cross-instance mode) cannot be reached right now."""

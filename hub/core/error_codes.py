"""Every wire error code the hub sends, in one place (docs/protocol.md, "Error codes").

Three families share one namespace of strings:

- `error.code`: a message was refused (`ProtocolError.code`);
- `rejected.code`: a submit created no job;
- `result.error.code` when the hub itself ends a job (a node's own codes are
  forwarded verbatim and are not listed here).

Outside code matches on these strings: never rename one without bumping the
protocol version.
"""

from __future__ import annotations

from typing import Final

# --- `error`: a refused message ----------------------------------------------------
BAD_MESSAGE: Final = "bad_message"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
INVALID_FIELD: Final = "invalid_field"
NOT_REGISTERED: Final = "not_registered"
ALREADY_REGISTERED: Final = "already_registered"
NODE_ID_CONFLICT: Final = "node_id_conflict"
NOT_YOUR_JOB: Final = "not_your_job"
STALE_ATTEMPT: Final = "stale_attempt"
JOB_FINISHED: Final = "job_finished"
UNKNOWN_JOB: Final = "unknown_job"
HOME_LOST: Final = "home_lost"
INTERNAL_ERROR: Final = "internal_error"

# --- authentication (also the `error` of an HTTP 400 / 401 / 403 body) -------------
BAD_REQUEST: Final = "bad_request"
"""HTTP 400 at the handshake: an `Origin` or `Authorization` header sent more than once."""
UNAUTHORIZED: Final = "unauthorized"
"""HTTP 401 at the handshake: no token, or a bad, expired or malformed one."""
FORBIDDEN: Final = "forbidden"
"""HTTP 403 (wrong role, foreign Origin), or `register` of a node id the token does not
allow (then close 4003)."""

# --- `rejected`: no job was created ----------------------------------------------------
NO_NODE: Final = "no_node"
STORE_UNAVAILABLE: Final = "store_unavailable"
DUPLICATE_IN_FLIGHT: Final = "duplicate_in_flight"
HUB_SHUTDOWN: Final = "hub_shutdown"

# --- `result.error`: the hub ended the job (NO_NODE and HUB_SHUTDOWN too) -------------
CANCELLED: Final = "cancelled"
TIMEOUT: Final = "timeout"
ATTEMPTS_EXHAUSTED: Final = "attempts_exhausted"
FAILED: Final = "failed"
"""A node's `ok: false` without an `error` of its own."""
HANDLER_ERROR: Final = "handler_error"
"""Sent by the agent SDK (not the hub) when a job handler raised."""

# --- limits (protocol v1.1, "Limits") ---
OVERLOADED: Final = "overloaded"
"""`rejected`: the client session holds `max_jobs_per_session` unfinished jobs, or
 the job would wait and the queue (or this session's share of it) is full."""
UNKNOWN_SESSION: Final = "unknown_session"
"""`error`: no open live session with that id on this connection."""
SESSION_LIMIT: Final = "session_limit"
"""`error`: the connection holds `max_sessions_per_connection` live sessions."""
BAD_OUTPUT: Final = "bad_output"
"""A two-way job's output without a valid detected `src_lang`: a failed attempt, and
`result.error` when the job's last attempt ended so."""
ROOM_LIMIT: Final = "room_limit"
"""`error`: the room holds `max_room_members`, or the connection `max_rooms_per_connection`."""
RESULT_EXPIRED: Final = "result_expired"
"""`result.error` for a resubmit: the job finished, but its result was evicted from
memory (`max_archive_bytes`); the job is never run a second time."""

HUB_OUTCOMES: Final = frozenset(
    {"ok", NO_NODE, ATTEMPTS_EXHAUSTED, TIMEOUT, CANCELLED, HUB_SHUTDOWN, BAD_OUTPUT}
)
"""Terminal outcomes the hub itself decides (any other failure came from a node)."""

# --- the admission queue -------------------------------------------------
QUEUE_TIMEOUT: Final = "queue_timeout"
"""`result.error`: the job waited for a free slot past its `queue_timeout_ms`."""
QUEUE_OUTCOMES: Final = frozenset({QUEUE_TIMEOUT, INTERNAL_ERROR})
"""Terminal outcomes of the queue, counted in `nodehub_jobs_total` like `HUB_OUTCOMES`
(`internal_error`: the hub failed to start a waiting job)."""

# --- the admin surface (the `error` of an HTTP answer's JSON body) ----------
UNKNOWN_NODE: Final = "unknown_node"
"""HTTP 404 of `POST /v1/nodes/<id>/drain` and `/undrain`: no such node in the fleet."""
HUB_UNREACHABLE: Final = "hub_unreachable"
"""HTTP 504 of an admin action forwarded to another hub that did not answer in time."""
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
"""HTTP 405: the path exists, the method does not (an `Allow` header lists those that do)."""

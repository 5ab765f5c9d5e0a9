"""Every WebSocket close code the hub sends (docs/protocol.md, "Close codes").

RFC 6455's own codes first, then the application codes (4000-4999) this
protocol defines. Outside code (node agents) decides whether to reconnect on
these numbers: never renumber one.
"""

from __future__ import annotations

from typing import Final

GOING_AWAY: Final = 1001
"""The hub is shutting down."""
POLICY_VIOLATION: Final = 1008
"""Too many protocol errors, or an unknown endpoint."""
MESSAGE_TOO_BIG: Final = 1009
"""A frame over `max_frame_bytes` (sent by websockets itself)."""

NODE_TIMEOUT: Final = 4000
"""A node session silent for `node_timeout_ms`."""
REGISTER_REFUSED: Final = 4001
"""`register` refused with `node_id_conflict`."""
OWNERSHIP_LOST: Final = 4002
"""(cross-instance) the node's ownership moved to another hub."""

# --- authentication (protocol-v1.1, "Authentication and tenancy") ----------
FORBIDDEN: Final = 4003
"""`register` of a node id the session's token does not allow."""
TOKEN_EXPIRED: Final = 4004
"""The session's token passed its `exp`; reconnect with a fresh token."""
REPLACED: Final = 4005
"""Another session, with a token allowed this node id, took the node over."""
# --- limits (protocol v1.1, "Limits") ---
SLOW_CONSUMER: Final = 4006
"""The peer's queue stayed over `max_outbound_bytes` for `slow_peer_timeout_ms` (or
reached `SLOW_PEER_HARD_FACTOR` times it): its queue is dropped."""

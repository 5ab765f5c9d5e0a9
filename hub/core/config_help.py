"""What each configuration key means, in one line: the help of its `hub serve`
flag and of `hub config`. `tests/app/test_config_cli.py` checks every key has one."""

from __future__ import annotations

from typing import Final

KEY_HELP: Final[dict[str, str]] = {
    "host": "address to bind (a non-loopback host with auth = none logs a warning)",
    "port": "port for WebSocket and HTTP (0: any free port)",
    "deployment_mode": "local: one hub, state in memory; cross_instance: hubs share Redis",
    "hub_id": "this hub's name among hubs (job ids start with it)",
    "heartbeat_interval_ms": "told to nodes at registration; also the presence/lease tick",
    "node_timeout_ms": "a node silent this long is closed (4000) and its jobs fail over",
    "accept_timeout_ms": "a node must accept or reject an assignment within this",
    "job_timeout_ms": "one attempt's budget after assignment",
    "max_attempts": "attempts per job, failovers included",
    "idempotency_ttl_ms": "how long a request_id stays bound and a result is kept",
    "max_frame_bytes": "largest WebSocket frame accepted (larger: close 1009)",
    "max_protocol_errors": "refused messages within 10 s after which a session is closed",
    "session_affinity": "use the client's session id as routing key when a submit has none",
    "default_pool": "pool of nodes that register without one",
    "selection_seed": "seed of the selector's random choices (none: from the OS)",
    "load_publish_interval_ms": "cross_instance: how often load changes are published",
    "resync_interval_ms": "cross_instance: how often other hubs' nodes are re-read",
    "redis_url": "cross_instance: redis://, rediss://, unix:// or redis+sentinel:// URL",
    "redis_prefix": "cross_instance: prefix of every Redis key (one per hub cluster)",
    "log_level": "TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL",
    "log_json": "log one flat JSON object a line (ts, level, msg, hub_id, job fields)",
    "auth": "none: every peer is accepted; jwt: tokens for everything but the probes",
    "jwt_secret": "HS256 secret (32 bytes or more); prefer jwt_secret_file",
    "jwt_secret_file": "file of HS256 secrets, one a line: all verify, the first signs",
    "jwt_public_key_file": "file of PEM public keys (RS256, ES256) that verify tokens",
    "metrics_public": "with auth = jwt, serve /metrics without a token",
    "allowed_origins": "comma-separated origins; a request from another Origin gets 403",
    "tls_cert_file": "PEM certificate chain: with tls_key_file the port speaks TLS only",
    "tls_key_file": "PEM private key of tls_cert_file",
    "queue_timeout_ms": "how long a job may wait for a free slot (0: never wait)",
    "max_queued_jobs": "jobs waiting on this hub; past it submits get overloaded",
    "max_outbound_bytes": "bytes queued for one peer before it counts as slow",
    "slow_peer_timeout_ms": "a peer slow this long is closed with 4006",
    "max_capability_entries": "pairs + ASR + TTS languages + features of one node, at most",
    "max_jobs_per_session": "unfinished jobs one client session may hold",
    "max_held_payload_bytes": "payload and slow-peer queue bytes all peers may make the hub "
    "hold; past half of it each tenant or session holds at most its share",
    "capabilities_interval_ms": "a node's capability updates apply at most once per this "
    "interval (the latest wins)",
    "max_connections": "open WebSocket sessions; past it handshakes get 503",
    "max_archive_bytes": "bytes of finished job records held in memory for resubmits",
    "gc_pacing": "freeze what survived a long full GC, so later ones stay short",
    "gc_thaw_interval_ms": "how often frozen objects are thawed (one full collection)",
    "job_log_level": "level of the job lifecycle lines (DEBUG turns them down, OFF skips)",
    # Named here so their flags have help too.
    "hub_timeout_ms": "a hub silent this long is excluded from selection on the others",
    "drain_timeout_ms": "on SIGTERM, how long running jobs may finish",
    "max_sessions_per_connection": "live sessions one client connection may hold open",
    "session_idle_ms": "a live session without connection or running utterance lives this long",
    "max_room_members": "members of one room, across hubs",
    "max_rooms_per_connection": "rooms one client connection may be in",
}

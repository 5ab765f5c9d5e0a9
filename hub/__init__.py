"""nodehub: an asyncio WebSocket hub that routes speech and translation jobs to GPU node agents.

The package is layered; imports flow one way (checked by tests/test_imports.py):

    core <- runtime <- store <- cluster <- jobs <- net <- app

`hub.core` is pure (no I/O, no clock, no asyncio), `hub.app` wires the rest
together (`hub.app.hub.Hub`). See docs/architecture.md.
"""

__version__ = "0.1.0"

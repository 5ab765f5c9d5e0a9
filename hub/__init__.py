"""nodehub: an asyncio WebSocket hub that routes speech and translation jobs to GPU node agents."""

__version__ = "0.1.0"

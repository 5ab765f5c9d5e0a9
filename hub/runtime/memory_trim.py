"""`MemoryTrim`: memory freed after a burst goes back to the operating system.

A burst of big payloads (a client queueing megabyte submits, results piling up
for a peer that stopped reading) is freed when its jobs end, but glibc's
allocator keeps the freed heap for reuse (and, after freeing large blocks,
raises its mmap threshold, so that later large blocks come from that heap
too): the process's RSS stays at its peak. When what the hub holds for peers
(`HeldBytes`) has dropped by `drop_bytes` since its peak, `malloc_trim(0)`
returns the free heap to the OS. A no-op where the C library has no
`malloc_trim` (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

from loguru import logger

DROP_BYTES: Final = 64 * 1024 * 1024
CHECK_S: Final = 2.0


def _malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrim:
    __slots__ = ("_held", "_peak", "_trim", "check_s", "drop_bytes", "trims")

    def __init__(
        self, held: Callable[[], int], *, drop_bytes: int = DROP_BYTES, check_s: float = CHECK_S,
    ) -> None:
        self._held = held
        self.drop_bytes = drop_bytes
        self.check_s = check_s
        self._peak = 0
        self._trim = _malloc_trim()
        self.trims = 0

    def __repr__(self) -> str:
        return f"MemoryTrim(peak={self._peak}, trims={self.trims})"

    @property
    def available(self) -> bool:
        return self._trim is not None

    def check(self) -> bool:
        """Trim when what is held fell by `drop_bytes` from its peak; True if it did."""
        held = self._held()
        if held > self._peak:
            self._peak = held
            return False
        if self._peak - held < self.drop_bytes or self._trim is None:
            return False
        self._peak = held
        self._trim()
        self.trims += 1
        return True

    async def run(self) -> None:
        """Check every `check_s` until cancelled."""
        while True:
            await asyncio.sleep(self.check_s)
            try:
                self.check()
            except Exception:  # never let housekeeping take the hub down
                logger.exception("returning memory to the OS failed")

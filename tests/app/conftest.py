"""Fixtures of the application tests."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import pytest
from loguru import logger


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A stream for a test's log sink; loguru's own default handler is back after it."""
    stream = io.StringIO()
    yield stream
    logger.remove()
    logger.configure(extra={})
    logger.add(sys.stderr)  # loguru's own default handler

"""`hub serve`'s process setup: logging without loguru's `diagnose`, the open-file limit."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from hub.app.cli import configure_logging, raise_open_file_limit
from hub.core.config import HubConfig


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logger.add(sys.stderr)  # loguru's own default handler


def test_logged_exceptions_never_show_local_values(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=False)

    def refuse(value: str) -> None:
        raise ValueError(f"bad frame of {len(value)} characters")

    def handle(frame: str) -> None:
        secret = frame.upper()
        refuse(secret)  # diagnose would print `secret`'s value under this line

    frame = "token=" + "".join(reversed("2retnuh"))  # not in the source lines shown
    try:
        handle(frame)
    except ValueError:
        logger.exception("internal error on a client message")
    err = capsys.readouterr().err
    assert "internal error on a client message" in err and "ValueError" in err
    assert "hunter2" not in err.lower()  # diagnose would print `frame` and `secret`


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 1024) if hard == resource.RLIM_INFINITY else min(soft, hard - 1, 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_open_file_limit(HubConfig(max_connections=100)) == (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""Peers cannot forge log lines: whatever they send (ids, reasons, error codes, an
exception's text) is escaped and bounded in both log formats, through the real sinks
of `configure_logging`."""

from __future__ import annotations

import io
import json
import re

import pytest
from loguru import logger

from hub.app.logs import configure_logging
from hub.core.loggable import FIELD_LIMIT
from hub.jobs.home.job_log import JobLog
from tests.conftest import MakeHub, Net
from tests.support.hubtest import caps, wait_until

FORMATS = pytest.mark.parametrize("as_json", [True, False], ids=["json", "human"])
HUMAN_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| ")
HUGE = 900_000


def check_lines(text: str, *, as_json: bool, max_line: int = 3_000) -> list[str]:
    """Every line is one whole record (JSON, or starting with a timestamp), holds no raw
    control character and is bounded; the lines."""
    lines = text.splitlines()
    assert lines, "nothing was logged"
    for line in lines:
        assert len(line) < max_line, line[:300]
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", line), line[:300]
        if as_json:
            json.loads(line)
        else:
            assert HUMAN_START.match(line), line[:300]
    # `splitlines` also splits on \x1c-\x1e, \x85, \u2028, \u2029: none is raw either.
    assert len(lines) == text.count("\n")
    return lines


@FORMATS
def test_peer_strings_in_a_message_and_its_fields_stay_on_one_line(
    log_stream: io.StringIO, as_json: bool
) -> None:
    configure_logging("INFO", json=as_json, hub_id="h1", stream=log_stream)
    logger.bind(
        node_id="n1\nFORGED node line", request_id="r\x00\r\nFORGED request line",
        peer="p\x1b[2J", reason="x" * HUGE,
    ).info("node {} rejected a job: {} ({})", "n1\nFORGED line", "y" * HUGE, "nul\x00")
    (line,) = check_lines(log_stream.getvalue(), as_json=as_json)
    assert "\x00" not in line and "\x1b" not in line
    if as_json:
        record = json.loads(line)
        assert record["node_id"] == "n1\\nFORGED node line"
        assert record["request_id"] == "r\\x00\\r\\nFORGED request line"
        assert record["peer"] == "p\\x1b[2J"
        assert record["reason"] == "x" * FIELD_LIMIT + f"…[{HUGE} chars]"
        assert record["msg"].startswith("node n1\\nFORGED line rejected a job: yyy")
        assert record["msg"].endswith(" chars]")
    else:
        assert "node_id=n1\\nFORGED node line" in line
        assert "request_id=r\\x00\\r\\nFORGED request line" in line


@FORMATS
def test_a_job_line_bounds_each_value_and_reads_to_its_end(
    log_stream: io.StringIO, as_json: bool
) -> None:
    configure_logging("INFO", json=as_json, stream=log_stream)
    JobLog("h1").rejected("req\nFORGED line", "code\x00" + "c" * HUGE, "d\r\n" * HUGE)
    (line,) = check_lines(log_stream.getvalue(), as_json=as_json, max_line=1_500)
    message = json.loads(line)["msg"] if as_json else line.split(" | ", 3)[3].partition("  [")[0]
    assert message.startswith("submit req\\nFORGED line rejected: code\\x00ccc")
    assert message.endswith(f"…[{3 * HUGE} chars])")  # the detail, then the message's end
    if as_json:
        assert json.loads(line)["request_id"] == "req\\nFORGED line"


@FORMATS
def test_an_exceptions_text_cannot_forge_lines_of_its_traceback(
    log_stream: io.StringIO, as_json: bool
) -> None:
    configure_logging("INFO", json=as_json, stream=log_stream)
    try:
        try:
            raise RuntimeError("cause\nFORGED cause line")
        except RuntimeError as exc:
            error = ValueError("bad value\r\nFORGED line\x00" + "z" * HUGE)
            error.add_note("note\nFORGED note line")
            raise error from exc
    except ValueError:
        logger.exception("internal error on a node message")
    text = log_stream.getvalue()
    assert "\x00" not in text and len(text) < 10_000
    if as_json:
        (line,) = check_lines(text, as_json=True)
        exc = json.loads(line)["exc"]
        assert "ValueError: bad value\\r\\nFORGED line\\x00zzz" in exc
        assert "RuntimeError: cause\\nFORGED cause line" in exc
        lines = exc.splitlines()
    else:
        lines = text.splitlines()
        assert HUMAN_START.match(lines[0]) and "Traceback (most recent call last):" in text
        assert "ValueError: bad value\\r\\nFORGED line\\x00zzz" in text
    assert not [line for line in lines if line.startswith("FORGED")]
    assert "note\\nFORGED note line" in lines


@FORMATS
async def test_a_hub_logs_hostile_peers_on_single_bounded_lines(
    make_hub: MakeHub, net: Net, log_stream: io.StringIO, as_json: bool
) -> None:
    """Over real sockets: a node and a client whose ids, reject reason and error code and
    message hold newlines, control characters and (the code) 900 KB."""
    configure_logging("DEBUG", json=as_json, hub_id="h1", stream=log_stream)
    hub = await make_hub(hub_id="h1", max_attempts=1)
    node = await net.node(hub, "n1\nFORGED node line\x00", caps(max_concurrency=1))
    client = await net.client(hub)
    await client.submitted("r1\r\nFORGED request line")
    assign = await node.assigned()
    await node.reject(assign, reason="busy\nFORGED reason line\x1b[2J")
    await client.expect("result", ok=False)
    await client.submitted("r2\nFORGED request line")
    assign = await node.assigned()
    await node.accept(assign)
    await node.result(assign, ok=False, error={
        "code": "E\nFORGED code line" + "c" * HUGE, "message": "m\x00\nFORGED message line",
    })
    await client.expect("result", ok=False)
    await wait_until(lambda: log_stream.getvalue().count(" finished: ") == 2)
    lines = check_lines(log_stream.getvalue(), as_json=as_json)
    if as_json:  # the values, JSON's own escapes undone
        lines = [" ".join(map(str, json.loads(line).values())) for line in lines]
    text = "\n".join(lines)
    assert "n1\\nFORGED node line\\x00" in text and "r2\\nFORGED request line" in text
    assert "E\\nFORGED code linecccc" in text and "\x00" not in text

"""The hub codecs' ingress rules (`IngressRules`): nesting depth, values every peer can
receive whatever its encoding, `max_capability_entries`."""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec
import pytest

from hub.core.errors import ProtocolError
from hub.core.messages import (
    MAX_DEPTH,
    ClientInbound,
    Codec,
    JobProgress,
    JobResult,
    Submit,
    client_codec,
    node_codec,
)


def _lists(n: int) -> Any:
    """`n` lists, one inside the other, around a string."""
    value: Any = "leaf"
    for _ in range(n):
        value = [value]
    return value


def _submit(payload: Any) -> dict[str, Any]:
    return {"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de",
            "payload": payload}


def _refusal(codec: Codec[Any], frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame)
    assert info.value.code == "invalid_field"
    return info.value


@pytest.mark.parametrize("binary", [False, True])
def test_depth_limit_counts_the_message_as_level_one(binary: bool) -> None:
    codec = client_codec(binary=binary)
    encode = msgspec.msgpack.encode if binary else msgspec.json.encode
    # The submit is level 1, its payload level 2: 63 lists reach level 64.
    message = codec.decode(encode(_submit(_lists(MAX_DEPTH - 1))))
    assert isinstance(message, Submit) and message.payload == _lists(MAX_DEPTH - 1)
    error = _refusal(codec, encode(_submit(_lists(MAX_DEPTH))))
    assert error.path == "$.payload" + "[0]" * (MAX_DEPTH - 1)
    assert "deeper than 64" in error.message


def test_maps_and_lists_both_count_as_levels() -> None:
    codec = client_codec()
    mixed: Any = "leaf"
    for level in range(MAX_DEPTH - 1):
        mixed = {"m": mixed} if level % 2 else [mixed]
    assert isinstance(codec.decode(json.dumps(_submit(mixed))), Submit)
    _refusal(codec, json.dumps(_submit({"one more": mixed})))


def test_nesting_past_msgspecs_own_limit_is_the_same_refusal() -> None:
    frame = '{"type":"submit","request_id":"r","src_lang":"en","tgt_lang":"de","payload":'
    error = _refusal(client_codec(), frame + "[" * 100_000 + "]" * 100_000 + "}")
    assert error.path == "$" and "64" in error.message


UNFIT = [
    (True, msgspec.msgpack.Ext(5, b"x"), "$.payload", "extension type (5)"),
    (True, {3: "x"}, "$.payload", "not a string (int)"),
    (True, {"a": {None: 1}}, "$.payload.a", "not a string (NoneType)"),
    (True, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), "$.payload", "(datetime)"),
    (True, float("inf"), "$.payload", "non-finite"),
    (True, [0.5, float("nan")], "$.payload[1]", "non-finite"),
    (False, 2**64, "$.payload", "integer outside"),
    (False, {"n": [-(2**63) - 1]}, "$.payload.n[0]", "integer outside"),
]


@pytest.mark.parametrize(("binary", "value", "path", "words"), UNFIT)
def test_values_a_json_or_msgpack_peer_could_not_receive(
    binary: bool, value: Any, path: str, words: str
) -> None:
    frame = msgspec.msgpack.encode(_submit(value)) if binary else json.dumps(_submit(value))
    error = _refusal(client_codec(binary=binary), frame)
    assert error.path == path and words in error.message, error


def test_what_both_encodings_carry_is_accepted_unchanged() -> None:
    value = {"s": "x", "i": [0, -(2**63), 2**64 - 1], "f": 1.5, "b": [True, False],
             "n": None, "e": {}, "l": [], "u": "\u00e9\U0001f600"}
    for binary in (False, True):
        encode = msgspec.msgpack.encode if binary else msgspec.json.encode
        message = client_codec(binary=binary).decode(encode(_submit(value)))
        assert isinstance(message, Submit) and message.payload == value


def test_bytes_are_carried_in_free_form_values() -> None:
    """Binary data (protocol-v1.2): MessagePack `bin` in a payload decodes as bytes;
    the JSON encoder turns it into base64 text for a JSON peer."""
    value = {"audio": b"\x00\x01\xff", "nested": [b"", {"b": b"x"}]}
    message = client_codec(binary=True).decode(msgspec.msgpack.encode(_submit(value)))
    assert isinstance(message, Submit) and message.payload == value
    as_json = json.loads(msgspec.json.encode(message))
    assert as_json["payload"]["audio"] == "AAH/"  # base64


def test_node_free_fields_are_checked_and_the_refusal_names_the_job() -> None:
    codec = node_codec(binary=True)
    for message, field in (
        ({"type": "job_result", "job_id": "j1", "attempt": 1, "ok": True,
          "output": {"x": msgspec.msgpack.Ext(2, b"")}}, "$.output.x"),
        ({"type": "job_progress", "job_id": "j1", "attempt": 1,
          "data": [msgspec.msgpack.Ext(1, b"")]}, "$.data[0]"),
    ):
        error = _refusal(codec, msgspec.msgpack.encode(message))
        assert error.path == field and error.job_id == "j1"
    fine = codec.decode(msgspec.msgpack.encode(
        {"type": "job_result", "job_id": "j1", "attempt": 1, "ok": True, "output": "ok"}
    ))
    assert isinstance(fine, JobResult)
    progress = codec.decode(msgspec.msgpack.encode(
        {"type": "job_progress", "job_id": "j1", "attempt": 1}
    ))
    assert isinstance(progress, JobProgress) and progress.data is None


def _capabilities(pairs: int, asr: int, tts: int, features: int) -> dict[str, Any]:
    return {
        "max_concurrency": 1,
        "language_pairs": [{"src": f"s{i}", "tgt": "t"} for i in range(pairs)],
        "asr_languages": [f"a{i}" for i in range(asr)],
        "tts_languages": [f"t{i}" for i in range(tts)],
        "features": [f"f{i}" for i in range(features)],
    }


def test_capability_entries_count_the_four_lists_together() -> None:
    codec = node_codec(max_capability_entries=10)
    for kind in ("register", "capabilities"):
        extra = {"node_id": "n"} if kind == "register" else {}
        at_limit = {"type": kind, **extra, "capabilities": _capabilities(4, 2, 2, 2)}
        assert codec.decode(json.dumps(at_limit)) is not None
        over = {"type": kind, **extra, "capabilities": _capabilities(1, 1, 1, 8)}
        error = _refusal(codec, json.dumps(over))
        assert error.path == "$.capabilities" and "11 capability entries" in error.message
    # The default is the contract's 1024.
    big = {"type": "register", "node_id": "n", "capabilities": _capabilities(256, 256, 256, 257)}
    assert _refusal(node_codec(), json.dumps(big)).path == "$.capabilities"


def test_a_plain_codec_has_no_ingress_rules() -> None:
    """Peers' own decoders (the agent SDK, clients) take whatever the wire model allows."""
    codec: Codec[Any] = Codec(ClientInbound, binary=True)
    message = codec.decode(msgspec.msgpack.encode(_submit(b"raw")))
    assert isinstance(message, Submit) and message.payload == b"raw"


LONG = 200
"""Longer than `_FAST_ITEMS`: lists and maps this long are first checked in C."""


def _long_unfit() -> list[tuple[bool, Any, str, str]]:
    """Long flat lists and maps with one unfit value near their end: the C-level pass
    must not let it through, and the refusal names it as the loop would."""
    ints: list[Any] = [0] * LONG
    floats: list[Any] = [0.5] * LONG
    return [
        (False, [*ints, 2**64], f"$.payload[{LONG}]", "integer outside"),
        (False, [*ints, "s", -(2**63) - 1], f"$.payload[{LONG + 1}]", "integer outside"),
        (True, [*floats, 1, float("nan")], f"$.payload[{LONG + 1}]", "non-finite"),
        (True, [*floats, float("inf"), float("-inf")], f"$.payload[{LONG}]", "non-finite"),
        (True, [*floats, True, 1e308, 1e308, float("inf")], f"$.payload[{LONG + 3}]",
         "non-finite"),
        (True, {**{f"k{i}": i for i in range(LONG)}, "z": float("nan")}, "$.payload.z",
         "non-finite"),
        (False, {**{f"k{i}": "v" for i in range(LONG)}, "z": 2**64}, "$.payload.z",
         "integer outside"),
        (True, {**{f"k{i}": 1 for i in range(LONG)}, 7: 1}, "$.payload", "string"),
        (True, [*ints, msgspec.msgpack.Ext(1, b"x")], f"$.payload[{LONG}]", "extension"),
    ]


@pytest.mark.parametrize(("binary", "value", "path", "words"), _long_unfit())
def test_long_lists_and_maps_are_refused_like_short_ones(
    binary: bool, value: Any, path: str, words: str
) -> None:
    frame = msgspec.msgpack.encode(_submit(value)) if binary else json.dumps(_submit(value))
    error = _refusal(client_codec(binary=binary), frame)
    assert error.path == path and words in error.message, error


def test_long_flat_lists_and_maps_are_accepted_unchanged() -> None:
    values: list[Any] = [
        [0, -(2**63), 2**64 - 1, True, None, "x"] * LONG,
        [1.5, 0, -(2**63), 2**64 - 1, False, 1e308, 1e308] * LONG,  # sum past float range
        ["s", None, False] * LONG,
        {f"k{i}": [i, 0.5, "x", None][i % 4] for i in range(LONG)},
        [[0] * LONG, {"a": [1.5] * LONG}] * 3,
    ]
    for binary in (False, True):
        encode = msgspec.msgpack.encode if binary else msgspec.json.encode
        for value in values:
            message = client_codec(binary=binary).decode(encode(_submit(value)))
            assert isinstance(message, Submit) and message.payload == value

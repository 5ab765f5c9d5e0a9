"""The wire model: round trips in both encodings, and decode errors with wire codes and paths."""

from __future__ import annotations

import json

import msgspec
import pytest
from msgspec import inspect as mi

from hub.core.errors import ProtocolError
from hub.core.messages import (
    Accepted,
    Cancel,
    Capabilities,
    CapabilitiesUpdate,
    ClientInbound,
    Drain,
    Error,
    ErrorInfo,
    Heartbeat,
    JobAccept,
    JobAssign,
    JobCancel,
    JobProgress,
    JobReject,
    JobResult,
    LanguagePair,
    NodeInbound,
    Pipeline,
    Progress,
    Register,
    Registered,
    Rejected,
    Result,
    Submit,
    agent_codec,
    client_codec,
    node_codec,
    submitter_codec,
)

CAPS = Capabilities(
    max_concurrency=4,
    language_pairs=[LanguagePair("en", "de"), LanguagePair("de", "en")],
    asr_languages=["en", "de"],
    tts_languages=["de"],
    features=["emotion_detection"],
    pool=7,
    labels={"region": "eu"},
)

NODE_INBOUND = [
    Register(node_id="gpu-1", capabilities=CAPS, version="1.2"),
    Register(node_id="gpu-2", capabilities=Capabilities(max_concurrency=1)),
    Heartbeat(running=3, cpu=12.5, gpu=99.0, mem=0.0),
    Heartbeat(),
    CapabilitiesUpdate(capabilities=CAPS),
    Drain(),
    JobAccept(job_id="j1", attempt=1),
    JobReject(job_id="j1", attempt=2, reason="busy"),
    JobProgress(job_id="j1", attempt=1, data={"partial": "hal", "n": [1, 2]}),
    JobResult(job_id="j1", attempt=1, ok=True, output={"text": "hallo"}),
    JobResult(job_id="j1", attempt=3, ok=False, error=ErrorInfo("oom", "out of memory")),
]
NODE_OUTBOUND = [
    Registered(node_id="gpu-1", hub_id="hub-a", pool=7, heartbeat_interval_ms=1000),
    JobAssign(
        job_id="j1", attempt=1, session_id="s1", src_lang="en", tgt_lang="de",
        features=["voice_cloning"], pipeline=Pipeline(asr=False), deadline_ms=5000,
        payload={"audio": "..."},
    ),
    JobCancel(job_id="j1", attempt=1, reason="timeout"),
    Error(code="bad_message", message="nope", path="$.x", job_id="j1"),
]
CLIENT_INBOUND = [
    Submit(request_id="r1", src_lang="en", tgt_lang="de"),
    Submit(
        request_id="r2", src_lang="en", tgt_lang="de", session_id="s", routing_key="k",
        features=["a", "b"], pipeline=Pipeline(tts=False), preferred_node_id="gpu-1",
        preferred_pool=0, payload=[1, "x", None], timeout_ms=30_000,
    ),
    Cancel(job_id="j1"),
]
CLIENT_OUTBOUND = [
    Accepted(request_id="r1", job_id="j1", node_id="gpu-1", duplicate=False),
    Progress(job_id="j1", data="partial"),
    Result(request_id="r1", job_id="j1", node_id="gpu-1", ok=True, attempts=2, output="x"),
    Result(
        request_id="r1", job_id="j1", node_id="", ok=False, attempts=1,
        error=ErrorInfo("no_node"),
    ),
    Rejected(request_id="r1", code="no_node", message="m", reasons={"offline": 2}),
    Error(code="unknown_type", message="m"),
]

CODECS = [
    (node_codec, NODE_INBOUND),
    (agent_codec, NODE_OUTBOUND),
    (client_codec, CLIENT_INBOUND),
    (submitter_codec, CLIENT_OUTBOUND),
]
CASES = [
    pytest.param(factory, message, binary, id=f"{type(message).__name__}-{binary=}-{n}")
    for factory, messages in CODECS
    for n, message in enumerate(messages)
    for binary in (False, True)
]


@pytest.mark.parametrize(("factory", "message", "binary"), CASES)
def test_round_trip(factory: object, message: msgspec.Struct, binary: bool) -> None:
    codec = factory(binary=binary)  # type: ignore[operator]
    frame = codec.encode_frame(message)
    assert isinstance(frame, bytes if binary else str)
    assert codec.decode(frame) == message
    # The wire form is tagged by "type" with the protocol's field names.
    obj = msgspec.msgpack.decode(frame) if binary else json.loads(frame)
    assert obj["type"] == message.__struct_config__.tag


def test_every_inbound_type_covered() -> None:
    tags = {type(m).__struct_config__.tag for m in NODE_INBOUND}
    assert tags == {
        "register", "heartbeat", "capabilities", "drain", "job_accept", "job_reject",
        "job_progress", "job_result",
    }
    assert {type(m).__struct_config__.tag for m in CLIENT_INBOUND} == {"submit", "cancel"}


def test_json_wire_field_names() -> None:
    frame = node_codec().encode_frame(NODE_OUTBOUND[1])
    assert json.loads(frame) == {
        "type": "job_assign", "job_id": "j1", "attempt": 1, "session_id": "s1",
        "src_lang": "en", "tgt_lang": "de", "features": ["voice_cloning"],
        "pipeline": {"asr": False, "nmt": True, "tts": True}, "deadline_ms": 5000,
        "payload": {"audio": "..."},
    }


def _error(frame: str | bytes, *, binary: bool = False, codec: object = None) -> ProtocolError:
    c = codec or node_codec(binary=binary)
    with pytest.raises(ProtocolError) as info:
        c.decode(frame)  # type: ignore[attr-defined]
    return info.value


@pytest.mark.parametrize("frame", ["not json", "{", "", '{"type": "drain"} trailing'])
def test_not_json_is_bad_message(frame: str) -> None:
    assert _error(frame).code == "bad_message"


@pytest.mark.parametrize("frame", ["[1, 2]", '"register"', "42", "null"])
def test_non_object_is_bad_message(frame: str) -> None:
    err = _error(frame)
    assert (err.code, err.path) == ("bad_message", "$")


def test_msgpack_garbage_and_non_object() -> None:
    assert _error(b"\xc1", binary=True).code == "bad_message"
    assert _error(msgspec.msgpack.encode([1]), binary=True).code == "bad_message"
    err = _error(msgspec.msgpack.encode({"type": "nope"}), binary=True)
    assert (err.code, err.path) == ("unknown_type", "$.type")


@pytest.mark.parametrize(
    "frame", ['{"type": "zzz"}', '{"type": 5}', '{"type": "submit"}', '{"node_id": "a"}', "{}"]
)
def test_unknown_or_missing_type(frame: str) -> None:
    # "submit" is a client message: unknown on the node endpoint.
    err = _error(frame)
    assert (err.code, err.path) == ("unknown_type", "$.type")


def test_node_message_unknown_on_client_endpoint() -> None:
    err = _error('{"type": "drain"}', codec=client_codec())
    assert err.code == "unknown_type"


@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ('{"type": "register"}', "$.node_id"),
        ('{"type": "register", "node_id": "a"}', "$.capabilities"),
        (
            '{"type": "register", "node_id": "a", "capabilities": {}}',
            "$.capabilities.max_concurrency",
        ),
        (
            '{"type": "register", "node_id": "a", "capabilities": '
            '{"max_concurrency": 1, "language_pairs": [{"src": "en"}]}}',
            "$.capabilities.language_pairs[0].tgt",
        ),
        ('{"type": "job_accept", "job_id": "j"}', "$.attempt"),
        ('{"type": "job_result", "job_id": "j", "attempt": 1}', "$.ok"),
    ],
)
def test_missing_field(frame: str, path: str) -> None:
    err = _error(frame)
    assert (err.code, err.path) == ("missing_field", path)


def _register(caps: dict[str, object], node_id: object = "gpu-1") -> str:
    return json.dumps({"type": "register", "node_id": node_id, "capabilities": caps})


@pytest.mark.parametrize(
    ("frame", "path"),
    [
        (_register({"max_concurrency": 1, "pool": 70000}), "$.capabilities.pool"),
        (_register({"max_concurrency": 1, "pool": -1}), "$.capabilities.pool"),
        (_register({"max_concurrency": 1, "pool": "7"}), "$.capabilities.pool"),
        (_register({"max_concurrency": 0}), "$.capabilities.max_concurrency"),
        (_register({"max_concurrency": -3}), "$.capabilities.max_concurrency"),
        (_register({"max_concurrency": 1}, node_id=""), "$.node_id"),
        (_register({"max_concurrency": 1}, node_id=7), "$.node_id"),
        (_register({"max_concurrency": 1, "features": [""]}), "$.capabilities.features[0]"),
        (
            _register({"max_concurrency": 1, "asr_languages": ["en", ""]}),
            "$.capabilities.asr_languages[1]",
        ),
        (
            _register({"max_concurrency": 1, "language_pairs": [{"src": "", "tgt": "de"}]}),
            "$.capabilities.language_pairs[0].src",
        ),
        (_register({"max_concurrency": 1, "labels": {"a": 1}}), "$.capabilities.labels[...]"),
        ('{"type": "heartbeat", "cpu": 101}', "$.cpu"),
        ('{"type": "heartbeat", "running": -1}', "$.running"),
        ('{"type": "job_accept", "job_id": "j", "attempt": 0}', "$.attempt"),
        ('{"type": "job_result", "job_id": "j", "attempt": 1, "ok": "yes"}', "$.ok"),
    ],
)
def test_invalid_field(frame: str, path: str) -> None:
    err = _error(frame)
    assert (err.code, err.path) == ("invalid_field", path)
    assert err.message


@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ('{"type": "submit", "request_id": "r", "src_lang": "", "tgt_lang": "de"}', "$.src_lang"),
        (
            '{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
            '"preferred_pool": 65536}',
            "$.preferred_pool",
        ),
        (
            '{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
            '"pipeline": {"asr": 1}}',
            "$.pipeline.asr",
        ),
        (
            '{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", '
            '"timeout_ms": 0}',
            "$.timeout_ms",
        ),
    ],
)
def test_invalid_submit(frame: str, path: str) -> None:
    err = _error(frame, codec=client_codec())
    assert (err.code, err.path) == ("invalid_field", path)


def test_pool_bounds_accepted() -> None:
    for pool in (0, 65535):
        msg = node_codec().decode(_register({"max_concurrency": 1, "pool": pool}))
        assert isinstance(msg, Register)
        assert msg.capabilities.pool == pool


def test_unknown_optional_fields_are_ignored() -> None:
    frame = json.dumps(
        {
            "type": "register", "node_id": "gpu-1", "future_field": {"x": 1},
            "capabilities": {"max_concurrency": 2, "quantum": True,
                             "language_pairs": [{"src": "en", "tgt": "de", "score": 0.9}]},
        }
    )
    msg = node_codec().decode(frame)
    assert msg == Register(
        node_id="gpu-1",
        capabilities=Capabilities(max_concurrency=2, language_pairs=[LanguagePair("en", "de")]),
    )
    hb = node_codec(binary=True).decode(msgspec.msgpack.encode({"type": "heartbeat", "zz": 1}))
    assert hb == Heartbeat()
    sub = client_codec().decode(
        '{"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de", "v2": []}'
    )
    assert isinstance(sub, Submit)
    assert sub.pipeline == Pipeline(asr=True, nmt=True, tts=True)
    assert sub.features == []


def test_decode_raises_only_protocol_error_on_odd_input() -> None:
    codec = node_codec()
    for frame in ["\x00", "{" * 10000, '{"type": "register", "node_id": "a", "capabilities": []}',
                  '{"type": "job_progress", "job_id": "j", "attempt": 1e400}']:
        with pytest.raises(ProtocolError):
            codec.decode(frame)


# --- integers too large for the hub ------------------------------------------------------

HUGE = 10**400
"""A valid JSON integer; msgspec decodes it to a Python int unless a bound stops it."""


@pytest.mark.parametrize(
    ("message", "path", "binary"),
    [
        ({"type": "heartbeat", "running": HUGE}, "$.running", False),
        ({"type": "heartbeat", "running": -HUGE}, "$.running", False),
        ({"type": "heartbeat", "running": 2**63}, "$.running", False),
        ({"type": "heartbeat", "running": 2**64 - 1}, "$.running", True),
        ({"type": "job_accept", "job_id": "j", "attempt": HUGE}, "$.attempt", False),
        ({"type": "job_result", "job_id": "j", "attempt": 2**64 - 1, "ok": True}, "$.attempt",
         True),
        ({"type": "register", "node_id": "n", "capabilities": {"max_concurrency": HUGE}},
         "$.capabilities.max_concurrency", False),
        ({"type": "register", "node_id": "n",
          "capabilities": {"max_concurrency": 1, "pool": HUGE}}, "$.capabilities.pool", False),
    ],
)
def test_an_integer_too_large_is_an_invalid_field(
    message: dict[str, object], path: str, binary: bool
) -> None:
    frame = msgspec.msgpack.encode(message) if binary else json.dumps(message)
    err = _error(frame, codec=node_codec(binary=binary))
    assert (err.code, err.path) == ("invalid_field", path)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de",
          "priority": HUGE}, "$.priority"),
        ({"type": "submit", "request_id": "r", "src_lang": "en", "tgt_lang": "de",
          "timeout_ms": HUGE}, "$.timeout_ms"),
        ({"type": "session_open", "session_id": "s", "src_lang": "en", "tgt_lang": "de",
          "resume_after": HUGE}, "$.resume_after"),
        ({"type": "audio", "session_id": "s", "seq": HUGE, "data": ""}, "$.seq"),
        ({"type": "audio", "session_id": "s", "seq": 0, "data": "", "duration_ms": -HUGE},
         "$.duration_ms"),
    ],
)
def test_a_client_integer_too_large_is_an_invalid_field(
    fields: dict[str, object], path: str
) -> None:
    err = _error(json.dumps(fields), codec=client_codec())
    assert (err.code, err.path) == ("invalid_field", path)


def _integers(info: mi.Type, path: str) -> list[tuple[str, mi.IntType]]:
    """Every integer type reachable in `info` (struct fields, unions, containers)."""
    match info:
        case mi.IntType():
            return [(path, info)]
        case mi.StructType():
            return [found for field in info.fields
                    for found in _integers(field.type, f"{path}.{field.name}")]
        case mi.UnionType():
            return [found for member in info.types for found in _integers(member, path)]
        case mi.ListType() | mi.SetType() | mi.VarTupleType():
            return _integers(info.item_type, f"{path}[]")
        case mi.DictType():
            return [*_integers(info.key_type, f"{path}{{key}}"),
                    *_integers(info.value_type, f"{path}{{}}")]
    return []


@pytest.mark.parametrize("union", [NodeInbound, ClientInbound], ids=["node", "client"])
def test_every_inbound_integer_is_bounded_both_ways(union: object) -> None:
    """A new integer field without bounds would let 10**400 through to the hub."""
    found = _integers(mi.type_info(union), "$")
    assert found
    for path, info in found:
        assert info.ge is not None or info.gt is not None, path
        assert info.le is not None or info.lt is not None, path

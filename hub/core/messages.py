"""The wire model: every v1 message as a msgspec Struct tagged by `type`.

One union per endpoint and direction (`NodeInbound`, `NodeOutbound`,
`ClientInbound`, `ClientOutbound`), and one reused encoder/decoder pair per
encoding (JSON text frames, MessagePack binary frames; see docs/protocol.md,
"Transport"). Decoding never raises anything but `ProtocolError`, whose code
and field path are ready to be sent back to the peer in an `error` message.

Field constraints that the protocol states (non-empty strings, pool range,
`max_concurrency >= 1`) are declared here with `msgspec.Meta`, so a frame that
decodes is a frame the hub can act on.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Generic, TypeVar

import msgspec

from hub.core import error_codes
from hub.core.errors import ProtocolError

# --- constrained scalar types -------------------------------------------------

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
"""A non-empty identifier or language code."""
Pool = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Attempt = Annotated[int, msgspec.Meta(ge=1)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
NameList = Annotated[list[Name], msgspec.Meta(max_length=4096)]

JSON_SUBPROTOCOL: Final = "hub.v1.json"
MSGPACK_SUBPROTOCOL: Final = "hub.v1.msgpack"

# --- shared payload objects -----------------------------------------------------


class LanguagePair(msgspec.Struct, frozen=True):
    src: Name
    tgt: Name


class Capabilities(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a node advertises (docs/protocol.md, "capabilities object")."""

    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    language_pairs: Annotated[list[LanguagePair], msgspec.Meta(max_length=4096)] = []
    asr_languages: NameList = []
    tts_languages: NameList = []
    features: NameList = []
    pool: Pool | None = None
    labels: dict[str, str] = {}


class Pipeline(msgspec.Struct, frozen=True):
    """Which stages a job runs; a node must serve every enabled stage."""

    asr: bool = True
    nmt: bool = True
    tts: bool = True


DEFAULT_PIPELINE: Final = Pipeline()


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str = ""


class _Message(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of every wire message; the tag is the `type` field."""


# --- node -> hub ------------------------------------------------------------------


class Register(_Message, tag="register"):
    node_id: Name
    capabilities: Capabilities
    version: str | None = None


class Heartbeat(_Message, tag="heartbeat"):
    running: Annotated[int, msgspec.Meta(ge=0)] | None = None
    cpu: Percent | None = None
    gpu: Percent | None = None
    mem: Percent | None = None


class CapabilitiesUpdate(_Message, tag="capabilities"):
    capabilities: Capabilities


class Drain(_Message, tag="drain"):
    pass


class JobAccept(_Message, tag="job_accept"):
    job_id: Name
    attempt: Attempt


class JobReject(_Message, tag="job_reject"):
    job_id: Name
    attempt: Attempt
    reason: str = ""


class JobProgress(_Message, tag="job_progress"):
    job_id: Name
    attempt: Attempt
    data: Any = None


class JobResult(_Message, tag="job_result"):
    job_id: Name
    attempt: Attempt
    ok: bool
    output: Any = None
    error: ErrorInfo | None = None
    replayed: bool = False
    """(issue 12) Sent again after the connection it first went out on dropped: the hub
    it went to may have died with it. Accepted if that attempt is still the job's."""


NodeInbound = (
    Register | Heartbeat | CapabilitiesUpdate | Drain | JobAccept | JobReject | JobProgress
    | JobResult
)

# --- hub -> node ------------------------------------------------------------------


class Registered(_Message, tag="registered"):
    node_id: str
    hub_id: str
    pool: int
    heartbeat_interval_ms: int


class JobAssign(_Message, tag="job_assign"):
    job_id: str
    attempt: int
    session_id: str
    src_lang: str
    tgt_lang: str
    features: list[str]
    pipeline: Pipeline
    deadline_ms: int
    payload: Any
    """Always present (null when the submit had none), as the contract lists it."""


class JobCancel(_Message, tag="job_cancel"):
    job_id: str
    attempt: int
    reason: str


class Error(_Message, tag="error"):
    """Sent on both endpoints when a message is refused."""

    code: str
    message: str
    path: str | None = None
    job_id: str | None = None
    request_id: str | None = None
    """Set on an `error` caused by a submit (issue 12)."""


NodeOutbound = Registered | JobAssign | JobCancel | Error

# --- client -> hub ----------------------------------------------------------------


class Submit(_Message, tag="submit"):
    request_id: Name
    src_lang: Name
    tgt_lang: Name
    session_id: Name | None = None
    routing_key: Name | None = None
    features: NameList = []
    pipeline: Pipeline = DEFAULT_PIPELINE
    preferred_node_id: Name | None = None
    preferred_pool: Pool | None = None
    payload: Any = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=86_400_000)] | None = None


class Cancel(_Message, tag="cancel"):
    job_id: Name


ClientInbound = Submit | Cancel

# --- hub -> client ----------------------------------------------------------------


class Accepted(_Message, tag="accepted"):
    request_id: str
    job_id: str
    node_id: str
    duplicate: bool


class Progress(_Message, tag="progress"):
    job_id: str
    data: Any


class Result(_Message, tag="result"):
    request_id: str
    job_id: str
    node_id: str
    ok: bool
    attempts: int
    output: Any = None
    error: ErrorInfo | None = None


class Rejected(_Message, tag="rejected"):
    request_id: str
    code: str
    message: str
    reasons: dict[str, int] | None = None


ClientOutbound = Accepted | Progress | Result | Rejected | Error

# --- codecs -------------------------------------------------------------------------

T = TypeVar("T")

_PATH_RE = re.compile(r" - at `(\$[^`]*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `([^`]*)`")


def _protocol_error(exc: msgspec.ValidationError) -> ProtocolError:
    """Translate a msgspec validation error into a wire code and a field path."""
    text = str(exc)
    match = _PATH_RE.search(text)
    path = match.group(1) if match else "$"
    detail = text[: match.start()] if match else text
    missing = _MISSING_RE.match(detail)
    if missing:
        field = missing.group(1)
        full = f"{path}.{field}"
        if field == "type":
            return ProtocolError(
                error_codes.UNKNOWN_TYPE, "the message has no `type` field", path=full
            )
        return ProtocolError(
            error_codes.MISSING_FIELD, f"missing required field `{field}`", path=full
        )
    if path == "$.type":
        return ProtocolError(error_codes.UNKNOWN_TYPE, f"unknown message type: {detail}", path=path)
    if detail.startswith("Expected `object`") and path == "$":
        return ProtocolError(
            error_codes.BAD_MESSAGE, "a frame must hold one JSON object", path=path
        )
    return ProtocolError(error_codes.INVALID_FIELD, detail, path=path)


class Codec(Generic[T]):
    """Encode outbound messages and decode inbound ones for one endpoint.

    JSON and MessagePack share field names; `binary` selects MessagePack.
    Encoders and decoders are built once and reused (msgspec's fast path).
    """

    __slots__ = ("_decode", "_encode", "binary")

    def __init__(self, inbound: Any, *, binary: bool = False) -> None:
        self.binary = binary
        if binary:
            self._decode: Any = msgspec.msgpack.Decoder(inbound).decode
            self._encode: Any = msgspec.msgpack.Encoder().encode
        else:
            self._decode = msgspec.json.Decoder(inbound).decode
            self._encode = msgspec.json.Encoder().encode

    def decode(self, frame: str | bytes) -> T:
        """Decode one frame, or raise `ProtocolError` with a wire code."""
        try:
            result: T = self._decode(frame)
        except msgspec.ValidationError as exc:
            raise _protocol_error(exc) from None
        except msgspec.DecodeError as exc:
            kind = "MessagePack" if self.binary else "JSON"
            raise ProtocolError(
                error_codes.BAD_MESSAGE,
                f"the frame is not valid {kind}: {exc}") from None
        return result

    def encode(self, message: msgspec.Struct) -> bytes:
        return self._encode(message)  # type: ignore[no-any-return]

    def encode_frame(self, message: msgspec.Struct) -> str | bytes:
        """What to hand to the WebSocket: text for JSON, bytes for MessagePack."""
        data: bytes = self._encode(message)
        return data if self.binary else data.decode()


def node_codec(*, binary: bool = False) -> Codec[NodeInbound]:
    """Hub side of `/v1/node`: decodes node -> hub messages."""
    return Codec(NodeInbound, binary=binary)


def client_codec(*, binary: bool = False) -> Codec[ClientInbound]:
    """Hub side of `/v1/client`: decodes client -> hub messages."""
    return Codec(ClientInbound, binary=binary)


def agent_codec(*, binary: bool = False) -> Codec[NodeOutbound]:
    """Node-agent side of `/v1/node`: decodes hub -> node messages."""
    return Codec(NodeOutbound, binary=binary)


def submitter_codec(*, binary: bool = False) -> Codec[ClientOutbound]:
    """Client side of `/v1/client`: decodes hub -> client messages."""
    return Codec(ClientOutbound, binary=binary)

"""The wire model: every v1 message as a msgspec Struct tagged by `type`.

One union per endpoint and direction (`NodeInbound`, `NodeOutbound`,
`ClientInbound`, `ClientOutbound`), and one reused encoder/decoder pair per
encoding (JSON text frames, MessagePack binary frames; see docs/protocol.md,
"Transport"). Decoding never raises anything but `ProtocolError`, whose code
and field path are ready to be sent back to the peer in an `error` message.

Field constraints that the protocol states (non-empty strings, pool range,
`max_concurrency >= 1`, every integer within int64) are declared here with
`msgspec.Meta`, so a frame that decodes is a frame the hub can act on. The
hub's own codecs (`node_codec`, `client_codec`) add the ingress limits
(`IngressRules`): nesting depth, values every peer can receive whatever its
encoding, and `max_capability_entries`; so a frame that decodes is also one the
hub can deliver.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Generic, TypeVar

import msgspec

from hub.core import error_codes
from hub.core.errors import ProtocolError

# --- constrained scalar types -------------------------------------------------

INT64_MAX: Final = 2**63 - 1
"""The upper bound of every inbound integer without a tighter one. JSON has no integer
range and msgspec decodes any to a Python int: without a bound, 10**400 would reach
the hub (and fail there, an `internal_error`). msgspec checks no wider bound."""
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
"""A non-empty identifier or language code."""
Pool = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
"""A non-negative integer: a number of jobs, a sequence number, a duration."""
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
    running: Count | None = None
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
    """ Sent again after the connection it first went out on dropped: the hub
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


HUB_SILENCE_HEARTBEATS: Final = 3
HUB_SILENCE_MIN_MS: Final = 2000


def hub_silence_ms(heartbeat_interval_ms: int) -> int:
    """How long a node waits for a pong before it counts its hub as frozen and moves to
    another (the protocol's rule, Liveness): three heartbeats, at least 2 s. The hub
    reads it too, to know how long a node of a silent hub may take to show up
    elsewhere with its unread results."""
    return max(HUB_SILENCE_MIN_MS, HUB_SILENCE_HEARTBEATS * heartbeat_interval_ms)


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
    """Set on an `error` caused by a submit."""
    session_id: str | None = None
    """Set on an `error` caused by a live session's message."""
    reasons: dict[str, int] | None = None
    """With `no_node` instead of `session_opened`: why no node serves the session."""
    room: str | None = None
    """Set on an `error` caused by a `room_join` or `room_leave`."""


NodeOutbound = Registered | JobAssign | JobCancel | Error

# --- client -> hub ----------------------------------------------------------------


class Submit(_Message, tag="submit"):
    request_id: Name
    src_lang: Name
    """`auto`: two-way, between the two `langs` (the node detects which was spoken)."""
    tgt_lang: Name
    """`auto` with a two-way `src_lang`."""
    session_id: Name | None = None
    routing_key: Name | None = None
    features: NameList = []
    pipeline: Pipeline = DEFAULT_PIPELINE
    preferred_node_id: Name | None = None
    preferred_pool: Pool | None = None
    payload: Any = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=86_400_000)] | None = None
    # --- the admission queue ---
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0
    """Higher waits less for a free slot; FIFO within a priority."""
    queue_timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    """How long the job may wait for a free slot (null: the hub's `queue_timeout_ms`;
    0: never wait, the v1 behaviour)."""
    langs: Annotated[list[Name], msgspec.Meta(max_length=2)] | None = None
    """The two languages of a two-way job (`src_lang: auto`)."""


class Cancel(_Message, tag="cancel"):
    job_id: Name


# --- live sessions (client -> hub; protocol-v1.2 "Live sessions") -------------------

AUTO: Final = "auto"
"""`src_lang` of a two-way session or submit: the node detects the spoken language."""
PCM_S16LE: Final = "pcm_s16le"


class AudioFormat(msgspec.Struct, frozen=True):
    """How a session's audio is encoded; passed to the node with each utterance."""

    codec: Name = PCM_S16LE
    sample_rate_hz: Annotated[int, msgspec.Meta(ge=8000, le=192_000)] = 16_000
    channels: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1


DEFAULT_AUDIO_FORMAT: Final = AudioFormat()


class SessionOpen(_Message, tag="session_open", kw_only=True):
    session_id: Name
    src_lang: Name
    tgt_lang: Name | None = None
    """Required unless `src_lang` is `auto` (checked by the live layer)."""
    langs: Annotated[list[Name], msgspec.Meta(max_length=2)] | None = None
    pipeline: Pipeline = DEFAULT_PIPELINE
    features: NameList = []
    preferred_pool: Pool | None = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=86_400_000)] | None = None
    audio_format: AudioFormat = DEFAULT_AUDIO_FORMAT
    pause_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] = 1000
    max_utterance_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 10_000
    max_utterance_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 524_288
    resume_after: Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)] | None = None


class Audio(_Message, tag="audio"):
    session_id: Name
    seq: Count
    data: bytes
    is_final: bool = False
    duration_ms: Count | None = None


class SessionClose(_Message, tag="session_close"):
    session_id: Name


class RoomJoin(_Message, tag="room_join"):
    room: Name
    listen_lang: Name
    session_id: Name | None = None
    """An open session of this connection whose utterances are spoken into the room."""


class RoomLeave(_Message, tag="room_leave"):
    room: Name


ClientInbound = Submit | Cancel | SessionOpen | Audio | SessionClose | RoomJoin | RoomLeave

# --- hub -> client ----------------------------------------------------------------


class Accepted(_Message, tag="accepted", kw_only=True):
    request_id: str
    job_id: str
    node_id: str = ""
    """The node of the current attempt; absent while the job waits (`queued`)."""
    duplicate: bool
    queued: bool = False
    """The job waits for a free slot; omitted when false."""


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
"""What the job path sends a client (and carries to another hub's client)."""


# --- live sessions (hub -> client) ---------------------------------------------------


class SessionOpened(_Message, tag="session_opened"):
    session_id: str
    resumed: bool
    next_index: int
    last_seq: int


class UtteranceCut(_Message, tag="utterance_cut"):
    session_id: str
    index: int
    job_id: str | None
    """None when the utterance's job was refused (its `utterance_result` says why)."""
    cut: str
    duration_ms: int | None
    size: int = msgspec.field(name="bytes")
    last_seq: int = -1
    """The last audio chunk in this utterance: a client need not keep chunks up to it
    for a resume (an addition to the v1.2 contract)."""


class Partial(_Message, tag="partial"):
    session_id: str
    index: int
    data: Any = None


class UtteranceResult(_Message, tag="utterance_result", kw_only=True):
    session_id: str
    index: int
    job_id: str | None
    node_id: str | None
    ok: bool
    output: Any = None
    error: ErrorInfo | None = None
    src_lang: str
    tgt_lang: str


class SessionClosed(_Message, tag="session_closed"):
    session_id: str
    reason: str
    utterances: int


class RoomJoined(_Message, tag="room_joined"):
    room: str
    members: int
    langs: list[str]


class RoomResult(_Message, tag="room_result", kw_only=True):
    room: str
    speaker: str
    """The speaking session's id."""
    index: int
    lang: str
    """The listen language this result is in."""
    ok: bool
    output: Any = None
    error: ErrorInfo | None = None


LiveOutbound = (
    SessionOpened | UtteranceCut | Partial | UtteranceResult | SessionClosed | RoomJoined
    | RoomResult
)
ClientFrames = Accepted | Progress | Result | Rejected | Error | LiveOutbound
"""Everything a client may receive."""

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


# --- ingress limits (protocol v1.1, "Limits") ------------------------------------------

MAX_DEPTH: Final = 64
"""Nesting levels allowed in a message; the message object itself is level 1."""
DEFAULT_MAX_CAPABILITY_ENTRIES: Final = 1024
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
"""MessagePack's integer range (JSON has none): any integer outside it is refused."""


_FAST_ITEMS: Final = 64
"""A list or map this long or longer is first checked by `_scalars_fit`."""
_SCALAR_KINDS: Final = frozenset({str, bool, int, float, type(None)})
_NUMBER_KINDS: Final = frozenset({bool, int, float})
_STR_ONLY: Final = frozenset({str})
_msgpack_encode = msgspec.msgpack.Encoder().encode


class _Unfit(Exception):
    """A free-form value the hub could not deliver to every peer (found by `_check`)."""


def _scalars_fit(value: list[Any] | dict[Any, Any]) -> bool:
    """True when every item of `value` (a list, or a map's values; its keys strings) is
    a scalar both encodings carry, shown by passes in C: ~10 ns an item where
    `_check`'s loop takes 50-200 (an 850 KB list of integers took the hub ~40 ms, in
    one go). False when that is not shown (a container among them, an unfit value):
    `_check`'s loop then decides, so this never refuses anything itself."""
    if type(value) is dict:
        if set(map(type, value)) != _STR_ONLY:
            return False
        items: Any = value.values()
    else:
        items = value
    kinds = set(map(type, items))
    if not kinds <= _SCALAR_KINDS:
        return False
    numbers_only = kinds <= _NUMBER_KINDS
    if float in kinds and not numbers_only:
        return False  # floats among strings: sorting them out costs what the loop does
    if int in kinds:
        try:
            _msgpack_encode(value)  # refuses exactly the integers outside MessagePack's range
        except OverflowError:
            return False
    if float in kinds:
        try:  # a NaN or an infinity makes the exact sum one (or raises: inf + -inf);
            total = math.fsum(items)  # finite ones may overflow it
        except (OverflowError, ValueError):
            return False
        return total - total == 0.0
    return True


def _check(value: Any, depth: int) -> None:
    """Raise `_Unfit` unless `value` (a container in it is level `depth`) is a value that both
    encodings carry unchanged and nests at most `MAX_DEPTH` levels. The fast path, hence
    the scalar tests inlined in the loops: the failure's reason and place are found
    afterwards by `_locate`."""
    kind = type(value)
    if kind is dict:
        if depth > MAX_DEPTH:
            raise _Unfit
        if len(value) >= _FAST_ITEMS and _scalars_fit(value):
            return
        for key, item in value.items():
            if type(key) is not str:
                raise _Unfit
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if _INT_MIN <= item <= _INT_MAX:
                    continue
                raise _Unfit
            if kind is float:
                if item - item == 0.0:  # not NaN nor infinite (math.isfinite, without a call)
                    continue
                raise _Unfit
            _check(item, depth + 1)
        return
    if kind is list:
        if depth > MAX_DEPTH:
            raise _Unfit
        if len(value) >= _FAST_ITEMS and _scalars_fit(value):
            return
        for item in value:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if _INT_MIN <= item <= _INT_MAX:
                    continue
                raise _Unfit
            if kind is float:
                if item - item == 0.0:
                    continue
                raise _Unfit
            _check(item, depth + 1)
        return
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return
        raise _Unfit
    if kind is float:
        if value - value == 0.0:
            return
        raise _Unfit
    if kind is bytes:
        return  # MessagePack `bin`, base64 text to a JSON peer (protocol-v1.2)
    raise _Unfit  # a MessagePack extension type, a timestamp, ...


def _locate(value: Any, depth: int, path: str) -> tuple[str, str] | None:
    """Where and why `_check` refused `value`: (path, reason), None if it did not."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return None
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return path, "an integer outside -2**63..2**64-1: MessagePack cannot carry it"
    if kind is float:
        if math.isfinite(value):
            return None
        return path, f"a non-finite number ({value}): JSON cannot carry it"
    if depth > MAX_DEPTH and kind in (dict, list):
        return path, f"nested deeper than {MAX_DEPTH} levels"
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                key_type = type(key).__name__
                return path, f"a map key that is not a string ({key_type}): JSON cannot carry it"
            found = _locate(item, depth + 1, f"{path}.{key}")
            if found is not None:
                return found
        return None
    if kind is list:
        for index, item in enumerate(value):
            found = _locate(item, depth + 1, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if kind is bytes:
        return None
    if kind is msgspec.msgpack.Ext:
        return path, f"a MessagePack extension type ({value.code}): a JSON peer cannot receive it"
    return path, f"a MessagePack extension type ({kind.__name__}): a JSON peer cannot receive it"


class IngressRules:
    """The hub's checks on every decoded inbound message, past msgspec's own.

    - Free-form values (`payload`, `data`, `output`) nest at most `MAX_DEPTH`
      levels and hold only what both encodings carry: strings, finite numbers
      (integers in MessagePack's range), booleans, null, bytes (MessagePack
      `bin`; base64 text to a JSON peer, which then sees a string), lists and
      maps with string keys. So whatever the hub accepts from a MessagePack
      peer it can deliver to a JSON peer and the other way round.
    - A node's capability lists hold at most `max_capability_entries` entries
      together (`register`, `capabilities`).

    `checks` maps each message type that has a rule to its check, so that a
    message without one (`job_accept`, `heartbeat`...) costs one dict lookup;
    an ordinary payload (a flat map of strings) costs a few hundred nanoseconds
    (`benchmarks/ingress.py`).
    """

    __slots__ = ("checks", "max_capability_entries")

    def __init__(self, union: Any, *, max_capability_entries: int | None = None) -> None:
        self.max_capability_entries = max_capability_entries
        self.checks: dict[type, Callable[[Any], None]] = {}
        for cls in union.__args__:
            names = [f.name for f in msgspec.structs.fields(cls) if f.type is Any]
            if len(names) == 1:
                self.checks[cls] = _free_field_check(names[0])
            elif names:
                self.checks[cls] = _free_fields_check([_free_field_check(n) for n in names])
        if max_capability_entries is not None:
            for cls in (Register, CapabilitiesUpdate):
                if cls in union.__args__:
                    self.checks[cls] = self._check_capabilities

    def check(self, message: Any) -> None:
        """Raise `ProtocolError` `invalid_field` when `message` breaks a rule."""
        check = self.checks.get(type(message))
        if check is not None:
            check(message)

    def _check_capabilities(self, message: Register | CapabilitiesUpdate) -> None:
        caps = message.capabilities
        entries = (
            len(caps.language_pairs) + len(caps.asr_languages) + len(caps.tts_languages)
            + len(caps.features)
        )
        limit = self.max_capability_entries
        if limit is not None and entries > limit:
            raise ProtocolError(
                error_codes.INVALID_FIELD,
                f"{entries} capability entries (language_pairs + asr_languages + "
                f"tts_languages + features); at most {limit} (max_capability_entries)",
                path="$.capabilities",
            )


def _free_field_check(name: str) -> Callable[[Any], None]:
    """The check of one free-form field of a message type."""
    path = f"$.{name}"

    def check(message: Any) -> None:
        value = getattr(message, name)
        if type(value) is str or value is None:
            return
        try:
            _check(value, 2)  # the message object is level 1
        except _Unfit:
            where, reason = _locate(value, 2, path) or (path, "unfit")
            raise ProtocolError(
                error_codes.INVALID_FIELD, reason, path=where,
                job_id=getattr(message, "job_id", None),
            ) from None

    return check


def _free_fields_check(checks: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    def check(message: Any) -> None:
        for one in checks:
            one(message)

    return check


def _too_deep() -> ProtocolError:
    return ProtocolError(
        error_codes.INVALID_FIELD, f"nested deeper than {MAX_DEPTH} levels", path="$"
    )


class Codec(Generic[T]):
    """Encode outbound messages and decode inbound ones for one endpoint.

    JSON and MessagePack share field names; `binary` selects MessagePack.
    Encoders and decoders are built once and reused (msgspec's fast path).
    """

    __slots__ = ("_checks", "_decode", "_encode", "binary")

    def __init__(
        self, inbound: Any, *, binary: bool = False, rules: IngressRules | None = None
    ) -> None:
        self.binary = binary
        self._checks = None if rules is None else rules.checks
        if binary:
            self._decode: Any = msgspec.msgpack.Decoder(inbound).decode
            self._encode: Any = msgspec.msgpack.Encoder().encode
        else:
            self._decode = msgspec.json.Decoder(inbound).decode
            self._encode = msgspec.json.Encoder().encode

    def decode(self, frame: str | bytes | bytearray | memoryview) -> T:
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
        except RecursionError:  # msgspec's own limit (~1,000 levels), far past ours
            raise _too_deep() from None
        if self._checks is not None:
            check = self._checks.get(type(result))
            if check is not None:
                check(result)
        return result

    def encode(self, message: msgspec.Struct) -> bytes:
        return self._encode(message)  # type: ignore[no-any-return]

    def encode_frame(self, message: msgspec.Struct) -> str | bytes:
        """What to hand to the WebSocket: text for JSON, bytes for MessagePack."""
        data: bytes = self._encode(message)
        return data if self.binary else data.decode()


def node_codec(
    *, binary: bool = False, max_capability_entries: int = DEFAULT_MAX_CAPABILITY_ENTRIES
) -> Codec[NodeInbound]:
    """Hub side of `/v1/node`: decodes node -> hub messages, with the ingress rules."""
    rules = IngressRules(NodeInbound, max_capability_entries=max_capability_entries)
    return Codec(NodeInbound, binary=binary, rules=rules)


def client_codec(*, binary: bool = False) -> Codec[ClientInbound]:
    """Hub side of `/v1/client`: decodes client -> hub messages, with the ingress rules."""
    return Codec(ClientInbound, binary=binary, rules=IngressRules(ClientInbound))


def agent_codec(*, binary: bool = False) -> Codec[NodeOutbound]:
    """Node-agent side of `/v1/node`: decodes hub -> node messages."""
    return Codec(NodeOutbound, binary=binary)


def submitter_codec(*, binary: bool = False) -> Codec[ClientFrames]:
    """Client side of `/v1/client`: decodes hub -> client messages."""
    return Codec(ClientFrames, binary=binary)

"""The session WebSocket protocol, version 1 (documented in docs/serve.md).

Client -> server
    text    one JSON object with a ``type``: ``audio.format``, ``prompt``, ``interrupt``, ``end``,
            ``ping``, ``agent.say`` (parsed by `parse_client_text`).
    binary  ``[stream u8][payload]``: stream 1 = user microphone, 2 = agent speech; the payload is
            one frame in the stream's codec (PCM16 little-endian, or one Opus packet).

Server -> client
    text    JSON events: ``ready``, ``state``, ``chunk``, ``interrupted``, ``error``, ``pong``,
            ``end`` (built by `event`).
    binary  `MEDIA_HEADER` (16 bytes) + payload: kind 0x10 = one JPEG video frame, kind 0x20 = the
            agent audio of one chunk (PCM16 mono at the model's sample rate), to play with the
            chunk's first frame.
"""

from __future__ import annotations

import json
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
STREAM_USER = 1
STREAM_AGENT = 2
STREAMS = {STREAM_USER: "user", STREAM_AGENT: "agent"}
KIND_JPEG = 0x10
KIND_AGENT_AUDIO = 0x20
FLAG_CHUNK_START = 0x01
MEDIA_HEADER = struct.Struct("<BBHId")
"""kind u8, flags u8, frame-in-chunk u16, chunk index u32, pts f64 (seconds of stream time)."""
STATES = ("warmup", "idle", "listening", "responding")


class ProtocolError(ValueError):
    """A client message that breaks the protocol; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AudioFormat(_Message):
    """Declares the codec of one binary audio stream (default: PCM16, 16 kHz, mono)."""

    type: Literal["audio.format"]
    stream: Literal["user", "agent"]
    codec: Literal["pcm16", "opus"] = "pcm16"
    sample_rate: int = Field(16000, description="Hz; 8000..96000 (Opus: 8/12/16/24/48 kHz).")
    channels: int = Field(1, ge=1, le=2, description="Interleaved channels, downmixed to mono.")


class Prompt(_Message):
    """New text prompt; applies from the next chunk boundary."""

    type: Literal["prompt"]
    text: str


class Interrupt(_Message):
    """Drop the agent speech not yet played; the character stops responding."""

    type: Literal["interrupt"]


class End(_Message):
    """End the session."""

    type: Literal["end"]


class Ping(_Message):
    """Answered by ``pong`` with the same id."""

    type: Literal["ping"]
    id: int | str | None = None


class AgentSay(_Message):
    """Built-in demo agent only: speak ``text`` with the character's synthetic voice."""

    type: Literal["agent.say"]
    text: str


ClientMessage = Annotated[
    AudioFormat | Prompt | Interrupt | End | Ping | AgentSay, Field(discriminator="type")
]
_CLIENT = TypeAdapter(ClientMessage)


def parse_client_text(text: str, max_chars: int) -> BaseModel:
    """Parse one client JSON message; raises `ProtocolError` saying what is wrong."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_json", "text messages must be one JSON object") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("bad_message", 'a message must be a JSON object with a "type"')
    try:
        msg = _CLIENT.validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError(
            "bad_message", f"{data['type']!r}: {where or 'message'}: {first.get('msg')}"
        ) from None
    text_field = getattr(msg, "text", None)
    if text_field is not None and len(text_field) > max_chars:
        raise ProtocolError("too_long", f"text is longer than {max_chars} characters")
    return msg


def split_binary(data: bytes) -> tuple[str, bytes]:
    """``[stream u8][payload]`` -> (``user`` | ``agent``, payload)."""
    if len(data) < 2:
        raise ProtocolError("bad_frame", "binary frames are [stream byte][payload]")
    stream = STREAMS.get(data[0])
    if stream is None:
        raise ProtocolError(
            "bad_stream", f"stream byte must be 1 (user) or 2 (agent), not {data[0]}"
        )
    return stream, data[1:]


def media_frame(kind: int, chunk: int, frame: int, pts: float, payload: bytes) -> bytes:
    """One server binary message: header + payload."""
    flags = FLAG_CHUNK_START if frame == 0 else 0
    return MEDIA_HEADER.pack(kind, flags, frame, chunk, pts) + payload


def parse_media_frame(data: bytes) -> tuple[int, int, int, float, bytes]:
    """Inverse of `media_frame`: (kind, chunk, frame, pts seconds, payload)."""
    kind, _flags, frame, chunk, pts = MEDIA_HEADER.unpack_from(data)
    return kind, chunk, frame, pts, data[MEDIA_HEADER.size :]


def event(kind: str, **fields: Any) -> str:
    """One server JSON event."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))

"""`LPMClient`: an asyncio client of one `lpm serve` session (protocol version 1)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import cv2
import numpy as np

from lpm.serve.protocol import KIND_AGENT_AUDIO, KIND_JPEG, PROTOCOL_VERSION, parse_media_frame


@dataclass
class VideoFrame:
    rgb: np.ndarray
    """(H, W, 3) uint8."""
    chunk: int
    frame: int
    pts: float
    """Stream time (seconds)."""


@dataclass
class AgentAudio:
    pcm16: bytes
    """Mono little-endian PCM16 of one chunk, to play with that chunk's first frame."""
    sample_rate: int
    chunk: int
    pts: float


class LPMClient:
    """Create a session over HTTP, then talk to it over its WebSocket."""

    def __init__(self, base_url: str, *, token: str | None = None) -> None:
        self.base_url, self.token = base_url.rstrip("/"), token
        self.ws = None
        self.info: dict = {}
        self._formats: dict[str, int] = {}

    async def connect(self, character: str | None = None, persona: str = "", **body) -> dict:
        """Create a session and attach to it; returns the ``ready`` event."""
        import websockets

        payload = {"character": character, "persona": persona, **body}
        self.info = await asyncio.to_thread(self._post, "/v1/sessions", payload)
        url = self.base_url.replace("http", "ws", 1) + self.info["websocket"]
        self.ws = await websockets.connect(url, max_size=2**22)
        ready = json.loads(await self.ws.recv())
        if ready.get("protocol") != PROTOCOL_VERSION:
            raise RuntimeError(f"server speaks protocol {ready.get('protocol')}, not 1")
        return ready

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    async def _format(self, stream: str, sample_rate: int, channels: int) -> None:
        if self._formats.get(stream) != (sample_rate, channels):
            self._formats[stream] = (sample_rate, channels)
            await self.send_json(
                type="audio.format",
                stream=stream,
                codec="pcm16",
                sample_rate=sample_rate,
                channels=channels,
            )

    async def send_json(self, **msg) -> None:
        await self.ws.send(json.dumps(msg))

    async def send_audio(
        self, stream: str, pcm16: bytes, sample_rate: int, channels: int = 1
    ) -> None:
        """PCM16 audio of ``user`` (microphone) or ``agent`` (TTS) at any common rate."""
        await self._format(stream, sample_rate, channels)
        step = 32000  # stay well under the server's message limit
        for i in range(0, len(pcm16), step):
            await self.ws.send(bytes([1 if stream == "user" else 2]) + pcm16[i : i + step])

    async def interrupt(self) -> None:
        await self.send_json(type="interrupt")

    async def end(self) -> None:
        if self.ws is not None:
            await self.send_json(type="end")
            await self.ws.close()

    async def receive(self) -> AsyncIterator[VideoFrame | AgentAudio | dict]:
        """Frames, agent audio and JSON events, in arrival order, until the socket closes."""
        import websockets

        try:
            async for msg in self.ws:
                if isinstance(msg, str):
                    yield json.loads(msg)
                    continue
                kind, chunk, frame, pts, payload = parse_media_frame(msg)
                if kind == KIND_JPEG:
                    bgr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
                    yield VideoFrame(bgr[:, :, ::-1].copy(), chunk, frame, pts)
                elif kind == KIND_AGENT_AUDIO:
                    yield AgentAudio(payload, self.info.get("sample_rate", 16000), chunk, pts)
        except websockets.ConnectionClosed:
            return

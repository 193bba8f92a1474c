"""`LPMVideoProcessor`: `lpm serve` as the video output of a Pipecat pipeline.

Place it after the TTS service and before the output transport::

    pipeline = Pipeline([
        transport.input(), stt, context_aggregator.user(), llm, tts,
        LPMVideoProcessor("http://127.0.0.1:8000", character="stage-090000"),
        transport.output(), context_aggregator.assistant(),
    ])

Frames it consumes: ``InputAudioRawFrame`` (user mic -> the session's listen stream, and passed
on), ``TTSAudioRawFrame`` (agent speech -> the speak stream; *not* passed on: the server returns
it in sync with the video), ``InterruptionFrame`` (barge-in -> ``interrupt``), ``EndFrame`` /
``CancelFrame`` (end the session). Frames it produces: ``OutputImageRawFrame`` (RGB, 24 fps) and
``OutputAudioRawFrame`` (the agent audio of each chunk, aligned with its first frame).

`PipecatBridge` holds the mapping and is independent of Pipecat's runtime; `LPMVideoProcessor`
is the thin FrameProcessor around it. Requires the ``pipecat`` extra (``pipecat-ai``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from lpm.serve.integrations.client import AgentAudio, LPMClient, VideoFrame

try:  # optional dependency
    from pipecat.frames import frames as pf
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError:  # pragma: no cover - exercised when pipecat-ai is absent
    pf = None
    FrameProcessor = object  # type: ignore[assignment,misc]
    FrameDirection = None


def _require_pipecat() -> None:
    if pf is None:
        raise ImportError("LPMVideoProcessor needs Pipecat: pip install 'lpm[pipecat]'")


class PipecatBridge:
    """Pipecat frames <-> the lpm session protocol (``frames`` is the Pipecat frames module)."""

    def __init__(self, client: LPMClient, frames: Any, emit: Callable[[Any], Awaitable[None]]):
        self.client, self.f, self.emit = client, frames, emit
        self.pump: asyncio.Task | None = None

    async def start(self, character: str | None, persona: str) -> None:
        await self.client.connect(character, persona)
        self.pump = asyncio.create_task(self._pump())

    async def on_frame(self, frame: Any) -> bool:
        """Forward ``frame`` to lpm when it concerns it; True when it must not travel on."""
        f = self.f
        if isinstance(frame, f.TTSAudioRawFrame):
            await self.client.send_audio(
                "agent", frame.audio, frame.sample_rate, frame.num_channels
            )
            return True
        if isinstance(frame, f.InputAudioRawFrame):
            await self.client.send_audio("user", frame.audio, frame.sample_rate, frame.num_channels)
        elif isinstance(frame, getattr(f, "InterruptionFrame", ())):
            await self.client.interrupt()
        elif isinstance(frame, (f.EndFrame, f.CancelFrame)):
            await self.stop()
        return False

    async def _pump(self) -> None:
        async for item in self.client.receive():
            if isinstance(item, VideoFrame):
                h, w = item.rgb.shape[:2]
                await self.emit(self.f.OutputImageRawFrame(item.rgb.tobytes(), (w, h), "RGB"))
            elif isinstance(item, AgentAudio):
                await self.emit(self.f.OutputAudioRawFrame(item.pcm16, item.sample_rate, 1))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.end()
        if self.pump is not None:
            self.pump.cancel()


class LPMVideoProcessor(FrameProcessor):
    """A Pipecat processor that turns the pipeline's audio into an LPM character video."""

    def __init__(
        self,
        base_url: str,
        *,
        character: str | None = "stage-090000",
        persona: str = "",
        token: str | None = None,
        **kwargs,
    ) -> None:
        _require_pipecat()
        super().__init__(**kwargs)
        self._character, self._persona = character, persona
        self.bridge = PipecatBridge(
            LPMClient(base_url, token=token), pf, lambda fr: self.push_frame(fr)
        )

    async def process_frame(self, frame, direction) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, pf.StartFrame):
            await self.bridge.start(self._character, self._persona)
        consumed = await self.bridge.on_frame(frame)
        if not consumed:
            await self.push_frame(frame, direction)

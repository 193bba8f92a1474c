"""The Pipecat adapter's protocol side, against a live server (real Pipecat frame classes)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lpm.serve.integrations.client import LPMClient
from lpm.serve.integrations.pipecat import PipecatBridge
from tests.serve.conftest import RATE, pcm16, speech

pf = pytest.importorskip("pipecat.frames.frames")


def test_pipecat_bridge_round_trip(server):
    async def run() -> tuple[list, list]:
        out: list = []

        async def emit(frame) -> None:
            out.append(frame)

        bridge = PipecatBridge(LPMClient(server.url), pf, emit)
        await bridge.start("stage-090002", "A patient teacher.")
        mic = pcm16(speech())
        user = pf.InputAudioRawFrame(audio=mic, sample_rate=RATE, num_channels=1)
        assert await bridge.on_frame(user) is False  # user audio travels on
        tts = pf.TTSAudioRawFrame(
            audio=pcm16(speech("Happy to help.")), sample_rate=RATE, num_channels=1
        )
        assert await bridge.on_frame(tts) is True  # agent audio comes back in sync instead
        for _ in range(80):
            await asyncio.sleep(0.1)
            if any(isinstance(f, pf.OutputAudioRawFrame) for f in out):
                break
        assert await bridge.on_frame(pf.InterruptionFrame()) is False
        await bridge.on_frame(pf.EndFrame())
        return out, []

    out, _ = asyncio.run(run())
    images = [f for f in out if isinstance(f, pf.OutputImageRawFrame)]
    audio = [f for f in out if isinstance(f, pf.OutputAudioRawFrame)]
    assert len(images) >= 24 and images[0].format == "RGB"
    w, h = images[0].size
    assert np.frombuffer(images[0].image, np.uint8).size == w * h * 3
    assert audio and audio[0].sample_rate == RATE

"""The session engine over the WebSocket: listening, responding, barge-in, controls, Opus."""

from __future__ import annotations

import av
import numpy as np
import pytest

from lpm.serve.audio import opus_available
from tests.serve.conftest import RATE, Client, new_session, speech


def is_state(name):
    return lambda e: e["type"] == "state" and e["state"] == name


def test_listen_respond_and_barge_in(server):
    c = Client(server, new_session(server))
    ready = c.until(lambda e: e["type"] == "ready")
    assert ready["protocol"] == 1 and ready["sample_rate"] == RATE
    c.until(lambda e: e["type"] == "chunk")  # warm-up over, video running
    c.send_audio(1, speech())
    listening = c.until(is_state("listening"))
    chunk = c.until(lambda e: e["type"] == "chunk" and e["chunk"] == listening["chunk"])
    assert chunk["latency"]["input_to_frame_s"] < 2.5
    c.send_audio(2, np.concatenate([speech("I am the agent and I talk for a while now.")] * 3))
    c.until(is_state("responding"))
    assert c.until(lambda e: e["type"] == "chunk")["state"] == "responding"
    c.send_audio(1, speech("wait, wait, let me say something"))
    c.until(lambda e: e["type"] == "interrupted" and e["reason"] == "barge_in")
    c.until(is_state("listening"))
    assert c.audio_chunks >= 1
    frames = [f for f in c.frames if f[0] == chunk["chunk"]]
    assert [f[1] for f in frames] == list(range(24))  # whole chunks, in order
    assert frames[1][2] - frames[0][2] == pytest.approx(1 / 24)
    c.close()


def test_controls_ping_prompt_interrupt_end(server):
    c = Client(server, new_session(server))
    c.send_json(type="ping", id=7)
    assert c.until(lambda e: e["type"] == "pong")["id"] == 7
    c.send_json(type="prompt", text="The character smiles warmly.")
    c.send_audio(2, speech("This will be interrupted by the client."))
    c.send_json(type="interrupt")
    ev = c.until(lambda e: e["type"] == "interrupted")
    assert ev["reason"] == "client" and ev["dropped_s"] > 0
    c.send_json(type="agent.say", text="hello")
    assert c.until(lambda e: e["type"] == "error")["code"] == "no_demo_agent"
    c.send_json(type="end")
    assert c.until(lambda e: e["type"] == "end")["reason"] == "client_end"
    c.close()


@pytest.mark.skipif(not opus_available(), reason="PyAV without an Opus decoder")
def test_opus_microphone_at_48k(server):
    c = Client(server, new_session(server))
    c.send_json(type="audio.format", stream="user", codec="opus", sample_rate=48000)
    c.until(lambda e: e["type"] == "audio.format")
    talk = speech()
    up = av.AudioResampler(format="s16", layout="mono", rate=48000)
    frame = av.AudioFrame.from_ndarray(
        (talk * 32767).astype("<i2")[None], format="s16", layout="mono"
    )
    frame.sample_rate = RATE
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    packets = [bytes(p) for f in up.resample(frame) for p in enc.encode(f)]
    packets += [bytes(p) for p in enc.encode(None)]
    for p in packets:
        c.ws.send(b"\x01" + p)
    c.until(is_state("listening"))
    c.close()


def test_demo_agent_answers_a_finished_turn(server):
    c = Client(server, new_session(server, demo_agent=True))
    c.until(lambda e: e["type"] == "chunk")
    c.send_audio(1, speech())
    c.until(is_state("listening"))
    c.until(is_state("responding"), timeout=20)
    c.close()

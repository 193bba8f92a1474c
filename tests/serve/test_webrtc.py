"""The WebRTC transport: an aiortc client peer on 127.0.0.1 against a live server.

No STUN/TURN server and no interface but loopback is used: both peers are built with
``iceServers=[]`` and gather host candidates on 127.0.0.1 only (`gathering_on`).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import re
import shutil
import time

import numpy as np
import pytest

from tests.serve.conftest import RATE, http, new_session, pcm16, speech, start_server

pytest.importorskip("aiortc")

import av  # noqa: E402
from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription  # noqa: E402

from lpm.serve.webrtc import (  # noqa: E402
    candidate_addresses,
    gathering_on,
    keep_loopback_candidates,
    peer_connection,
)

LOOPBACK = ("127.0.0.1",)


class Microphone(MediaStreamTrack):
    """A real-time 16-kHz microphone: silence until `say` queues speech."""

    kind = "audio"
    FRAME = RATE // 50

    def __init__(self) -> None:
        super().__init__()
        self.pending = np.zeros(0, np.float32)
        self.sent = 0
        self.start: float | None = None
        self.spoke_at: float | None = None

    def say(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate((self.pending, samples))

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.sent / RATE - time.monotonic()))
        out = np.zeros(self.FRAME, np.float32)
        take = self.pending[: self.FRAME]
        if len(take) and self.spoke_at is None:
            self.spoke_at = time.monotonic()
        out[: len(take)] = take
        self.pending = self.pending[len(take) :]
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm16(out), np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = RATE, self.sent
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += self.FRAME
        return frame


class Peer:
    """The client side: receives video, agent audio and events; sends microphone audio."""

    def __init__(self, *, video_codecs: tuple[str, ...] | None = None) -> None:
        self.pc = peer_connection()
        video = self.pc.addTransceiver("video", direction="recvonly")
        if video_codecs is not None:
            caps = RTCRtpSender.getCapabilities("video").codecs
            video.setCodecPreferences([c for c in caps if c.mimeType in video_codecs])
        self.mic = Microphone()
        self.pc.addTransceiver(self.mic, direction="sendrecv")
        self.channel = self.pc.createDataChannel("lpm")
        self.events: list[dict] = []
        self.frames: list[tuple[float, int, int]] = []
        self.audio: list[tuple[float, float]] = []
        self.tasks: list[asyncio.Task] = []
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, message) -> None:
        if isinstance(message, str):
            self.events.append({**json.loads(message), "at": time.monotonic()})

    def _on_track(self, track) -> None:
        self.tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                self.frames.append((now, frame.width, frame.height))
            else:
                x = frame.to_ndarray().astype(np.float32) / 32768
                self.audio.append((now, float(np.sqrt(np.mean(x**2)))))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, url: str, session: str) -> dict:
        with gathering_on(LOOPBACK):
            sdp = await self.offer()
        status, answer = await asyncio.to_thread(
            http, "POST", f"{url}/v1/sessions/{session}/webrtc/offer", {"sdp": sdp}
        )
        assert status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return answer

    async def until(self, predicate, timeout: float = 15.0) -> dict:
        end, seen = time.monotonic() + timeout, 0
        while time.monotonic() < end:
            for ev in self.events[seen:]:
                if predicate(ev):
                    return ev
            seen = len(self.events)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout} s; got {self.events[-8:]}")

    def send(self, **msg) -> None:
        self.channel.send(json.dumps(msg))

    async def close(self) -> None:
        await self.pc.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def ice_addresses(caplog) -> set[str]:
    """Every address in an ICE candidate pair either peer checked (aioice logs each one)."""
    found: set[str] = set()
    for record in caplog.records:
        if record.name == "aioice.ice" and "CandidatePair" in record.getMessage():
            found.update(re.findall(r"\('([^']+)', \d+\)", record.getMessage()))
    return found


def is_state(name):
    return lambda e: e["type"] == "state" and e["state"] == name


def server_tasks(srv) -> int:
    """Tasks alive on the server's event loop."""
    loop = srv.server.servers[0].get_loop()

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), loop).result(timeout=5)


async def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.1)
    return False


def test_webrtc_session_video_audio_microphone_and_teardown(server, caplog):
    caplog.set_level(logging.INFO, logger="aioice.ice")
    baseline = server_tasks(server)
    created = new_session(server)
    figures: dict[str, float] = {}

    async def run() -> Peer:
        peer = Peer()
        t0 = time.monotonic()
        answer = await peer.connect(server.url, created["id"])
        figures["answer_s"] = time.monotonic() - t0
        assert answer["video_codec"] == "h264" and answer["audio_codec"] == "opus"
        assert set(candidate_addresses(answer["sdp"])) == {"127.0.0.1"}
        msids = [ln.split()[0] for ln in answer["sdp"].splitlines() if ln.startswith("a=msid:")]
        assert len(msids) == 2 and len(set(msids)) == 1  # one stream: receivers lip-sync it
        ready = await peer.until(lambda e: e["type"] == "ready")
        figures["ready_s"] = ready["at"] - t0
        assert ready["transport"] == "webrtc" and ready["video_codec"] == "h264"
        await peer.until(lambda e: e["type"] == "chunk")
        assert await wait_for(lambda: bool(peer.frames), 5), "no video frame arrived"
        figures["first_frame_s"] = peer.frames[0][0] - t0
        # the microphone speaks: the session listens
        peer.mic.say(speech())
        listening = await peer.until(is_state("listening"))
        figures["mic_to_listening_s"] = listening["at"] - peer.mic.spoke_at
        # agent speech over the data channel, exactly as on the WebSocket: played in sync
        agent = np.concatenate([speech("I am the agent and I talk for a while now.")] * 2)
        for i in range(0, len(agent), RATE // 10):
            peer.channel.send(b"\x02" + pcm16(agent[i : i + RATE // 10]))
        responding = await peer.until(is_state("responding"))
        await asyncio.sleep(1.5)
        loud = [at for at, rms in peer.audio if rms > 0.01]
        assert loud, "no agent audio arrived on the audio track"
        figures["responding_to_audio_s"] = loud[0] - responding["at"]
        # controls on the data channel
        peer.send(type="ping", id=3)
        assert (await peer.until(lambda e: e["type"] == "pong"))["id"] == 3
        await peer.close()  # the client goes away: the session ends
        gone = await wait_for(
            lambda: http("GET", f"{server.url}/v1/sessions/{created['id']}")[0] == 404, 10
        )
        assert gone, "the session outlived its peer connection"
        return peer

    peer = asyncio.run(run())
    window = [at for at, _, _ in peer.frames if at > peer.frames[0][0] + 1.0]
    figures["fps"] = (len(window) - 1) / (window[-1] - window[0])
    assert {(w, h) for _, w, h in peer.frames} == {(32, 32)}
    assert figures["fps"] > 18
    assert figures["responding_to_audio_s"] < 1.0
    for _ in range(50):  # every transport task and aiortc task is gone
        if not server.app.state.peers and server_tasks(server) <= baseline:
            break
        time.sleep(0.1)
    assert not server.app.state.peers
    assert server_tasks(server) <= baseline
    _, metrics = http("GET", server.url + "/metrics")
    assert 'lpm_webrtc_offers_total{result="answered"} 1' in metrics
    assert ice_addresses(caplog) == {"127.0.0.1"}
    print("webrtc figures:", json.dumps({k: round(v, 3) for k, v in figures.items()}))


def test_webrtc_vp8_fallback_and_server_side_end(server):
    created = new_session(server)

    async def run() -> Peer:
        peer = Peer(video_codecs=("video/VP8",))
        answer = await peer.connect(server.url, created["id"])
        assert answer["video_codec"] == "vp8"
        await peer.until(lambda e: e["type"] == "chunk")
        assert await wait_for(lambda: bool(peer.frames), 5), "no VP8 frame arrived"
        assert peer.frames[0][1:] == (32, 32)
        assert http("DELETE", f"{server.url}/v1/sessions/{created['id']}")[0] == 204
        end = await peer.until(lambda e: e["type"] == "end")
        closed = await wait_for(lambda: peer.pc.connectionState in ("closed", "failed"), 10)
        await peer.close()
        assert closed, "the server did not close the peer connection"
        return end

    assert asyncio.run(run())["reason"] in ("closed", "deleted")
    assert not server.app.state.peers
    assert server.app.state.manager.get(created["id"]) is None


def test_bad_offers_are_refused_with_a_reason(server):
    created = new_session(server)
    url = f"{server.url}/v1/sessions/{created['id']}/webrtc/offer"
    status, body = http("POST", url, {"sdp": "hello, not SDP"})
    assert status == 400 and "video" in body["detail"]
    status, body = http("POST", url, {"sdp": "v=0\r\nm=video"})
    assert status == 400 and body["detail"].startswith("bad SDP offer")

    async def offers() -> tuple[str, str]:
        peer = Peer()
        with gathering_on(LOOPBACK):
            sdp = await peer.offer()
        await peer.close()
        public = sdp.replace("127.0.0.1", "192.0.2.7")  # a TEST-NET address: never contacted
        audio_only = sdp.replace("m=video", "m=text")
        return public, audio_only

    public, no_video = asyncio.run(offers())
    status, body = http("POST", url, {"sdp": public})
    assert status == 400 and "loopback" in body["detail"]
    status, body = http("POST", url, {"sdp": no_video})
    assert status == 400 and "video" in body["detail"]
    assert http("POST", url, {"sdp": "x", "type": "answer"})[0] == 422
    assert http("POST", url.replace(created["id"], "0" * 16), {"sdp": "x"})[0] == 404
    status, info = http("GET", f"{server.url}/v1/sessions/{created['id']}")
    assert status == 200 and info["attached"] is False  # a refused offer leaves it free
    _, metrics = http("GET", server.url + "/metrics")
    assert 'lpm_webrtc_offers_total{result="bad_offer"} 4' in metrics
    status, schema = http("GET", server.url + "/openapi.json")
    assert "/v1/sessions/{session_id}/webrtc/offer" in schema["paths"]


def test_answer_candidates_are_loopback_only_and_one_transport_per_session(server):
    created = new_session(server)

    async def run() -> tuple[str, str, int]:
        peer = Peer()
        with gathering_on(LOOPBACK):
            offer = await peer.offer()
        status, answer = await asyncio.to_thread(
            http, "POST", f"{server.url}/v1/sessions/{created['id']}/webrtc/offer", {"sdp": offer}
        )
        assert status == 200, answer
        again = await asyncio.to_thread(
            http, "POST", f"{server.url}/v1/sessions/{created['id']}/webrtc/offer", {"sdp": offer}
        )
        await peer.close()
        return offer, answer["sdp"], again[0]

    offer, answer, again = asyncio.run(run())
    assert candidate_addresses(offer) and set(candidate_addresses(offer)) == {"127.0.0.1"}
    assert candidate_addresses(answer) and set(candidate_addresses(answer)) == {"127.0.0.1"}
    assert again == 409
    http("DELETE", f"{server.url}/v1/sessions/{created['id']}")


def test_keep_loopback_candidates():
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 10.1.2.3 5001 typ host\r\n"
        "a=candidate:3 1 udp 2130706431 6f1c-4f.local 5002 typ host\r\n"
        "a=candidate:4 1 udp 1694498815 203.0.113.9 5003 typ srflx raddr 0.0.0.0 rport 0\r\n"
    )
    assert candidate_addresses(keep_loopback_candidates(sdp)) == ["127.0.0.1"]
    with pytest.raises(ValueError, match="loopback"):
        keep_loopback_candidates(sdp.replace("127.0.0.1", "10.9.9.9"))


@pytest.mark.slow
def test_browser_page_over_webrtc(tiny_model, tmp_path, caplog):
    """Headless Chromium on loopback: its fake microphone makes the character listen, the demo
    agent's answer arrives on the audio track. Chromium gathers on every interface; the server
    must pair with its loopback candidate only."""
    caplog.set_level(logging.INFO, logger="aioice.ice")
    from tests.serve.test_browser import CHROMIUM, DRIVER, chromium, fake_mic_wav

    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.skip("needs chromium + chromedriver")
    loopback = (
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    )
    with start_server(tiny_model) as srv:
        driver = chromium(tmp_path, fake_mic_wav(tmp_path / "mic.wav"), extra=loopback)
        try:
            driver.get(f"{srv.url}/?autostart=1&transport=webrtc&character=stage-090001")
            deadline, states, lpm = time.monotonic() + 60, set(), {}
            while time.monotonic() < deadline and not (
                {"listening", "responding"} <= states and lpm.get("audioEnergy", 0) > 0
            ):
                time.sleep(0.5)
                lpm = driver.execute_script("return window.lpm")
                states = {s["state"] for s in lpm["states"]}
        finally:
            driver.quit()
    assert lpm["mic"] is True and not lpm["errors"], lpm["errors"]
    ready = next(e for e in lpm["events"] if e["type"] == "ready")
    assert ready["transport"] == "webrtc" and lpm["videoCodec"] in ("h264", "vp8")
    assert lpm["frames"] > 24, lpm
    assert {"listening", "responding"} <= states, lpm["states"]
    assert lpm["audioEnergy"] > 0  # the demo agent's speech played from the audio track
    assert ice_addresses(caplog) == {"127.0.0.1"}
    print("browser over webrtc:", lpm["videoCodec"], lpm["frames"], "frames,", lpm["fps"], "fps")

"""The WebRTC transport of one session (aiortc; extra ``lpm[webrtc]``), see docs/serve.md.

Signalling is one HTTP request, ``POST /v1/sessions/{id}/webrtc/offer``: the client's complete
SDP offer (ICE gathering finished, candidates inside: no trickle ICE) in, the complete answer
out. The peer connection then carries

    video track     the session's frames, paced like the WebSocket's JPEG frames; aiortc encodes
                    them, H.264 when the offer has it, else VP8
    audio track     real-time 20-ms frames: silence, and each chunk's agent audio placed at the
                    chunk's deadline (when its first frame goes out), so sound and picture match
    offer's audio   the microphone: decoded by aiortc, then PCM16 -> `AudioDecoder` ->
                    `LiveSession.push_audio`, the path of the WebSocket's user audio
    data channel    opened by the client (any label): the WebSocket protocol's messages, JSON
                    controls and binary ``[stream u8][payload]`` audio frames in, JSON events out

ICE uses host candidates only. No STUN or TURN server is configured (``iceServers=[]``; aiortc's
default would contact a public STUN server), and host candidates are gathered on
``ServeConfig.webrtc_host_addresses`` (127.0.0.1 by default). With loopback addresses only, the
offer's candidates that are not loopback addresses are dropped before ICE sees them and checks
from other source addresses are ignored, so the server never sends a packet beyond 127.0.0.1
(nor an mDNS query for a ``.local`` candidate).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import ipaddress
import logging
import time
from collections.abc import Iterator, Sequence

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError

from lpm.serve.audio import AudioDecoder
from lpm.serve.engine import ServedChunk
from lpm.serve.protocol import AudioFormat, ProtocolError
from lpm.serve.session import LiveSession, SessionManager
from lpm.serve.transport import WIRE_LIMIT, SessionTransport

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
"""RTP clock rate of video (Hz)."""
AUDIO_PTIME_S = 0.02
"""Duration of one outgoing audio frame (seconds)."""
VIDEO_PREFERENCE = ("video/H264", "video/VP8")
"""Video codecs in the order the answer prefers them."""
CHANNEL_BUFFER_BYTES = 1 << 20
"""Data-channel bytes not yet sent beyond which events are dropped (a client not reading)."""


class OfferError(ValueError):
    """An SDP offer this server cannot answer; the message says why (HTTP 400)."""


# ---- ICE host addresses ---------------------------------------------------------------------
_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "lpm_ice_host_addresses", default=None
)


def _hook_host_addresses() -> None:
    """Let `gathering_on` choose the addresses aioice gathers host candidates on.

    aioice (0.13) finds them in the module function ``aioice.ice.get_host_addresses`` (every
    interface except loopback) and neither it nor aiortc takes a parameter for them. Wrapping that
    function around a context variable keeps the choice per peer connection: gathering runs in
    tasks created inside ``setLocalDescription``, which inherit the caller's context, and every
    other user of aioice in the process keeps the original behaviour.
    """
    original = aioice.ice.get_host_addresses
    if getattr(original, "lpm_hooked", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _HOST_ADDRESSES.get()
        if chosen is None:
            return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    get_host_addresses.lpm_hooked = True
    aioice.ice.get_host_addresses = get_host_addresses


_hook_host_addresses()


@contextlib.contextmanager
def gathering_on(addresses: Sequence[str]) -> Iterator[None]:
    """ICE host candidates gathered inside this block use ``addresses`` (empty: aioice's own
    choice, every non-loopback interface). Wrap ``setLocalDescription`` in it."""
    token = _HOST_ADDRESSES.set(tuple(addresses) or None)
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def loopback_only(addresses: Sequence[str]) -> bool:
    """Whether ``addresses`` is non-empty and holds loopback addresses only."""
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def peer_connection() -> RTCPeerConnection:
    """A peer connection that contacts no STUN or TURN server."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def _candidate_address(line: str) -> str | None:
    """The connection address of an ``a=candidate:`` SDP line ("" if malformed); None for other
    lines."""
    parts = line.split()
    if not parts or not parts[0].startswith("a=candidate:"):
        return None
    return parts[4] if len(parts) >= 8 else ""


def candidate_addresses(sdp: str) -> list[str]:
    """Connection addresses of the ICE candidates in an SDP description."""
    return [a for a in map(_candidate_address, sdp.splitlines()) if a]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a hostname, e.g. an mDNS ``.local`` name
        return False


def keep_loopback_candidates(sdp: str) -> str:
    """``sdp`` without the ICE candidates that are not loopback addresses.

    Raises:
        OfferError: no loopback candidate is left.
    """
    lines, kept = [], 0
    for line in sdp.splitlines():
        address = _candidate_address(line)
        if address is not None:
            if not _is_loopback(address):
                continue
            kept += 1
        lines.append(line)
    if not kept:
        raise OfferError(
            "the offer has no ICE candidate on a loopback address; this server gathers on "
            "127.0.0.1 only (webrtc_host_addresses) and does not take trickled candidates: "
            "send the offer after ICE gathering completes, from a peer that gathers on 127.0.0.1"
        )
    return "\r\n".join(lines) + "\r\n"


def ignore_checks_from_beyond_loopback(pc: RTCPeerConnection) -> None:
    """Make ``pc``'s ICE agents ignore connectivity checks from non-loopback source addresses.

    Sockets bound to 127.0.0.1 still receive packets a local peer sends from the machine's other
    addresses (a browser gathers on every interface), and ICE would answer them and pair with
    them as peer-reflexive candidates. Call after ``setRemoteDescription`` (which creates the
    agents) and before ``setLocalDescription`` (after which checks can arrive). aiortc exposes
    the aioice agent only as ``RTCIceGatherer._connection``.
    """
    dtls = {t.sender.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        dtls.add(pc.sctp.transport)
    for agent in {d.transport.iceGatherer._connection for d in dtls}:
        answer = agent.request_received

        def request_received(message, addr, protocol, answer=answer) -> None:
            if _is_loopback(addr[0]):
                answer(message, addr, protocol)

        agent.request_received = request_received


# ---- media tracks ---------------------------------------------------------------------------
class FrameTrack(MediaStreamTrack):
    """Video frames handed over at their due time; aiortc's sender pulls and encodes them."""

    kind = "video"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._queue: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue()
        self._t0: float | None = None
        self._last_pts = -1

    @property
    def backlog(self) -> int:
        """Frames waiting for the encoder."""
        return self._queue.qsize()

    def put(self, frame: av.VideoFrame, due: float) -> None:
        """Queue ``frame``, due at clock seconds ``due``; its pts follows the wall clock."""
        if self.readyState != "live":
            return
        if self._t0 is None:
            self._t0 = due
        pts = max(self._last_pts + 1, round((due - self._t0) * VIDEO_CLOCK))
        frame.pts, frame.time_base = pts, fractions.Fraction(1, VIDEO_CLOCK)
        self._last_pts = pts
        while self._queue.qsize() >= self.limit:  # the encoder fell behind: drop the oldest
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()


class AgentAudioTrack(MediaStreamTrack):
    """20-ms PCM16 mono frames on a real-time clock: silence, or agent audio played at a time."""

    kind = "audio"

    def __init__(self, rate: int, clock=time.monotonic) -> None:
        super().__init__()
        self.rate, self.clock = rate, clock
        self.frame = round(AUDIO_PTIME_S * rate)
        self._t0: float | None = None
        self._pos = 0
        """Samples sent so far; sample ``_pos`` plays at ``_t0 + _pos / rate``."""
        self._buf = np.zeros(0, np.float32)
        """Scheduled audio from sample ``_pos`` on."""

    def play_at(self, at: float, samples: np.ndarray) -> None:
        """Play ``samples`` (float32 at ``rate``) from clock seconds ``at`` (or now, if past)."""
        if self._t0 is None:
            self._t0 = at
        offset = max(0, round((at - self._t0) * self.rate) - self._pos)
        end = offset + len(samples)
        if len(self._buf) < end:
            self._buf = np.concatenate((self._buf, np.zeros(end - len(self._buf), np.float32)))
        self._buf[offset:end] = samples

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = self.clock()
        else:
            await asyncio.sleep(max(0.0, self._t0 + self._pos / self.rate - self.clock()))
        out = np.zeros(self.frame, np.float32)
        take = self._buf[: self.frame]
        out[: len(take)] = take
        self._buf = self._buf[len(take) :]
        pcm = (np.clip(out, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts, frame.time_base = self._pos, fractions.Fraction(1, self.rate)
        self._pos += self.frame
        return frame


# ---- the transport ----------------------------------------------------------------------------
class WebRTCTransport(SessionTransport):
    """One session over one peer connection; `negotiate` answers the offer, `run` streams."""

    name = "webrtc"

    def __init__(self, session: LiveSession, manager: SessionManager) -> None:
        super().__init__(session, manager)
        self.addresses = tuple(session.cfg.webrtc_host_addresses)
        self.pc = peer_connection()
        self.video = FrameTrack(limit=2 * self.engine.fps)
        self.audio = AgentAudioTrack(self.engine.rate)
        self.channel: RTCDataChannel | None = None
        self.audio_codec: str | None = None
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()
        self._readers: set[asyncio.Task] = set()
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("track", self._on_track)

    # ---- signalling --------------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        """The SDP answer to ``offer_sdp``; the peer connection is closed on failure.

        Raises:
            OfferError: the offer is malformed or cannot be answered (says why).
        """
        try:
            return await self._negotiate(offer_sdp)
        except OfferError:
            await self.close()
            raise
        except Exception as err:  # aiortc raises many types for malformed SDP
            await self.close()
            why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise OfferError(f"bad SDP offer: {why}") from None

    async def _negotiate(self, offer_sdp: str) -> str:
        kinds: dict[str, str] = {}
        for m in aiortc_sdp.SessionDescription.parse(offer_sdp).media:
            kinds.setdefault(m.kind, m.direction or "sendrecv")
        if kinds.get("video") not in ("recvonly", "sendrecv"):
            raise OfferError(
                "the offer needs a video section the server can send on (recvonly or sendrecv); "
                "add a video transceiver with direction 'recvonly'"
            )
        if loopback_only(self.addresses):
            offer_sdp = keep_loopback_candidates(offer_sdp)
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
        video.setCodecPreferences(
            [c for name in VIDEO_PREFERENCE for c in caps if c.mimeType == name] + rtx
        )
        if "audio" in kinds:
            self.pc.addTransceiver(self.audio, direction="sendrecv")
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        if loopback_only(self.addresses):
            ignore_checks_from_beyond_loopback(self.pc)
        answer = await self.pc.createAnswer()
        with gathering_on(self.addresses):
            await self.pc.setLocalDescription(answer)
        sdp = self.pc.localDescription.sdp
        for media in aiortc_sdp.SessionDescription.parse(sdp).media:
            if media.kind in ("video", "audio") and media.rtp.codecs:
                name = media.rtp.codecs[0].mimeType.split("/")[1].lower()
                if media.kind == "video":
                    self.video_codec = name
                else:
                    self.audio_codec = name
        return sdp

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._gone.set()

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:  # one event channel per session; others are ignored
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                self.handle_message(text=message)
            else:
                self.handle_message(data=message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_microphone(track) if track.kind == "audio" else self._discard(track)
        task = asyncio.create_task(reader)
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read_microphone(self, track: MediaStreamTrack) -> None:
        decoder, layout = None, None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if frame.format.name != "s16" or len(frame.layout.channels) > 2:
                continue  # aiortc's audio decoders all give packed s16, mono or stereo
            if (frame.sample_rate, frame.layout.name) != layout:
                layout = (frame.sample_rate, frame.layout.name)
                fmt = AudioFormat(
                    type="audio.format",
                    stream="user",
                    sample_rate=frame.sample_rate,
                    channels=len(frame.layout.channels),
                )
                decoder = AudioDecoder(fmt, self.engine.rate)
            try:
                self.session.push_audio("user", decoder.decode(frame.to_ndarray().tobytes()))
            except ProtocolError as err:
                self.metrics.rejected.inc(code=err.code)

    @staticmethod
    async def _discard(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:  # aiortc queues received frames until read
                await track.recv()

    # ---- streaming -----------------------------------------------------------------------------
    def ready_fields(self) -> dict:
        fields = super().ready_fields()
        fields["agent_audio"] = {"codec": self.audio_codec, "track": "audio"}
        return fields

    async def run(self) -> None:
        """Wait for the peer to connect (``idle_timeout_s``), then stream until the end."""
        waits = [
            asyncio.create_task(self._connected.wait()),
            asyncio.create_task(self._gone.wait()),
            asyncio.create_task(self._ended()),
        ]
        try:
            await asyncio.wait(
                waits, timeout=self.session.cfg.idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in waits:
                t.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if self._connected.is_set() and not self._gone.is_set():
            await super().run()
            return
        self.reason = "disconnected" if self._gone.is_set() else "not_connected"
        self.manager.end(self.session, self.reason)
        await self.close()

    async def receive(self) -> None:
        await self._gone.wait()  # data-channel messages arrive through `_on_channel`
        if self.reason == "closed":
            self.reason = "disconnected"

    async def send(self, item: str | bytes) -> bool:
        while self.channel is None or self.channel.readyState == "connecting":
            await asyncio.sleep(0.05)  # events wait (bounded by `say`) for the client's channel
        if self.channel.readyState == "open" and self.channel.bufferedAmount < CHANNEL_BUFFER_BYTES:
            self.channel.send(item)
        return True  # a closed channel drops events; the peer connection decides the end

    def congested(self) -> bool:
        return self.video.backlog > self.engine.fps or self.wire.qsize() > WIRE_LIMIT

    def encode_frames(self, frames: np.ndarray) -> list[av.VideoFrame]:
        return [
            av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(
                format="yuv420p"
            )
            for f in frames
        ]

    def send_agent_audio(self, chunk: ServedChunk, speak: np.ndarray) -> None:
        self.audio.play_at(chunk.deadline, speak)

    def send_frame(self, chunk: ServedChunk, i: int, payload: av.VideoFrame) -> None:
        self.video.put(payload, chunk.deadline + i / self.engine.fps)

    async def close(self) -> None:
        """Let the last events leave, close the peer connection, stop the track readers."""
        channel = self.channel
        deadline = time.monotonic() + 0.5
        while channel is not None and channel.readyState == "open" and channel.bufferedAmount:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        await self.pc.close()
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

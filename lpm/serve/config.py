"""`ServeConfig`: every limit and default of `lpm serve`, typed and validated."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(kw_only=True)
class ServeConfig:
    """Server-wide settings; `lpm serve` options map one to one onto these fields."""

    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default; anything else exposes the server."""
    port: int = 8000
    """TCP port (0 picks a free one)."""
    max_sessions: int = 4
    """Sessions alive at once; one more is answered HTTP 503 ``busy``."""
    token: str | None = None
    """Bearer token required on the HTTP API; None disables auth."""
    lookahead: int = 1
    """Chunks the generator may queue ahead of the sender (the engine's bounded look-ahead)."""
    compute_slots: int = 2
    """Chunks computed at once across all sessions; further chunks wait their turn, earliest
    playback deadline first (the fair scheduler)."""
    lead_margin_s: float = 0.25
    """Seconds a chunk's compute is started before its playback deadline, on top of the measured
    compute time of one chunk."""
    jpeg_quality: int = 80
    """JPEG quality of video frames (1..100)."""
    max_session_s: float = 3600.0
    """Longest a session may live (seconds); it then ends with ``session_limit``."""
    idle_timeout_s: float = 60.0
    """A created session with no WebSocket attached for this long is ended (seconds)."""
    max_message_bytes: int = 65536
    """Largest WebSocket message accepted (bytes); larger ones are rejected, not parsed."""
    max_text_chars: int = 2000
    """Longest persona or prompt text (characters)."""
    max_audio_burst_s: float = 30.0
    """Audio a client may send ahead of real time on one stream (seconds); beyond it, frames are
    rejected with ``audio_rate``."""
    max_agent_queue_s: float = 60.0
    """Agent speech queued for playback at most (seconds)."""
    user_backlog_s: float = 0.5
    """User audio older than this that has not yet reached the model is dropped (seconds), so a
    jittery microphone never adds latency."""
    vad_aggressiveness: int = 2
    """webrtcvad mode 0..3 (3 filters the most non-speech)."""
    vad_hangover_s: float = 0.3
    """Silence after speech still counted as the user speaking (seconds)."""
    barge_in: bool = True
    """User speech over agent speech interrupts the agent at the next chunk boundary."""
    seed: int = 0
    """Noise seed of every session."""
    webrtc_host_addresses: tuple[str, ...] = ("127.0.0.1",)
    """IP addresses WebRTC ICE host candidates are gathered on. Loopback only by default (then
    offers' non-loopback candidates are ignored and nothing beyond 127.0.0.1 is contacted); an
    empty tuple gathers on every non-loopback interface, for clients on other machines. No
    STUN or TURN server is ever used."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.lookahead < 1:
            raise ValueError(f"lookahead must be >= 1 chunk, got {self.lookahead}")
        if self.compute_slots < 1:
            raise ValueError(f"compute_slots must be >= 1, got {self.compute_slots}")
        if self.lead_margin_s < 0:
            raise ValueError(f"lead_margin_s must be >= 0, got {self.lead_margin_s}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_session_s <= 0 or self.idle_timeout_s <= 0:
            raise ValueError("max_session_s and idle_timeout_s must be > 0")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise ValueError(f"vad_aggressiveness must be in 0..3, got {self.vad_aggressiveness}")
        for address in self.webrtc_host_addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"webrtc_host_addresses: {address!r} is not an IP address"
                ) from None
            if ip.is_unspecified:
                raise ValueError(
                    f"webrtc_host_addresses: {address!r} is not an interface address; give the "
                    "addresses themselves, or none for every non-loopback interface"
                )
        if self.token is not None and not self.token:
            raise ValueError("token must be a non-empty string or None")

"""Prometheus metrics in the text exposition format (no client library needed).

Names are prefixed ``lpm_``; `ServeMetrics` declares every one the server exports.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTF_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0)


class _Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self.lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + body + "}"


class Counter(_Metric):
    """A monotonically increasing count, optionally split by one label."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "counter")
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self.lock:
            items = list(self.values.items()) or [((), 0.0)]
        return self.header() + [f"{self.name}{_labels(dict(k))} {v:g}" for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "gauge")
        self.current = 0.0

    def set(self, value: float) -> None:
        self.current = float(value)

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {self.current:g}"]


class Histogram(_Metric):
    """Cumulative buckets, sum and count of observed values."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text, "histogram")
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        with self.lock:
            i = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            self.counts[i] += 1
            self.total += value
            self.count += 1

    def render(self) -> list[str]:
        with self.lock:
            counts, total, count = list(self.counts), self.total, self.count
        lines, running = self.header(), 0
        for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{self.name}_bucket{{le="{le}"}} {running}')
        return lines + [f"{self.name}_sum {total:g}", f"{self.name}_count {count}"]


class ServeMetrics:
    """Every metric `lpm serve` exports at ``/metrics``."""

    def __init__(self) -> None:
        self.sessions = Gauge("lpm_sessions", "Sessions alive now.")
        self.sessions_total = Counter("lpm_sessions_total", "Sessions created.")
        self.sessions_rejected = Counter(
            "lpm_sessions_rejected_total",
            "Session requests refused, by reason (busy, bad_request).",
        )
        self.chunks = Counter("lpm_chunks_total", "Chunks generated and sent, by state.")
        self.chunks_late = Counter(
            "lpm_chunks_late_total", "Chunks ready after their playback deadline (video held)."
        )
        self.chunks_dropped = Counter(
            "lpm_chunks_dropped_total", "Chunks discarded because the client could not keep up."
        )
        self.frames = Counter("lpm_frames_sent_total", "Video frames sent.")
        self.chunk_compute = Histogram(
            "lpm_chunk_compute_seconds",
            "Backbone start to decoded frames, per chunk.",
            LATENCY_BUCKETS,
        )
        self.input_latency = Histogram(
            "lpm_input_to_frame_seconds",
            "Newest input audio arrival to the first frame that reacts to it.",
            LATENCY_BUCKETS,
        )
        self.rtf = Histogram(
            "lpm_realtime_factor",
            "Chunk seconds / sequential compute seconds, per chunk.",
            RTF_BUCKETS,
        )
        self.messages = Counter("lpm_messages_total", "Client WebSocket messages, by kind.")
        self.rejected = Counter("lpm_messages_rejected_total", "Client messages refused, by code.")
        self.audio_seconds = Counter("lpm_audio_seconds_total", "Audio received, by stream.")
        self.webrtc_offers = Counter(
            "lpm_webrtc_offers_total", "WebRTC offers, by result (answered, bad_offer, conflict)."
        )

    def render(self) -> str:
        metrics = (
            self.sessions,
            self.sessions_total,
            self.sessions_rejected,
            self.chunks,
            self.chunks_late,
            self.chunks_dropped,
            self.frames,
            self.chunk_compute,
            self.input_latency,
            self.rtf,
            self.messages,
            self.rejected,
            self.audio_seconds,
            self.webrtc_offers,
        )
        return "\n".join(line for m in metrics for line in m.render()) + "\n"

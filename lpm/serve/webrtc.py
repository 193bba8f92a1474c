"""Optional WebRTC transport (aiortc); filled in below."""

from __future__ import annotations


def add_webrtc_routes(app, manager, authorised) -> None:
    """Add ``POST /v1/sessions/{id}/webrtc`` when aiortc is installed."""
    return None

"""`FrameState`: everything about a character that changes from frame to frame."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class FrameState:
    """Everything that changes from frame to frame. Angles in degrees, offsets in head units."""

    mouth_open: float = 0.0
    """Jaw opening from speech, 0 (closed) .. 1 (wide open); expressions may add to it."""
    mouth_round: float = 0.0
    """Lip rounding, 0 (spread, "ee") .. 1 (rounded, "oo")."""
    yaw: float = 0.0
    """Head turn (degrees, + turns the face toward image right), added to the view's yaw."""
    pitch: float = 0.0
    """Head tilt (degrees, + looks up)."""
    roll: float = 0.0
    """Head roll (degrees, + tilts clockwise on screen)."""
    gaze_x: float = 0.0
    """Horizontal gaze, -1 (image left) .. 1 (image right)."""
    gaze_y: float = 0.0
    """Vertical gaze, -1 (up) .. 1 (down)."""
    brow_raise: float = 0.0
    """Extra eyebrow raise from prosody or actions, -1 .. 1."""
    expression: int = 0
    """Index into `schema.EXPRESSIONS`."""
    intensity: float = 0.0
    """Strength of `expression`, 0 .. 1."""
    prev_expression: int = 0
    """Expression fading out during a transition."""
    prev_intensity: float = 0.0
    """Remaining strength of `prev_expression`, 0 .. 1."""
    blink: float = 0.0
    """Eyelid closure, 0 (open) .. 1 (closed)."""
    view: str = "front"
    """Body facing, one of `schema.VIEWS`."""
    sway_x: float = 0.0
    """Horizontal body sway (head units)."""
    sway_y: float = 0.0
    """Vertical body offset, + moves down (head units); breathing uses it."""
    lean: float = 0.0
    """Lean toward the camera, 0 .. 1 (head grows and lowers)."""
    wave: float = 0.0
    """Waving hand raised amount, 0 (hidden) .. 1."""
    wave_phase: float = 0.0
    """Phase of the waving hand (radians)."""

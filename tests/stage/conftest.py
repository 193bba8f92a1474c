"""Shared fixtures for the Stage world tests."""

from __future__ import annotations

import pytest

from lpm.data.stage.clip import ClipSpec, render_clip


@pytest.fixture(scope="session")
def conversation_clips():
    """A few small conversation clips voiced by the formant synthesizer (no frames needed)."""
    clips = []
    for i, (a, b) in enumerate([(11, 22), (333, 4444), (5050, 60606)]):
        spec = ClipSpec(
            performer_seed=a,
            partner_seed=b,
            seed=100 + i,
            seconds=8.0,
            size=32,
            mode="conversation",
            backend="formant",
        )
        clips.append(render_clip(spec, references=False))
    return clips

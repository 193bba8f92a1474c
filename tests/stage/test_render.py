"""Renderer: shapes, views, expressions and a visible, monotonic mouth."""

from __future__ import annotations

import numpy as np
import pytest

from lpm.data.stage.character import make_character
from lpm.data.stage.render import (
    FrameState,
    contact_sheet,
    eye_region,
    head_layout,
    mouth_region,
    render_frame,
)
from lpm.data.stage.schema import EXPRESSIONS, VIEWS


@pytest.mark.parametrize("size", [32, 64, 128])
def test_frame_shape(size):
    img = render_frame(make_character(1), FrameState(), size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8


def _mouth_darkness(seed: int, m: float) -> float:
    """Dark (open-mouth interior) pixels in the mouth region of a 128-px frame."""
    img = render_frame(make_character(seed), FrameState(mouth_open=m), 128).astype(int)
    (cx, cy), r = head_layout(128)
    box = img[int(cy + 0.2 * r) : int(cy + 1.3 * r), int(cx - 0.6 * r) : int(cx + 0.6 * r)]
    ref = render_frame(make_character(seed), FrameState(mouth_open=0.0), 128).astype(int)
    ref_box = ref[int(cy + 0.2 * r) : int(cy + 1.3 * r), int(cx - 0.6 * r) : int(cx + 0.6 * r)]
    return float(np.abs(box - ref_box).sum(-1).astype(bool).sum())


@pytest.mark.parametrize("seed", [3, 17, 250])
def test_mouth_opening_is_visible_and_monotonic(seed):
    area = [_mouth_darkness(seed, m) for m in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert area[0] == 0
    assert all(b > a for a, b in zip(area, area[1:], strict=False)), area
    assert area[-1] > 150, "a wide open mouth should change many pixels at 128 px"


def test_views_and_expressions_differ():
    ch = make_character(5)
    views = [render_frame(ch, FrameState(view=v), 64).astype(int) for v in VIEWS]
    exprs = [
        render_frame(ch, FrameState(expression=i, intensity=1.0), 64).astype(int)
        for i in range(len(EXPRESSIONS))
    ]
    for group in (views, exprs):
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                assert np.abs(group[i] - group[j]).sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="view"):
        render_frame(make_character(1), FrameState(view="top"), 64)
    with pytest.raises(ValueError, match="size"):
        render_frame(make_character(1), FrameState(), 8)
    with pytest.raises(ValueError):
        contact_sheet([], 3)


def _brow_change(seed: int) -> int:
    """Pixels of a 128-px frame that change when the brows are raised fully."""
    ch = make_character(seed)
    a = render_frame(ch, FrameState(), 128).astype(int)
    b = render_frame(ch, FrameState(brow_raise=0.9), 128).astype(int)
    return int((np.abs(a - b).sum(-1) > 30).sum())


def test_raised_brows_show_on_every_face_even_under_hats_and_fringes():
    from lpm.data.stage.face import BROW_MIN_CONTRAST, _luma, brow_colour

    seeds = range(60)
    hatted = [s for s in seeds if make_character(s).hat != "none"]
    assert hatted, "some characters wear hats"
    changes = {s: _brow_change(s) for s in seeds}
    # brows are drawn over hair and hats, so raising them always moves visible pixels
    assert min(changes.values()) >= 20, changes
    for s in seeds:
        ch = make_character(s)
        assert abs(_luma(brow_colour(ch)) - _luma(ch.skin)) >= BROW_MIN_CONTRAST * 0.8


@pytest.mark.parametrize("seed", [3, 11])
def test_mouth_region_covers_every_mouth_of_the_pose_and_little_else(seed):
    ch = make_character(seed)
    for yaw in (0.0, 15.0):
        shut = FrameState(yaw=yaw)
        region = mouth_region(ch, shut, 64)
        assert region.shape == (64, 64) and 40 < region.sum() < 64 * 64 * 0.12
        # the same region whatever the mouth is doing in the frame
        assert np.array_equal(region, mouth_region(ch, FrameState(yaw=yaw, mouth_open=0.7), 64))
        for open_, rnd in ((0.3, 0.0), (0.8, 0.5), (1.0, 1.0)):
            moved = render_frame(ch, FrameState(yaw=yaw, mouth_open=open_, mouth_round=rnd), 64)
            changed = np.abs(moved.astype(int) - render_frame(ch, shut, 64)).max(-1) > 8
            assert changed.any() and not (changed & ~region).any()
        ys, _ = np.nonzero(region)
        (cy, _), head = head_layout(64)
        assert ys.mean() > cy  # below the head's centre: a mouth, not the eyes


@pytest.mark.parametrize("seed", [3, 11])
def test_eye_region_covers_the_eyes_above_the_mouth_and_follows_the_head(seed):
    ch = make_character(seed)
    front = eye_region(ch, FrameState(), 64)
    assert front.shape == (64, 64) and 10 < front.sum() < 64 * 64 * 0.08
    # the same region whether the frame's eyes are open or half shut
    assert np.array_equal(front, eye_region(ch, FrameState(blink=0.5), 64))
    # every pixel a blink changes is in it
    closed = render_frame(ch, FrameState(blink=1.0), 64)
    assert not ((np.abs(closed.astype(int) - render_frame(ch, FrameState(), 64)).max(-1) > 8)
                & ~front).any()  # fmt: skip
    eyes_y = np.nonzero(front)[0].mean()
    assert eyes_y < np.nonzero(mouth_region(ch, FrameState(), 64))[0].mean()
    # a turned head moves the eyes sideways
    turned = eye_region(ch, FrameState(yaw=30.0), 64)
    assert abs(np.nonzero(turned)[1].mean() - np.nonzero(front)[1].mean()) >= 1.5

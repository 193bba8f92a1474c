"""Raw-footage mode: shots cover the scene and the ground truth is consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpm.data.stage.raw import DEFECTS, MIN_SHOT_S, render_raw_scene
from lpm.data.stage.schema import STATES
from lpm.data.stage.writer import StageDatasetConfig, build_dataset


@pytest.fixture(scope="module")
def scene():
    return render_raw_scene(11, seconds=30.0, size=48, backend="formant")


def test_shots_tile_the_scene(scene):
    shots = scene.truth["shots"]
    n = scene.truth["num_frames"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == n == len(scene.frames)
    for a, b in zip(shots, shots[1:], strict=False):
        assert a["end_frame"] == b["start_frame"]
    assert len(shots) >= 3
    for s in shots:
        assert s["verdict"] in DEFECTS
        short = s["end_frame"] - s["start_frame"] < MIN_SHOT_S * scene.fps
        if s["layout"] == "empty":
            assert s["verdict"] == "empty" and s["people_in_frame"] == []
        elif short:
            assert s["verdict"] == "too_short"


def test_people_labels_and_boxes(scene):
    n = scene.truth["num_frames"]
    for person in scene.truth["people"]:
        assert len(person["state"]) == len(person["face_box"]) == n
        assert set(person["state"]) <= set(STATES)
    for s in scene.truth["shots"]:
        for f in range(s["start_frame"], s["end_frame"]):
            for p in (0, 1):
                box = scene.truth["people"][p]["face_box"][f]
                assert (box is not None) == (p in s["people_in_frame"])
                if box is not None:
                    assert 0 <= box[0] < box[2] <= 48 and 0 <= box[1] < box[3] <= 48
    # when one person speaks alone the other listens (a speaker's partner never idles then)
    s0 = np.array(scene.truth["people"][0]["state"])
    s1 = np.array(scene.truth["people"][1]["state"])
    assert np.all(s1[(s0 == "speak") & (s1 != "speak")] == "listen")


def test_defects_change_pixels(scene):
    empty = [s for s in scene.truth["shots"] if s["layout"] == "empty"]
    for s in empty:
        frames = scene.frames[s["start_frame"] : s["end_frame"]].astype(int)
        assert np.abs(np.diff(frames, axis=0)).max(initial=0) == 0  # nothing moves


def test_raw_dataset(tmp_path):
    cfg = StageDatasetConfig(
        out=tmp_path, clips=1, seconds=6.0, resolution=32, raw=True, backend="formant"
    )
    entries = build_dataset(cfg, progress=False)
    assert entries[0]["kind"] == "raw"
    d = tmp_path / entries[0]["dir"]
    truth = json.loads((d / "truth.json").read_text())
    assert truth["num_frames"] == 144
    assert (d / "video.mp4").stat().st_size > 0 and (d / "person_1.wav").exists()

"""Case format validation, suites (composition, determinism), user suite files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from lpm.bench.case import CASE_FORMAT, CaseSpec, load_case, save_case
from lpm.bench.materialize import materialize
from lpm.bench.suites import load_suite, stage_1000, stage_mini
from lpm.data.stage.schema import HELDOUT_SEEDS


def _real_case(**over) -> dict:
    d = {
        "id": "alice-01",
        "subset": "speaking",
        "duration_s": 2.0,
        "first_frame": "face.png",
        "speak_audio": "speak.wav",
        "references": [{"kind": "expression", "subtype": "happy", "path": "happy.png"}],
        "instructions": [{"start_s": 0.5, "end_s": 1.5, "text": "She nods.", "action": "nod"}],
        "tags": {"appearance": ["glasses"], "audio": ["english"]},
    }
    d.update(over)
    return d


def test_case_round_trip(tmp_path):
    case = CaseSpec.from_dict(_real_case())
    assert case.format == CASE_FORMAT and case.num_frames == 48
    path = save_case(case, tmp_path / "c.json")
    assert load_case(path) == case
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(case.to_dict()))
    assert load_case(tmp_path / "c.yaml") == case


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"subset": "singing"}, "subset must be one of"),
        ({"duration_s": 0}, "duration_s must be positive"),
        ({"first_frame": ""}, "needs `first_frame`"),
        ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"instructions": [{"start_s": 2, "end_s": 1, "text": "x"}]}, "start_s < end_s"),
        (
            {"instructions": [{"start_s": 0, "end_s": 1, "text": "x", "action": "fly"}]},
            "instruction.action",
        ),
        ({"references": [{"kind": "body", "subtype": "top"}]}, "reference.subtype"),
        ({"stage": {"performer_seed": -5, "partner_seed": 1, "seed": 0}}, "stage.performer_seed"),
        ({"format": "lpm-bench-case/0"}, "format must be"),
    ],
)
def test_case_validation_names_the_problem(over, match):
    with pytest.raises(ValueError, match=match):
        CaseSpec.from_dict(_real_case(**over))


def test_stage_1000_composition_and_durations():
    suite = stage_1000()
    assert suite.composition() == {
        "speaking": 400,
        "listening": 200,
        "conversation": 200,
        "diverse-motion": 100,
        "character-generalization": 100,
    }
    d = np.array([c.duration_s for c in suite.cases])
    assert np.isclose((d >= 180).mean(), 0.10) and d.max() <= 3600
    short = d[d < 180]
    assert short.min() >= 5
    assert all(c.stage.performer_seed in HELDOUT_SEEDS for c in suite.cases)
    assert suite.cases[17] == stage_1000().cases[17]  # deterministic
    scaled = stage_1000(duration_scale=0.1)
    assert sum(c.duration_s for c in scaled.cases) < 0.12 * d.sum()
    gen = [c for c in suite.cases if c.subset == "character-generalization"]
    assert all(len(c.references) == 1 + 4 + 8 for c in gen)


def test_stage_mini_is_small():
    suite = stage_mini()
    assert len(suite.cases) == 6 and len(suite.composition()) == 5
    assert sum(c.duration_s for c in suite.cases) <= 30


def test_user_suite_file_with_real_inputs(tmp_path):
    import cv2

    img = np.full((48, 40, 3), 120, np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), img)
    cv2.imwrite(str(tmp_path / "happy.png"), img)
    sf.write(tmp_path / "speak.wav", np.zeros(8000, np.float32), 16000)
    (tmp_path / "suite.yaml").write_text(
        yaml.safe_dump({"format": "lpm-bench-suite/1", "name": "mine", "cases": [_real_case()]})
    )
    suite = load_suite(tmp_path)
    assert suite.name == "mine" and suite.root == tmp_path.resolve()
    inputs = materialize(suite.cases[0], suite.root, tmp_path / "out")
    assert inputs.first_frame.shape == (48, 40, 3) and len(inputs.speak) == 32000
    assert inputs.truth_frames is None and inputs.references[0][0].subtype == "happy"
    bad = _real_case(speak_audio="missing.wav")
    (tmp_path / "bad.json").write_text(json.dumps({"cases": [bad]}))
    with pytest.raises(ValueError, match="missing.wav"):
        load_suite(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown suite"):
        load_suite("stage-2000")


def test_stage_case_materialises_instructions_and_truth(conversation_inputs):
    from lpm.data.stage.captions import ACTION_PHRASES, EXPRESSION_PHRASES

    inp = conversation_inputs
    case = inp.case
    assert inp.truth_frames.shape == (case.num_frames, 64, 64, 3)
    assert len(inp.speak) == len(inp.listen) == int(case.duration_s * 16000)
    for ins in case.instructions:
        assert 0 <= ins.start_s < ins.end_s <= case.duration_s + 1e-6
        if ins.action:  # scorable instructions are cue sentences, as the Stage cues are
            assert ins.text == f"The character {ACTION_PHRASES[ins.action][0]}."
        if ins.expression:  # the ground truth holds the requested expression in its span
            assert ins.text == f"The character, {EXPRESSION_PHRASES[ins.expression][0]}."
            a, b = round(ins.start_s * case.fps), round(ins.end_s * case.fps)
            assert set(inp.truth_labels["expression"][a:b]) == {ins.expression}


def test_stage_heldout_suite_composition():
    from lpm.bench.suites import load_suite
    from lpm.data.stage.schema import HELDOUT_SEEDS

    suite = load_suite("stage-heldout")
    assert len(suite.cases) == 24 and len({c.id for c in suite.cases}) == 24
    assert [c.subset for c in suite.cases].count("listening") == 8
    assert all(c.duration_s == 4.0 and c.stage.size == 64 for c in suite.cases)
    assert all(c.stage.performer_seed in HELDOUT_SEEDS for c in suite.cases)

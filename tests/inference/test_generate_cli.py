"""`lpm generate` offline and `--online` on saved tiny bundles, and its errors."""

from __future__ import annotations

import cv2
import soundfile as sf
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.media import read_video
from tests.inference.test_pipeline import face, tiny_bundle, tone
from tests.inference.test_streaming import online_bundle


def inputs(tmp_path):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), face())
    speak = tmp_path / "speak.wav"
    sf.write(speak, tone(1.4), 16000)
    script = tmp_path / "script.json"
    script.write_text(
        '[{"start": 0, "end": 1, "text": "nod"}, {"start": 1, "end": 2, "text": "wave"}]'
    )
    return image, speak, script


def test_generate_offline_and_online(tmp_path):
    image, speak, script = inputs(tmp_path)
    tiny_bundle().save(tmp_path / "offline")
    online_bundle().save(tmp_path / "online")
    runner = CliRunner()
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "offline"), "--image",
                              str(image), "--speak", str(speak), "--script", str(script),
                              "--out", str(tmp_path / "a.mp4")])  # fmt: skip
    assert res.exit_code == 0, res.output
    frames, fps = read_video(tmp_path / "a.mp4")
    assert fps == 24 and frames.shape[0] == 32  # 1.4 s -> 8 latents -> 32 frames
    res = runner.invoke(app, ["generate", "--online", "--model", str(tmp_path / "online"),
                              "--image", str(image), "--speak", str(speak), "--script",
                              str(script), "--out", str(tmp_path / "b.mp4")])  # fmt: skip
    assert res.exit_code == 0, res.output
    frames, _ = read_video(tmp_path / "b.mp4")
    assert frames.shape[0] == round(1.4 * 24)


def test_generate_errors(tmp_path):
    image, speak, _ = inputs(tmp_path)
    tiny_bundle().save(tmp_path / "offline")
    runner = CliRunner()
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "offline"), "--speak",
                              str(speak)])  # fmt: skip
    assert res.exit_code != 0 and "--image" in res.output
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "offline"), "--image",
                              str(tmp_path / "missing.png"), "--speak", str(speak)])  # fmt: skip
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "nothing"), "--image",
                              str(image), "--speak", str(speak)])  # fmt: skip
    assert res.exit_code == 2 and "bundle.json" in res.output


def test_generate_without_inputs_renders_the_shipped_demo(tmp_path):
    from lpm.inference.demo import demo_inputs

    demo = demo_inputs()
    assert sf.info(str(demo.speak)).samplerate == 16000
    tiny_bundle().save(tmp_path / "offline")
    res = CliRunner().invoke(app, ["generate", "--model", str(tmp_path / "offline"), "--seconds",
                                   "1", "--out", str(tmp_path / "demo.mp4")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "demo" in res.output
    frames, fps = read_video(tmp_path / "demo.mp4")
    assert fps == 24 and frames.shape[0] == 24

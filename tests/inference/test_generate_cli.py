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
    assert "running on cpu, fp32" in res.output  # --device auto: the CPU here (LPM_DEVICE)
    frames, fps = read_video(tmp_path / "a.mp4")
    assert fps == 24 and frames.shape[0] == 32  # 1.4 s -> 8 latents -> 32 frames
    res = runner.invoke(app, ["generate", "--online", "--model", str(tmp_path / "online"),
                              "--image", str(image), "--speak", str(speak), "--script",
                              str(script), "--out", str(tmp_path / "b.mp4"),
                              "--dtype", "bf16"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "running on cpu, bf16" in res.output
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


def test_generate_rejects_bad_settings_before_any_work(tmp_path):
    """Each bad setting stops with its own message, before a progress bar or a file appears."""
    image, speak, _ = inputs(tmp_path)
    tiny_bundle().save(tmp_path / "offline")
    online_bundle().save(tmp_path / "online")
    (tmp_path / "somedir").mkdir()
    (tmp_path / "afile").write_text("x")
    base = ["generate", "--image", str(image), "--speak", str(speak)]
    cases = [
        (["--model", "offline", "--steps", "0"], "steps must be >= 1"),
        (["--model", "offline", "--seconds", "-1"], "seconds must be > 0"),
        (["--model", "online", "--online", "--seconds", "-1"], "seconds must be > 0"),
        (["--model", "offline", "--device", "tpu"], "use auto, cpu, cuda or cuda:N"),
        (["--model", "offline", "--out", "somedir"], "is a directory"),
        (["--model", "offline", "--out", "x.txt"], "name it NAME.mp4"),
        (["--model", "offline", "--out", "afile/x.mp4"], "is a file, not a directory"),
    ]
    runner = CliRunner()
    for extra, message in cases:
        args = [str(tmp_path / a) if a in ("offline", "online", "somedir", "x.txt",
                                           "afile/x.mp4") else a for a in extra]  # fmt: skip
        if "--out" not in extra:
            args += ["--out", str(tmp_path / "never.mp4")]
        res = runner.invoke(app, base + args)
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output, (extra, res.output)
        assert "generating" not in res.output and "streaming" not in res.output, res.output
    assert not (tmp_path / "never.mp4").exists() and not (tmp_path / "x.txt").exists()
    assert sorted(p.name for p in (tmp_path / "somedir").iterdir()) == []


def test_generate_online_loops_short_audio_to_the_asked_seconds(tmp_path):
    image, speak, _ = inputs(tmp_path)  # 1.4 s of speech
    online_bundle().save(tmp_path / "online")
    res = CliRunner().invoke(app, ["generate", "--online", "--model", str(tmp_path / "online"),
                                   "--image", str(image), "--speak", str(speak), "--seconds",
                                   "3", "--out", str(tmp_path / "c.mp4")])  # fmt: skip
    assert res.exit_code == 0, res.output
    audio = _audio_track(tmp_path / "c.mp4")
    second = audio[16000 * 2 : 16000 * 2 + 8000]  # inside the loop's second pass
    assert abs(second).max() > 0.05, "the speech must loop, not fall silent after 1.4 s"


def _audio_track(path):
    import av
    import numpy as np

    with av.open(str(path)) as container:
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(chunks)

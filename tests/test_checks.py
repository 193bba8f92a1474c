"""Checks made before any work (a ``--device`` value, an output path) and how warnings print."""

from __future__ import annotations

import pytest
import torch

from lpm.device import resolve_device


def test_cpu_and_default():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")  # conftest


def test_auto_is_the_gpu_where_there_is_one_unless_lpm_device_says_otherwise(monkeypatch):
    monkeypatch.delenv("LPM_DEVICE", raising=False)
    want = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == want
    monkeypatch.setenv("LPM_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit device wins
    monkeypatch.setenv("LPM_DEVICE", "")
    assert resolve_device("auto") == want  # empty: as if unset
    monkeypatch.setenv("LPM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="LPM_DEVICE='tpu': device 'tpu' is not a device"):
        resolve_device(None)


def test_commands_that_run_a_model_default_to_a_gpu_when_there_is_one(monkeypatch):
    """`--device auto` is every model-running command's default: the first usable GPU."""
    from typer.testing import CliRunner

    from lpm.cli.main import app

    for argv in (["generate"], ["serve"], ["bench", "run"], ["data", "encode"],
                 ["dpo", "candidates"], ["dpo", "eval"], ["distill", "trajectories"]):  # fmt: skip
        res = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (argv, res.output)
        line = next(ln for ln in res.output.splitlines() if "--device" in ln)
        assert "auto (a GPU when there is one)" in line and "[default: auto]" in line, line
    monkeypatch.delenv("LPM_DEVICE", raising=False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("name", "message"),
    [("tpu", "is not a device"), ("cuda:x", "is not a device"), ("mps", "is not supported")],
)
def test_names_that_are_not_devices(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_a_gpu_this_machine_lacks_says_why(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match="built without CUDA.*the cpu device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="no GPU is visible.*CUDA_VISIBLE_DEVICES=''"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="has 2 GPU"):
        resolve_device("cuda:2")


def test_check_mp4_path(tmp_path):
    from lpm.media import check_mp4_path

    assert check_mp4_path(tmp_path / "new" / "deeper" / "a.MP4").name == "a.MP4"
    with pytest.raises(ValueError, match="is a directory"):
        check_mp4_path(tmp_path)
    with pytest.raises(ValueError, match="NAME.mp4"):
        check_mp4_path(tmp_path / "a.avi")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_mp4_path(tmp_path / "f" / "a.mp4")


def test_lpm_warnings_print_as_one_line():
    from lpm.cli.main import _format_warning
    from lpm.models.audio.io import ClippedAudioWarning

    line = _format_warning("audio a.wav looks clipped", ClippedAudioWarning, "/x/io.py", 3)
    assert line == "warning: audio a.wav looks clipped\n"
    other = _format_warning("old API", DeprecationWarning, "/x/other.py", 7, line="")
    assert "/x/other.py:7" in other

"""`lpm env`: what this machine gives lpm, as a table and as JSON."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import lpm.cli.env as env_cli
from lpm.cli.main import app


def test_json_names_torch_gpus_packages_tools_and_weights():
    res = CliRunner().invoke(app, ["env", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["torch"] == torch.__version__
    assert len(info["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert info["core"]["diffusers"] and info["pyav"]["version"]
    assert set(info["optional"]) == {dist for dist, *_ in env_cli.OPTIONAL}
    assert info["shipped_weights"]["lpm-nano"]["mb"] > 1


def test_a_missing_package_says_what_needs_it_and_how_to_install_it(monkeypatch):
    real = env_cli._version
    monkeypatch.setattr(env_cli, "_version", lambda d: None if d == "ray" else real(d))
    res = CliRunner().invoke(app, ["env"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if " ray " in ln)
    assert "missing" in line and "lpm data prep --runner ray" in line and "lpm[ray]" in line


def test_lpm_run_from_a_source_tree_names_its_version_and_folder(monkeypatch):
    import lpm

    real = env_cli._version
    monkeypatch.setattr(env_cli, "_version", lambda d: None if d == "lpm" else real(d))
    info = env_cli.collect()
    assert info["lpm"].startswith(f"{lpm.__version__} (not installed; run from ")


def test_version_flag_prints_the_version_and_runs_nothing_else():
    import lpm

    res = CliRunner().invoke(app, ["--version", "generate", "--steps", "0"])
    assert res.exit_code == 0 and res.output.strip() == f"lpm {lpm.__version__}", res.output


def test_it_says_what_device_auto_picks_and_why(monkeypatch):
    monkeypatch.setenv("LPM_DEVICE", "cpu")
    assert env_cli.collect()["default_device"] == "cpu (LPM_DEVICE=cpu)"
    monkeypatch.setenv("LPM_DEVICE", "tpu")
    assert env_cli.collect()["default_device"].startswith("none: LPM_DEVICE='tpu'")
    monkeypatch.delenv("LPM_DEVICE")
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert env_cli.collect()["default_device"] == want

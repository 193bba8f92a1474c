"""The Ray Data runner on a local Ray instance gives what the local runner gives."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_ray_runner_matches_local(raw_scenes, prepped, tmp_path):
    pytest.importorskip("ray", reason="needs ray (the [ray] extra)")
    from lpm.data.prep.config import stage_config
    from lpm.data.prep.ray_runner import run_ray

    out, local = prepped
    summary = run_ray(raw_scenes, tmp_path / "ray", stage_config(), num_cpus=1)
    assert summary["clips"] == local["clips"] and not summary["errors"]
    strip = lambda p: [{k: v for k, v in json.loads(x).items()} for x in p.read_text().splitlines()]
    assert strip(tmp_path / "ray" / "manifest.jsonl") == strip(out / "manifest.jsonl")

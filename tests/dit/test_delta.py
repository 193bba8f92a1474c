"""Delta checkpoints: a fine-tuned model stored as a low-rank difference from its base."""

from __future__ import annotations

import json

import pytest
import torch

from lpm.models.dit.checkpoint import load_lpm_checkpoint, save_lpm_checkpoint
from lpm.models.dit.delta import save_delta_checkpoint
from lpm.models.dit.model import LPMTransformer
from tests.dit.test_model import tiny_cfg


def _pair(rank_of_change: int = 2):
    """A base model and a fine-tuned copy: every changed matrix moves by a rank-2 matrix, one
    bias moves freely, and the rest is untouched."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    base = LPMTransformer(cfg)
    tuned = LPMTransformer(cfg.replace(name="tuned", attention="chunk_causal"))
    tuned.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in tuned.blocks:
            w = block.self_attn.q.weight
            u = torch.randn(w.shape[0], rank_of_change, generator=g)
            v = torch.randn(rank_of_change, w.shape[1], generator=g)
            w += 0.01 * u @ v
        tuned.blocks[0].self_attn.q.bias += 0.1
    return base, tuned


def _max_diff(a: LPMTransformer, b: LPMTransformer) -> float:
    sb = b.state_dict()
    return max(float((v.float() - sb[k].float()).abs().max()) for k, v in a.state_dict().items())


def test_delta_round_trip_is_exact_at_sufficient_rank(tmp_path):
    base, tuned = _pair()
    save_lpm_checkpoint(base, tmp_path / "base")
    report = save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "delta", rank=2,
                                   dtype=torch.float32)  # fmt: skip
    assert report.low_rank == len(tuned.blocks) and report.full == 1
    assert report.unchanged == report.tensors - report.low_rank - report.full
    assert report.kept == pytest.approx(1.0, abs=1e-4)
    spec = json.loads((tmp_path / "delta" / "delta.json").read_text())
    assert spec["base"] == "../base"  # relative, so the pair can move together
    loaded = load_lpm_checkpoint(tmp_path / "delta")
    assert loaded.cfg.attention == "chunk_causal" and loaded.cfg.name == "tuned"
    assert _max_diff(loaded, tuned) < 1e-5
    # the delta is much smaller than a full copy
    full = save_lpm_checkpoint(tuned, tmp_path / "full")
    assert report.bytes < 0.2 * (full / "model.safetensors").stat().st_size


def test_truncated_rank_loses_only_the_dropped_directions(tmp_path):
    base, tuned = _pair(rank_of_change=4)
    save_lpm_checkpoint(base, tmp_path / "base")
    r1 = save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "r1", rank=1)
    r4 = save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "r4", rank=4)
    assert r1.kept < 0.9 < 0.99 < r4.kept  # fp16 rounding of the delta only at rank 4
    assert _max_diff(load_lpm_checkpoint(tmp_path / "r4"), tuned) < 1e-4
    assert _max_diff(load_lpm_checkpoint(tmp_path / "r1"), tuned) > 1e-3


def test_rank_zero_keeps_every_difference_whole(tmp_path):
    base, tuned = _pair(rank_of_change=4)
    save_lpm_checkpoint(base, tmp_path / "base")
    report = save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "whole", rank=0)
    assert report.low_rank == 0 and report.full == len(tuned.blocks) + 1
    assert report.kept > 0.999  # fp16 rounding of the differences only
    assert _max_diff(load_lpm_checkpoint(tmp_path / "whole"), tuned) < 1e-4
    assert json.loads((tmp_path / "whole" / "delta.json").read_text())["rank"] == 0


def test_delta_errors_name_the_problem(tmp_path):
    base, tuned = _pair()
    save_lpm_checkpoint(base, tmp_path / "base")
    with pytest.raises(ValueError, match="rank"):
        save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "d0", rank=-1)
    other = LPMTransformer(tiny_cfg(dim=32, num_heads=2))
    save_lpm_checkpoint(other, tmp_path / "other")
    with pytest.raises(ValueError, match="does not match the model"):
        save_delta_checkpoint(tuned, tmp_path / "other", tmp_path / "d1", rank=2)
    save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "d2", rank=2)
    (tmp_path / "base" / "model.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_lpm_checkpoint(tmp_path / "d2")
    (tmp_path / "base").rename(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="base checkpoint"):
        load_lpm_checkpoint(tmp_path / "d2")


def test_a_changed_base_is_refused(tmp_path):
    base, tuned = _pair()
    save_lpm_checkpoint(base, tmp_path / "base")
    save_delta_checkpoint(tuned, tmp_path / "base", tmp_path / "delta", rank=2)
    spec = json.loads((tmp_path / "delta" / "delta.json").read_text())
    assert len(spec["base_fingerprint"]) == 32
    # the base trained further: same names and shapes, other weights
    with torch.no_grad():
        base.blocks[-1].ffn.fc1.weight.mul_(1.01)
    save_lpm_checkpoint(base, tmp_path / "base", overwrite=True)
    with pytest.raises(ValueError, match="another version of its base"):
        load_lpm_checkpoint(tmp_path / "delta")
    # a delta written before fingerprints existed loads against any base of the same shapes
    del spec["base_fingerprint"]
    (tmp_path / "delta" / "delta.json").write_text(json.dumps(spec))
    assert _max_diff(load_lpm_checkpoint(tmp_path / "delta"), tuned) > 0

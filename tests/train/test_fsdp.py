"""FSDP2 on 2 gloo ranks trains the same model as 1 process on the same global batch, also
when each rank runs its share in micro-batches (gradient accumulation under FSDP2)."""

from __future__ import annotations

import shutil

import pytest
from conftest import curve, final_weights, run_cli, train_args

#: Measured on CPU over the 24 steps of the tiny curriculum: losses within 2.2e-7 relative (half
#: the steps bit-identical), final weights within 4.3e-7 absolute. The residue is the order of
#: the gradient reduction (per-rank sums then reduce-scatter, versus one sum over the batch).
LOSS_RTOL = 1e-6
WEIGHT_ATOL = 1e-5


@pytest.mark.multiproc
@pytest.mark.parametrize("extra", [(), ("micro_batch_size=1",)], ids=["whole", "micro"])
def test_fsdp_two_ranks_matches_one_process(reference_run, tmp_path, extra):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "fsdp"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "train"]
    run_cli(cmd + train_args(out, *extra), timeout=240)
    one, two = curve(reference_run), curve(out)
    assert [r[:2] for r in one] == [r[:2] for r in two]  # same steps and stages
    for a, b in zip(one, two, strict=True):
        assert b[2] == pytest.approx(a[2], rel=LOSS_RTOL), f"step {a[0]}: loss {a[2]} vs {b[2]}"
        assert b[4] == a[4]  # learning rate
    for sub in ("model.safetensors", "ema/model.safetensors"):
        w1, w2 = final_weights(reference_run, sub), final_weights(out, sub)
        assert w1.keys() == w2.keys()
        worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
        assert worst <= WEIGHT_ATOL, f"{sub}: max |w1 - w2| = {worst:.3g}"

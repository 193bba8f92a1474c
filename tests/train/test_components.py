"""EMA, LR schedule, data order, conditioning, checkpoints and the run directory."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from lpm.parallel import DistInfo
from lpm.train import (
    EMA,
    StageSampler,
    SyntheticDataset,
    Trainer,
    action_repeats,
    apply_overrides,
    build_problem,
    collate,
    get_recipe,
    lr_factor,
)
from lpm.train.checkpoint import latest_checkpoint, list_checkpoints

SINGLE = DistInfo()


def tiny(*sets: str):
    return apply_overrides(get_recipe("test-tiny"), list(sets))


def test_ema_math():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9)
    expected = 1.0
    for value in (2.0, 4.0, 0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        d = min(0.9, (1 + ema.updates) / (10 + ema.updates))
        expected = d * expected + (1 - d) * value
        ema.update(model)
        assert ema.shadow[0][0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert ema.current_decay() == pytest.approx(14 / 23)  # still warming up after 13 updates
    ema.updates = 1000
    assert ema.current_decay() == 0.9
    state = ema.full_state_dict()
    other = EMA(model, decay=0.9)
    other.load_full_state_dict(state, ema.updates)
    assert torch.equal(state["weight"], ema.shadow[0])
    assert torch.equal(other.shadow[0], ema.shadow[0]) and other.updates == ema.updates


def test_lr_schedule_shape():
    kw = dict(warmup_steps=10, total_steps=110, min_ratio=0.1)
    lrs = [lr_factor(s, **kw) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # monotone decay
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert lr_factor(5, warmup_steps=0, total_steps=5, min_ratio=0.0) == pytest.approx(0.0)


def test_sampler_is_deterministic_rank_aware_and_resumable():
    recipe = tiny()
    data = SyntheticDataset(recipe.model_config(), size=40, latent_shape=(2, 4, 4), seed=1)
    stages = [("speak", "silence"), ("listen", "speak", "silence", "conversation")]
    whole = StageSampler(data, stages, global_batch=4, seed=3)
    ranks = [
        StageSampler(data, stages, global_batch=4, rank=r, world_size=2, seed=3) for r in (0, 1)
    ]
    seen = []
    for step in range(30):
        stage = 0 if step < 12 else 1
        batch = whole.next_indices(stage)
        assert ranks[0].next_indices(stage) + ranks[1].next_indices(stage) == batch
        assert all(data.category(i) in stages[stage] for i in batch)
        seen.append(batch)
        if step == 17:
            saved = whole.state_dict()
    resumed = StageSampler(data, stages, global_batch=4, seed=3)
    resumed.load_state_dict(saved)
    assert [resumed.next_indices(1) for _ in range(12)] == seen[18:]
    with pytest.raises(ValueError, match="divisible by the world size"):
        StageSampler(data, stages, global_batch=3, world_size=2)


def test_action_repeats_balance_rare_actions_in_the_sampler():
    actions = [{"nod"}] * 6 + [{"wave"}] * 3 + [{"nod", "shake_head"}] + [set()] * 2
    repeats = action_repeats(actions)
    # nod is shown by 7 clips, wave by 3 (7/3 -> 2), shake_head by 1 (7, capped at 4).
    assert repeats == [1] * 6 + [2] * 3 + [4] + [1] * 2
    assert action_repeats([set(), set()]) == [1, 1]
    data = SyntheticDataset(tiny().model_config(), size=12, latent_shape=(2, 4, 4), seed=1)
    allowed = tuple({data.category(i) for i in range(12)})
    sampler = StageSampler(data, [allowed], global_batch=2, seed=0, repeats=repeats)
    epoch = [i for _ in range(9) for i in sampler.next_indices(0)]  # 18 = 6 + 6 + 4 + 2
    assert sorted(epoch) == sorted(i for i, r in enumerate(repeats) for _ in range(r))
    with pytest.raises(ValueError, match="count >= 1"):
        StageSampler(data, [allowed], global_batch=4, repeats=[0] * 12)


def test_action_weights_draw_named_actions_more_often():
    actions = [{"nod"}] * 8 + [{"shake_head"}] * 4 + [{"turn_left"}] * 4 + [set()]
    # balance alone: 8/4 -> 2 for both rare actions; a weight of 2 on shake_head -> 4.
    assert action_repeats(actions) == [1] * 8 + [2] * 8 + [1]
    weighted = action_repeats(actions, weights={"shake_head": 2.0})
    assert weighted == [1] * 8 + [4] * 4 + [2] * 4 + [1]
    assert action_repeats(actions, most=3, weights={"shake_head": 2.0})[8] == 3
    # a weight below one may draw a common action no more than once, never zero times
    assert action_repeats(actions, weights={"nod": 0.1})[:8] == [1] * 8
    with pytest.raises(ValueError, match="no clip shows"):
        action_repeats(actions, weights={"wave": 2.0})
    with pytest.raises(ValueError, match="> 0"):
        action_repeats(actions, weights={"nod": 0.0})


def test_action_weights_set_from_the_command_line():
    recipe = tiny("balance_actions=true", "action_weights=shake_head:2,turn_left:1.5",
                  "balance_max_repeats=6")  # fmt: skip
    assert recipe.action_weights == {"shake_head": 2.0, "turn_left": 1.5}
    assert recipe.balance_max_repeats == 6
    assert tiny('action_weights={"wave": 3}').action_weights == {"wave": 3.0}
    with pytest.raises(ValueError, match="name:value"):
        tiny("action_weights=shake_head")
    with pytest.raises(ValueError, match="expected float"):
        tiny("action_weights=shake_head:lots")
    with pytest.raises(ValueError, match="must be > 0"):
        tiny("action_weights=shake_head:-1")
    with pytest.raises(ValueError, match="balance_max_repeats"):
        tiny("balance_max_repeats=0")


def test_synthetic_dataset_is_index_deterministic():
    cfg = tiny().model_config()
    a = SyntheticDataset(cfg, size=8, latent_shape=(2, 4, 4), seed=0)
    b = SyntheticDataset(cfg, size=8, latent_shape=(2, 4, 4), seed=0)
    s = a[5]
    assert torch.equal(s.latents, b[5].latents) and s.latents.shape == (16, 2, 4, 4)
    assert s.speak_audio.shape == (8, cfg.audio_dim) and s.text.shape == (
        cfg.text_len,
        cfg.text_dim,
    )
    assert not torch.equal(a[4].latents, s.latents)


def test_conditioning_follows_the_stage():
    recipe = tiny("text_drop_prob=0.5", "audio_drop_prob=0.5")
    data = SyntheticDataset(recipe.model_config(), size=64, latent_shape=(6, 4, 4), seed=0)
    batch = collate([data[i] for i in range(64)])
    speak, _, identity, long = recipe.stages
    p = build_problem(batch, recipe, speak, step=0)
    assert p.model_kwargs["listen_audio"] is None
    assert p.model_kwargs["references"].kinds == (("first_frame", 0),)
    assert p.loss_mask.all() and (p.sigma > 0).all()
    assert 16 < int(p.model_kwargs["drop_text"].sum()) < 48  # per-sample, about half
    assert torch.equal(build_problem(batch, recipe, speak, step=0).x_t, p.x_t)  # deterministic
    assert not torch.equal(build_problem(batch, recipe, speak, step=1).noise, p.noise)
    kinds = build_problem(batch, recipe, identity, step=3).model_kwargs["references"].kinds
    assert kinds[:2] == (("first_frame", 0), ("global", 0))
    q = build_problem(batch, recipe, long, step=0)
    assert q.model_kwargs["references"].kinds[0] == ("global", 0)
    n_ctx = (~q.loss_mask).sum(1)
    assert set(n_ctx.tolist()) <= {0, 2, 3, 4, 5} and (n_ctx == 0).any() and (n_ctx >= 2).any()
    assert torch.equal(q.sigma == 0, ~q.loss_mask)
    ctx = ~q.loss_mask
    assert torch.equal(q.x_t.permute(0, 2, 1, 3, 4)[ctx], q.x0.permute(0, 2, 1, 3, 4)[ctx])


def test_context_noise_noises_only_the_context_and_leaves_clean_stages_as_they_were():
    recipe = tiny()
    data = SyntheticDataset(recipe.model_config(), size=32, latent_shape=(6, 4, 4), seed=0)
    batch = collate([data[i] for i in range(32)])
    long = recipe.stages[3]
    clean = build_problem(batch, recipe, long, step=0)
    noisy_stage = dataclasses.replace(long, context_noise=0.2)
    q = build_problem(batch, recipe, noisy_stage, step=0)
    ctx = ~q.loss_mask
    assert torch.equal(q.loss_mask, clean.loss_mask)  # same context lengths, no loss on them
    assert torch.equal(q.sigma[~ctx], clean.sigma[~ctx])  # the rest draws what it always drew
    assert torch.equal(q.noise, clean.noise)
    sig = q.sigma[ctx]
    assert (sig > 0).all() and (sig <= 0.2).all() and sig.std() > 0  # per sample, U(0, 0.2)
    frames = lambda t: t.permute(0, 2, 1, 3, 4)[ctx]
    assert not torch.equal(frames(q.x_t), frames(q.x0))
    assert torch.equal(build_problem(batch, recipe, noisy_stage, step=0).sigma, q.sigma)
    with pytest.raises(ValueError, match="context_noise"):
        dataclasses.replace(long, context_noise=1.0)


def test_run_dir_metrics_plots_and_checkpoint_round_trip(tmp_path):
    recipe = tiny("steps=6", "checkpoint_every=3", "keep_checkpoints=1")
    run = tmp_path / "run"
    trainer = Trainer(recipe, run, dist_info=SINGLE, progress=False)
    result = trainer.fit()
    assert result.steps == 6 and math.isfinite(result.final_loss)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"loss", "lr", "grad_norm", "stage", "steps_per_s"} <= set(records[0])
    for name in ("loss.png", "lr.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((run / "run.json").read_text())
    assert meta["world_size"] == 1 and "git_revision" in meta
    assert json.loads((run / "recipe.json").read_text())["name"] == "test-tiny"
    assert [p.name for p in list_checkpoints(run)] == ["step-00000006"]  # keep_checkpoints=1

    rng_at_save = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    resumed = Trainer(recipe, run, dist_info=SINGLE, progress=False, resume=True)
    assert torch.equal(torch.get_rng_state(), rng_at_save[0])
    assert (np.random.get_state()[1] == rng_at_save[1]).all() and random.getstate() == rng_at_save[
        2
    ]
    assert resumed.step == 6 and resumed.sampler.state_dict() == trainer.sampler.state_dict()
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(trainer.ema.shadow, resumed.ema.shadow, strict=True):
        assert torch.equal(a, b)
    assert resumed.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()
    with pytest.raises(ValueError, match="--resume"):
        Trainer(recipe, run, dist_info=SINGLE, progress=False)
    assert latest_checkpoint(run).name == "step-00000006"
    done = resumed.fit()  # already at its last step: the loss it ended on, nothing trained
    assert done.steps == 6 and done.final_loss == result.final_loss
    other = tiny("steps=6", "checkpoint_every=3", "keep_checkpoints=1", "lr=0.5", "seed=3")
    with pytest.raises(ValueError, match=r"another recipe.*lr: .* -> 0\.5; seed: 0 -> 3"):
        Trainer(other, run, dist_info=SINGLE, progress=False, resume=True)
    saved = (run / "recipe.json").read_text()
    longer = tiny("steps=8", "checkpoint_every=4", "keep_checkpoints=1")  # may change on resume
    assert Trainer(longer, run, dist_info=SINGLE, progress=False, resume=True).fit().steps == 8
    assert (
        json.loads(saved)["steps"] == 6
        and json.loads((run / "recipe.json").read_text())["steps"] == 8
    )


def test_partial_checkpoints_are_ignored(tmp_path):
    (tmp_path / "checkpoints" / ".step-00000009.partial").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-00000010").mkdir()  # no trainer.json: incomplete
    assert latest_checkpoint(tmp_path) is None


def test_activation_checkpointing_keeps_names_and_gradients():
    from lpm.models.dit.model import LPMTransformer
    from lpm.parallel import parallelize

    recipe = tiny()
    cfg = recipe.model_config()
    data = SyntheticDataset(cfg, size=8, latent_shape=(6, 4, 4), seed=0)
    problem = build_problem(collate([data[i] for i in range(2)]), recipe, recipe.stages[2], step=0)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LPMTransformer(cfg)
        names = [n for n, _ in model.named_parameters()]
        parallelize(model, fsdp=False, activation_checkpointing=checkpointing, compile=False,
                    mixed_precision=None)  # fmt: skip
        assert [n for n, _ in model.named_parameters()] == names
        model(problem.x_t, problem.timestep, **problem.model_kwargs).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_motion_weights_favour_moving_positions_and_keep_the_loss_scale():
    from lpm.diffusion import flow_matching_loss
    from lpm.train.conditioning import motion_weights

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 1, 6, 6, generator=g).expand(2, 4, 5, 6, 6).clone()  # static clip
    x0[:, :, :, 2, 3] += torch.randn(2, 4, 5, generator=g)  # one moving "mouth" position
    w = motion_weights(x0, 3.0)
    assert w.shape == (2, 1, 5, 6, 6)
    torch.testing.assert_close(w.mean(dim=(2, 3, 4)), torch.ones(2, 1))
    assert (w[:, :, :, 2, 3].mean() > 3 * w[:, :, :, 0, 0].mean()).item()
    uniform = motion_weights(torch.randn(1, 4, 1, 3, 3).expand(1, 4, 3, 3, 3), 3.0)
    torch.testing.assert_close(uniform, torch.ones_like(uniform), atol=1e-3, rtol=0)
    # The per-position weight multiplies the squared error where it applies.
    v = torch.zeros_like(x0)
    noise = torch.zeros_like(x0)
    err = (x0 * 1.0).square()  # velocity target is noise - x0 = -x0
    expected = (err * w).mean(dim=(1, 2, 3, 4))
    got = flow_matching_loss(v, x0, noise, weight=w, reduction="none")
    torch.testing.assert_close(got, expected)


def test_motion_weight_recipe_field_reaches_the_problem():
    from lpm.train.conditioning import motion_weights

    data = SyntheticDataset(tiny().model_config(), size=4, latent_shape=(6, 4, 4), seed=0)
    batch = collate([data[i] for i in range(4)])
    speak = tiny().stages[0]
    assert build_problem(batch, tiny(), speak, step=0).loss_weight is None
    p = build_problem(batch, tiny("motion_weight=2"), speak, step=0)
    torch.testing.assert_close(p.loss_weight, motion_weights(p.x0, 2.0))
    with pytest.raises(ValueError, match="motion_weight"):
        tiny("motion_weight=-1")


def test_cue_weight_and_cue_learning_rate():
    from lpm.models.dit.model import TextCues
    from lpm.train.schedule import build_optimizer

    data = SyntheticDataset(tiny().model_config(), size=4, latent_shape=(6, 4, 4), seed=0)
    batch = collate([data[i] for i in range(4)])
    speak = tiny().stages[0]
    index = torch.full((4, 6), -1)
    index[0, 2:4] = 0
    batch.cues = TextCues(torch.randn(4, 1, 3, 16), torch.ones(4, 1, 3, dtype=torch.bool), index)
    p = build_problem(batch, tiny("cue_weight=3"), speak, step=0)
    w = p.loss_weight  # (B, 1, F, 1, 1): cued frames 4x the others, mean 1 per sample
    torch.testing.assert_close(w.mean(dim=(2, 3, 4)).flatten(), torch.ones(4))
    assert w[0, 0, 2, 0, 0] == pytest.approx(4 * w[0, 0, 0, 0, 0].item())
    torch.testing.assert_close(w[1:], torch.ones_like(w[1:]))
    assert p.model_kwargs["cues"] is batch.cues
    with pytest.raises(ValueError, match="cue_weight"):
        tiny("cue_weight=-1")
    recipe = tiny("model.text_cues=true", "cue_lr_scale=10", "lr=1e-3")
    from lpm.models.dit.model import LPMTransformer

    model = LPMTransformer(recipe.model_config())
    opt, _ = build_optimizer(model, recipe)
    cue_params = {id(q) for n, q in model.named_parameters() if n.startswith("cue_")}
    for group in opt.param_groups:
        is_cue = {id(q) in cue_params for q in group["params"]}
        assert len(is_cue) == 1
        assert group["initial_lr"] == pytest.approx(1e-2 if is_cue.pop() else 1e-3)


def test_init_starts_from_the_weights_of_a_run_and_rejects_other_models(tmp_path):
    from lpm.distill.models import resolve_checkpoint
    from lpm.models.dit.checkpoint import load_lpm_checkpoint

    source = tmp_path / "source"
    Trainer(tiny("steps=2", "seed=1"), source, dist_info=SINGLE, progress=False).fit()
    start = load_lpm_checkpoint(resolve_checkpoint(source)).state_dict()  # its EMA weights
    tuned = Trainer(tiny("steps=2", f"init={source}"), tmp_path / "tuned", dist_info=SINGLE,
                    progress=False)  # fmt: skip
    for name, value in tuned.model.state_dict().items():
        assert torch.equal(value, start[name]), name
    fresh = Trainer(tiny("steps=2"), tmp_path / "fresh", dist_info=SINGLE, progress=False)
    assert any(not torch.equal(v, start[k]) for k, v in fresh.model.state_dict().items())
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(tiny("steps=2", f"init={source}", "model.dim=48", "model.num_heads=3"),
                tmp_path / "wide", dist_info=SINGLE, progress=False)  # fmt: skip
    # latent channels added (a widened VAE): the old weights load into the wider embedding/head
    wide = Trainer(tiny("steps=2", f"init={source}", "model.in_channels=20",
                        "model.out_channels=20"), tmp_path / "wide20", dist_info=SINGLE,
                   progress=False)  # fmt: skip
    embed = wide.model.state_dict()["patch_embed.weight"]
    assert torch.equal(embed[:, :16], start["patch_embed.weight"]) and not embed[:, 16:].any()
    wide.fit()
    # ordered speak tokens added to a trained model: the new module starts fresh, the rest loads
    ordered = Trainer(tiny("steps=2", f"init={source}", "model.speak_tokens_per_latent=2"),
                      tmp_path / "ordered", dist_info=SINGLE, progress=False)  # fmt: skip
    state = ordered.model.state_dict()
    assert any(k.startswith("speak_embed.") for k in state)
    for name, value in start.items():
        assert torch.equal(state[name], value), name


def test_trainable_freezes_the_rest_and_the_ema_checkpoint_stays_complete(tmp_path):
    from lpm.distill.models import resolve_checkpoint
    from lpm.models.dit.checkpoint import load_lpm_checkpoint

    source = tmp_path / "source"
    Trainer(tiny("steps=1", "seed=2"), source, dist_info=SINGLE, progress=False).fit()
    start = load_lpm_checkpoint(resolve_checkpoint(source)).state_dict()
    run = tmp_path / "audio"
    Trainer(tiny("steps=3", f"init={source}", "trainable=audio", "lr=1e-2"), run,
            dist_info=SINGLE, progress=False).fit()  # fmt: skip
    for sub in ("", "ema"):  # the model and its EMA are both whole checkpoints
        tuned = load_lpm_checkpoint(latest_checkpoint(run) / sub).state_dict()
        assert set(tuned) == set(start)
        moved = {k for k in tuned if not torch.equal(tuned[k], start[k])}
        assert moved and all("audio" in k for k in moved), sorted(moved)[:5]
    with pytest.raises(ValueError, match="matches no parameter"):
        Trainer(tiny("steps=1", "trainable=^nothing"), tmp_path / "x", dist_info=SINGLE,
                progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="not a regular expression"):
        tiny("trainable=(")


@pytest.mark.gpu
def test_a_run_on_a_gpu_trains_in_bf16_checkpoints_and_resumes(tmp_path):
    """`lpm train` on CUDA: bf16 autocast, fp32 weights in the checkpoint, an exact resume."""
    gpu = DistInfo(device=torch.device("cuda", 0))
    recipe = tiny("steps=4", "checkpoint_every=2")
    full = Trainer(recipe, tmp_path / "full", dist_info=gpu, progress=False)
    assert full.bf16
    result = full.fit()
    assert result.steps == 4 and math.isfinite(result.final_loss)
    half = Trainer(tiny("steps=2", "checkpoint_every=2"), tmp_path / "half", dist_info=gpu,
                   progress=False)  # fmt: skip
    half.fit()
    resumed = Trainer(recipe, tmp_path / "half", dist_info=gpu, progress=False, resume=True)
    resumed.fit()
    losses = lambda run: [json.loads(x)["loss"] for x in (run / "metrics.jsonl").open()]  # noqa: E731
    assert losses(tmp_path / "half") == pytest.approx(losses(tmp_path / "full"), rel=1e-3)
    assert all(p.dtype == torch.float32 for p in resumed.model.parameters())


def test_training_state_is_twenty_bytes_a_parameter_as_lpm_model_info_counts(tmp_path):
    """`lpm model info`'s training state (weights, gradients, AdamW, EMA) is what a trainer
    holds after a step: the tensors counted here, not a guess."""
    from lpm.models.dit.info import TRAINING_BYTES_PER_PARAM

    recipe = tiny("checkpoint_every=0")
    trainer = Trainer(recipe, tmp_path / "run", dist_info=SINGLE, progress=False)
    trainer.step = recipe.stages[0].steps  # the listen stage: every path has a gradient
    trainer.train_step()
    params = list(trainer.model.parameters())
    n = sum(p.numel() for p in params)
    held = sum(p.numel() * p.element_size() for p in params)
    held += sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    for state in trainer.optimizer.state.values():
        held += sum(t.numel() * t.element_size() for t in state.values() if t.ndim > 0)
    held += sum(t.numel() * t.element_size() for t in trainer.ema.shadow)
    assert held == TRAINING_BYTES_PER_PARAM * n

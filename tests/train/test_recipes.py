"""Recipes: registry, validation naming the field, and typed ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lpm.train.recipes import RECIPES, StageRecipe, TrainRecipe, apply_overrides, get_recipe


def test_registry_recipes_are_valid_and_round_trip():
    assert {"nano-base", "test-tiny"} <= set(RECIPES)
    for recipe in RECIPES.values():
        assert TrainRecipe.from_dict(json.loads(recipe.to_json())) == recipe
        recipe.model_config()
    base = get_recipe("nano-base")
    assert [s.name for s in base.stages] == ["speak", "listen", "identity", "long"]
    speak, listen, identity, long = base.stages
    assert not speak.listen_audio and set(speak.categories) == {"speak", "silence"}
    assert listen.listen_audio and listen.global_reference_prob == 0
    assert identity.global_reference_prob == 1 and identity.extra_reference_prob == pytest.approx(
        0.3
    )
    assert long.global_reference_prob == 1 and long.context_frames == (2, 5)
    assert not long.first_frame_reference and long.context_drop_prob > 0


def test_overrides_are_typed():
    r = apply_overrides(
        get_recipe("test-tiny"),
        ["lr=3e-4", "betas=0.8,0.95", "deterministic=yes", "steps=5", "latent_shape=(2,4,4)",
         "model.dim=48", "model.num_heads=3", "stages.long.context_drop_prob=0.5",
         "timestep_sampling=uniform"],
    )  # fmt: skip
    assert r.lr == 3e-4 and r.betas == (0.8, 0.95) and r.deterministic is True
    assert r.total_steps == 5 and r.latent_shape == (2, 4, 4)
    assert r.model_config().dim == 48 and r.stages[-1].context_drop_prob == 0.5
    assert r.timestep_sampling == "uniform"
    assert apply_overrides(r, ["steps=none"]).steps is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nonsense=1", "--set nonsense: unknown key"),
        ("lr", "expected key=value"),
        ("lr=fast", "--set lr='fast': expected float"),
        ("batch_size=2.5", "--set batch_size='2.5': expected int"),
        ("deterministic=perhaps", "expected a boolean"),
        ("mixed_precision=fp8", "must be one of ['bf16', 'none']"),
        ("betas=0.9", "expected 2 comma-separated values"),
        ("model.depth=3", "unknown ModelConfig field 'depth'"),
        ("stages.warp.steps=3", "no stage 'warp'"),
        ("stages.long.speed=3", "unknown stage field 'speed'"),
        ("lr=-1", "lr=-1.0 must be > 0"),
        ("text_drop_prob=1.5", "text_drop_prob=1.5 must be a probability"),
        ("steps=1000", "steps=1000 must be in [1, 24]"),
        ("model.num_heads=5", "num_heads=5"),
        ("stages.speak.context_frames=3,1", "context_frames=(3, 1)"),
        ("name=x", "unknown key"),
    ],
)
def test_bad_overrides_name_the_field(item, message):
    with pytest.raises(ValueError) as err:
        apply_overrides(get_recipe("test-tiny"), [item])
    assert message in str(err.value)


def test_validation_errors():
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="stages must hold at least one"):
        TrainRecipe(name="x")
    stage = StageRecipe(name="a", steps=1)
    with pytest.raises(ValueError, match="duplicate names"):
        TrainRecipe(name="x", stages=(stage, stage))
    with pytest.raises(ValueError, match="categories"):
        StageRecipe(name="a", steps=1, categories=("dance",))
    with pytest.raises(ValueError, match="unknown model config"):
        TrainRecipe(name="x", model="lpm-99b", stages=(stage,))
    r = TrainRecipe(name="x", stages=(stage, dataclasses.replace(stage, name="b", steps=2)))
    assert [r.stage_at(i)[1].name for i in range(3)] == ["a", "b", "b"]
    with pytest.raises(ValueError, match="past the curriculum"):
        r.stage_at(3)

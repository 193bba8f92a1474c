import pytest
import torch

from lpm.diffusion.guidance import (
    GuidanceLevel,
    GuidedModel,
    combine_guidance,
    drop_conditions,
    guidance_coefficients,
    needed_passes,
    text_audio_guidance,
)
from lpm.diffusion.samplers import unipc_sample
from lpm.diffusion.schedules import flow_sigmas

B = 3


class FakeModel:
    """Velocity whose parts depend on which conditions are kept, recording each forward."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, conditions):
        self.batches.append(x.shape[0])
        view = lambda t: t.view(-1, *([1] * (x.ndim - 1)))  # noqa: E731
        keep = {name: view((~c["drop"]).to(x.dtype)) for name, c in conditions.items()}
        text = view(conditions["text"]["emb"].sum(-1)) * keep["text"]
        audio = view(conditions["audio"]["feat"].mean((-1, -2))) * keep["audio"]
        ref = view(conditions["ref"]["latent"].sum(-1)) * keep["ref"]
        level = view(sigma.reshape(sigma.shape[0], -1).mean(-1))
        return 0.1 * x + level + text + 2.0 * audio * (1.0 + text) + ref


@pytest.fixture
def conditions():
    g = torch.Generator().manual_seed(0)
    return {
        "text": {"emb": torch.randn(B, 8, generator=g)},
        "audio": {"feat": torch.randn(B, 5, 4, generator=g)},
        "ref": {"latent": torch.randn(B, 6, generator=g), "drop": torch.tensor([0, 1, 0]).bool()},
    }


def levels(text_scale, audio_scale):
    return [
        GuidanceLevel(name="text", keys=("text",), scale=text_scale),
        GuidanceLevel(name="audio", keys=("audio",), scale=audio_scale),
    ]


def test_coefficients_and_passes():
    assert guidance_coefficients([5.0, 4.0]) == (-4.0, 1.0, 4.0)
    assert sum(guidance_coefficients([7.5, 2.5, 3.0])) == pytest.approx(1.0)
    assert needed_passes([5.0, 4.0]) == (0, 1, 2)
    assert needed_passes([1.0, 0.0]) == (1,)  # text only, no guidance
    assert needed_passes([1.0, 1.0]) == (2,)  # fully conditional, no guidance
    assert needed_passes([5.0, 0.0]) == (0, 1)  # text guidance, audio ignored
    assert needed_passes([4.0, 4.0]) == (0, 2)  # one joint scale: plain two-pass CFG
    assert needed_passes([0.0, 0.0]) == (0,)


def test_text_audio_formula():
    g = torch.Generator().manual_seed(1)
    vu, vt, vta = (torch.randn(2, 3, generator=g) for _ in range(3))
    out = text_audio_guidance(vu, vt, vta, 5.0, 3.5)
    torch.testing.assert_close(out, vu + 5.0 * (vt - vu) + 3.5 * (vta - vt))
    assert torch.equal(text_audio_guidance(None, vt, None, 1.0, 0.0), vt)
    with pytest.raises(ValueError, match="lacks passes"):
        combine_guidance({1: vt}, [5.0, 0.0])


def test_tensor_scale_guides_only_where_it_differs_from_one():
    g = torch.Generator().manual_seed(2)
    vu, vt, vta = (torch.randn(2, 4, generator=g) for _ in range(3))
    per_column = torch.tensor([4.0, 1.0, 1.0, 4.0])
    out = combine_guidance({0: vu, 1: vt, 2: vta}, [per_column, 2.0])
    torch.testing.assert_close(out, vu + per_column * (vt - vu) + 2.0 * (vta - vt))
    torch.testing.assert_close(out[:, 1], vt[:, 1] + 2.0 * (vta - vt)[:, 1])
    assert needed_passes([torch.ones(4), 1.0]) == (2,)  # scale 1 everywhere: one pass
    assert needed_passes([torch.tensor([1.0, 3.0]), 1.0]) == (0, 1, 2)


def test_drop_conditions_ors_into_existing_masks(conditions):
    out = drop_conditions(conditions, ["text"], B)
    assert out["text"]["drop"].tolist() == [True] * B
    assert out["audio"]["drop"].tolist() == [False] * B
    assert out["ref"]["drop"].tolist() == [False, True, False]
    assert out["text"]["emb"] is conditions["text"]["emb"]
    assert "drop" not in conditions["text"]  # input untouched
    with pytest.raises(ValueError, match="drop must have shape"):
        drop_conditions(conditions, [], B + 1)


@pytest.mark.parametrize("batch_passes", [True, False])
def test_guided_model_matches_the_formula(conditions, batch_passes):
    x = torch.randn(B, 4, 2, 2, 2, generator=torch.Generator().manual_seed(2))
    sigma = torch.full((B,), 0.7)
    model = FakeModel()
    guided = GuidedModel(model, conditions, levels(5.0, 3.0), batch_passes=batch_passes)
    v = guided(x, sigma)
    plain = FakeModel()
    passes = [plain(x, sigma, guided.pass_conditions(k, B)) for k in range(3)]
    torch.testing.assert_close(v, text_audio_guidance(*passes, 5.0, 3.0))
    assert model.batches == ([3 * B] if batch_passes else [B, B, B])
    # the unconditional pass drops text and audio but keeps the reference as given
    uncond = guided.pass_conditions(0, B)
    assert uncond["text"]["drop"].all() and uncond["audio"]["drop"].all()
    assert uncond["ref"]["drop"].tolist() == [False, True, False]


def test_scale_one_and_zero_audio_is_the_text_conditional_prediction(conditions):
    x = torch.randn(B, 4, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    sigma = torch.rand(B, 2, generator=torch.Generator().manual_seed(4))  # per-frame sigma
    model = FakeModel()
    v = GuidedModel(model, conditions, levels(1.0, 0.0))(x, sigma)
    assert model.batches == [B]  # a single pass
    expected = FakeModel()(x, sigma, drop_conditions(conditions, ["audio"], B))
    assert torch.equal(v, expected)
    model = FakeModel()
    full = GuidedModel(model, conditions, levels(1.0, 1.0))(x, sigma)
    assert model.batches == [B]
    assert torch.equal(full, FakeModel()(x, sigma, drop_conditions(conditions, [], B)))


def test_zero_scales_skip_passes(conditions):
    x = torch.randn(B, 4, 2, 2, 2)
    for scales, passes in [((5.0, 0.0), (0, 1)), ((4.0, 4.0), (0, 2)), ((1.0, 3.0), (1, 2))]:
        model = FakeModel()
        guided = GuidedModel(model, conditions, levels(*scales))
        guided(x, torch.full((B,), 0.5))
        assert guided.passes == passes
        assert model.batches == [len(passes) * B]


def test_guided_model_plugs_into_a_sampler(conditions):
    x = torch.randn(B, 4, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    guided = GuidedModel(FakeModel(), conditions, levels(4.0, 2.0))
    out = unipc_sample(guided, x, flow_sigmas(4, 3.0))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_levels_validate(conditions):
    with pytest.raises(ValueError, match="two levels"):
        GuidedModel(
            FakeModel(),
            conditions,
            [
                GuidanceLevel(name="a", keys=("text",), scale=2.0),
                GuidanceLevel(name="b", keys=("text", "audio"), scale=2.0),
            ],
        )
    with pytest.raises(ValueError, match="keys"):
        GuidanceLevel(name="empty", keys=(), scale=1.0)

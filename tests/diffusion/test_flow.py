import pytest
import torch

from lpm.diffusion.flow import (
    add_noise,
    expand_sigma,
    flow_matching_loss,
    noise_from_velocity,
    renoise,
    velocity_from_x0,
    velocity_target,
    x0_from_velocity,
)

B, C, F, H, W = 3, 4, 5, 2, 3


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, C, F, H, W, generator=g, dtype=torch.float64)
    noise = torch.randn(B, C, F, H, W, generator=g, dtype=torch.float64)
    return x0, noise


@pytest.mark.parametrize(
    "sigma",
    [0.3, torch.tensor(0.7), torch.tensor([0.0, 0.5, 1.0]), torch.rand(B, F, dtype=torch.float64)],
    ids=["float", "0d", "per_sample", "per_frame"],
)
def test_add_noise_broadcasts_and_round_trips(latents, sigma):
    x0, noise = latents
    x_t = add_noise(x0, noise, sigma)
    s = torch.as_tensor(sigma, dtype=torch.float64)
    for b in range(B):
        for f in range(F):
            sv = s if s.ndim == 0 else s[b] if s.ndim == 1 else s[b, f]
            expected = (1 - sv) * x0[b, :, f] + sv * noise[b, :, f]
            torch.testing.assert_close(x_t[b, :, f], expected)
    v = velocity_target(x0, noise)
    torch.testing.assert_close(x0_from_velocity(x_t, v, sigma), x0)
    torch.testing.assert_close(noise_from_velocity(x_t, v, sigma), noise)


def test_velocity_from_x0_inverts_x0_from_velocity(latents):
    x0, noise = latents
    sigma = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    x_t = add_noise(x0, noise, sigma)
    torch.testing.assert_close(velocity_from_x0(x_t, x0, sigma), velocity_target(x0, noise))


def test_expand_sigma_validates(latents):
    x0, _ = latents
    with pytest.raises(ValueError, match="batch"):
        expand_sigma(torch.zeros(B + 1), x0)
    with pytest.raises(ValueError, match="per-frame"):
        expand_sigma(torch.zeros(B, F + 1), x0)
    with pytest.raises(ValueError, match="sigma must be"):
        expand_sigma(torch.zeros(B, F, 1), x0)
    with pytest.raises(ValueError, match="noise shape"):
        add_noise(x0, x0[:, :1], 0.5)


def test_renoise_is_seeded_and_matches_add_noise(latents):
    x0, _ = latents
    sigma = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    a = renoise(x0, sigma, torch.Generator().manual_seed(7))
    b = renoise(x0, sigma, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=x0.dtype)
    torch.testing.assert_close(a, add_noise(x0, noise, sigma))
    torch.testing.assert_close(renoise(x0, 0.0), x0)


def test_loss_is_zero_for_the_target_and_matches_mse(latents):
    x0, noise = latents
    v = velocity_target(x0, noise)
    assert flow_matching_loss(v, x0, noise).item() == 0.0
    pred = v + 0.5
    assert flow_matching_loss(pred, x0, noise).item() == pytest.approx(0.25)
    assert flow_matching_loss(pred, x0, noise).dtype == torch.float32


def test_loss_mask_and_weight(latents):
    x0, noise = latents
    v = velocity_target(x0, noise)
    mask = torch.ones(B, F, dtype=torch.bool)
    mask[:, 0] = False  # a clean context frame carries no target
    pred = v.clone()
    pred[:, :, 0] += 10.0  # error only in the masked frame
    assert flow_matching_loss(pred, x0, noise, mask=mask).item() == 0.0
    pred[:, :, 1] += 1.0
    assert flow_matching_loss(pred, x0, noise, mask=mask).item() == pytest.approx(1 / (F - 1))
    weight = torch.tensor([1.0, 2.0, 3.0])
    per_sample = flow_matching_loss(pred, x0, noise, mask=mask, weight=weight, reduction="none")
    assert per_sample.shape == (B,)
    torch.testing.assert_close(per_sample, weight / (F - 1))
    frame_weight = torch.zeros(B, F)
    assert flow_matching_loss(pred, x0, noise, weight=frame_weight).item() == 0.0
    empty = torch.zeros(B, F, dtype=torch.bool)
    assert flow_matching_loss(pred, x0, noise, mask=empty).item() == 0.0


def test_loss_validates(latents):
    x0, noise = latents
    with pytest.raises(ValueError, match="v_pred"):
        flow_matching_loss(x0[:, :1], x0, noise)
    with pytest.raises(ValueError, match="reduction"):
        flow_matching_loss(x0, x0, noise, reduction="sum")

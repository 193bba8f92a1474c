import pytest
import torch

from lpm.diffusion.schedules import (
    few_step_sigmas,
    flow_sigmas,
    sample_training_sigmas,
    shift_sigma,
    sigma_to_timestep,
    timestep_to_sigma,
    unshift_sigma,
)


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 5.0, 12.0])
def test_shift_is_monotonic_fixes_endpoints_and_inverts(shift):
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    shifted = shift_sigma(s, shift)
    assert (shifted[1:] > shifted[:-1]).all()
    assert shifted[0] == 0.0 and shifted[-1] == 1.0
    torch.testing.assert_close(unshift_sigma(shifted, shift), s)
    if shift > 1:
        assert (shifted[1:-1] > s[1:-1]).all()


def test_shift_identity_and_float_input():
    s = torch.rand(10, dtype=torch.float64)
    torch.testing.assert_close(shift_sigma(s, 1.0), s)
    assert shift_sigma(0.5, 5.0) == pytest.approx(5 * 0.5 / (1 + 4 * 0.5))
    with pytest.raises(ValueError, match="shift"):
        shift_sigma(0.5, 0.0)


def test_timestep_conversion_round_trips():
    s = torch.tensor([0.0, 0.25, 0.999, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sigma_to_timestep(s), s * 1000)
    torch.testing.assert_close(timestep_to_sigma(sigma_to_timestep(s)), s)
    assert timestep_to_sigma(500.0, num_train_timesteps=500) == 1.0


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("num_steps", [1, 4, 50])
def test_flow_sigmas_decrease_from_one_to_zero(num_steps, shift):
    s = flow_sigmas(num_steps, shift)
    assert s.shape == (num_steps + 1,)
    assert s[0] == 1.0 and s[-1] == 0.0
    assert (s[1:] < s[:-1]).all()
    assert flow_sigmas(num_steps, shift, sigma_min=1e-3)[-1] == 0.0


def test_flow_sigmas_validates():
    with pytest.raises(ValueError, match="num_steps"):
        flow_sigmas(0)
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sigmas(4, sigma_max=1.5)
    with pytest.raises(ValueError, match="sigma_min"):
        flow_sigmas(4, sigma_min=1.0)


def test_few_step_sigmas_warps_timesteps_and_ends_at_zero():
    s = few_step_sigmas([1000, 750, 500, 250], shift=5.0)
    expected = shift_sigma(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64), 5.0)
    torch.testing.assert_close(s[:-1], expected)
    assert s[-1] == 0.0
    with pytest.raises(ValueError, match="decreasing"):
        few_step_sigmas([500, 750])
    with pytest.raises(ValueError, match="timesteps"):
        few_step_sigmas([1200, 10])
    with pytest.raises(ValueError, match="empty"):
        few_step_sigmas([])


@pytest.mark.parametrize("method", ["uniform", "logit_normal"])
def test_training_sigmas_are_seeded_and_in_range(method):
    draw = lambda: sample_training_sigmas(  # noqa: E731
        (64, 5), torch.Generator().manual_seed(3), method=method, shift=3.0, sigma_min=0.1
    )
    a, b = draw(), draw()
    assert a.shape == (64, 5) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a >= shift_sigma(0.1, 3.0) - 1e-6).all() and (a <= 1.0).all()


def test_training_sigma_distributions():
    g = torch.Generator().manual_seed(0)
    u = sample_training_sigmas(200_000, g, method="uniform", dtype=torch.float64)
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    ln = sample_training_sigmas(200_000, g, method="logit_normal", dtype=torch.float64)
    assert ln.median().item() == pytest.approx(0.5, abs=0.005)
    assert ln.std().item() < u.std().item()  # logit-normal concentrates on mid levels
    sh = sample_training_sigmas(200_000, g, method="logit_normal", shift=3.0, dtype=torch.float64)
    assert sh.median().item() == pytest.approx(shift_sigma(0.5, 3.0), abs=0.005)


def test_training_sigmas_validate():
    with pytest.raises(ValueError, match="method"):
        sample_training_sigmas(4, method="cosine")
    with pytest.raises(ValueError, match="sigma_min"):
        sample_training_sigmas(4, sigma_min=0.5, sigma_max=0.5)
    with pytest.raises(ValueError, match="logit_std"):
        sample_training_sigmas(4, logit_std=0.0)

import pytest
import torch
from analytic_fields import gaussian_velocity, mixture_quantile_map, mixture_velocity

from lpm.diffusion.samplers import euler_sample, few_step_sample, sample, unipc_sample
from lpm.diffusion.schedules import few_step_sigmas, flow_sigmas

MEAN, STD = 1.5, 0.5
MIX = ([0.3, 0.7], [-2.0, 1.5], [0.4, 0.6])


@pytest.fixture(scope="module")
def z():
    return torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_euler_many_steps_reaches_the_gaussian(z):
    out = euler_sample(gaussian_velocity(MEAN, STD), z, flow_sigmas(200))
    assert (out - (MEAN + STD * z)).abs().max().item() < 0.02
    assert out.mean().item() == pytest.approx(MEAN, abs=0.03)  # 4 standard errors
    assert out.var().item() == pytest.approx(STD**2, rel=0.1)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("num_steps", [10, 15, 20])
def test_unipc_beats_euler_on_the_gaussian(z, num_steps, shift):
    field, exact = gaussian_velocity(MEAN, STD), MEAN + STD * z
    sigmas = flow_sigmas(num_steps, shift)
    err_euler = (euler_sample(field, z, sigmas) - exact).abs().max().item()
    err_unipc = (unipc_sample(field, z, sigmas) - exact).abs().max().item()
    assert err_unipc < err_euler
    if shift == 1.0:
        assert err_unipc < 0.03


def test_unipc_converges_to_the_exact_mixture_transport(z):
    field, exact = mixture_velocity(*MIX), mixture_quantile_map(z, *MIX)
    out = unipc_sample(field, z, flow_sigmas(20))
    assert (out - exact).abs().mean().item() < 0.01
    assert (out - exact).abs().max().item() < 0.1
    assert ((out < 0) != (exact < 0)).sum().item() <= 2  # mixture weights preserved
    fine = unipc_sample(field, z, flow_sigmas(200))
    assert (fine - exact).abs().max().item() < 0.01
    order3 = unipc_sample(field, z, flow_sigmas(20), order=3)
    assert (order3 - exact).abs().mean().item() < 0.01


@pytest.mark.parametrize("num_steps", [10, 15, 20])
def test_unipc_beats_euler_on_the_mixture(z, num_steps):
    field, exact = mixture_velocity(*MIX), mixture_quantile_map(z, *MIX)
    for shift in (1.0, 3.0):
        sigmas = flow_sigmas(num_steps, shift)
        err_euler = (euler_sample(field, z, sigmas) - exact).abs().mean().item()
        err_unipc = (unipc_sample(field, z, sigmas) - exact).abs().mean().item()
        assert err_unipc < err_euler


def test_mixture_statistics_from_many_euler_steps():
    big = torch.randn(20_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = euler_sample(mixture_velocity(*MIX), big, flow_sigmas(200))
    left = out[out < -0.5]
    right = out[out > -0.5]
    # the split at -0.5 leaves < 0.1% of either component on the wrong side
    assert len(left) / len(out) == pytest.approx(0.3, abs=0.013)  # 4 standard errors
    assert left.mean().item() == pytest.approx(-2.0, abs=0.03)
    assert right.mean().item() == pytest.approx(1.5, abs=0.03)
    assert left.std().item() == pytest.approx(0.4, abs=0.03)
    assert right.std().item() == pytest.approx(0.6, abs=0.03)


def test_first_order_unipc_without_corrector_is_euler(z):
    field = mixture_velocity(*MIX)
    sigmas = flow_sigmas(12, 3.0, sigma_max=0.9)
    a = unipc_sample(field, z, sigmas, order=1, use_corrector=False)
    torch.testing.assert_close(a, euler_sample(field, z, sigmas))


@pytest.mark.parametrize(("num_steps", "shift"), [(8, 1.0), (12, 5.0), (20, 3.0)])
def test_unipc_matches_diffusers_step_by_step(z, num_steps, shift):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift
    )
    scheduler.set_timesteps(num_steps)
    scheduler.set_begin_index(0)
    # Same grid: diffusers stops the linspace at 1/1000 before appending 0 and starts 1e-6
    # below 1 (float32).
    ours = flow_sigmas(num_steps, shift, sigma_min=1e-3).clamp(max=1 - 1e-6)
    torch.testing.assert_close(scheduler.sigmas.double(), ours, rtol=0, atol=1e-6)

    field = mixture_velocity(*MIX)
    z = z.view(-1, 1)  # diffusers' UniPC einsum wants (B, C, ...)
    x, reference = z.clone(), []
    for i, t in enumerate(scheduler.timesteps):
        sigma_b = scheduler.sigmas[i].double().expand(x.shape[0])
        x = scheduler.step(field(x, sigma_b), t, x).prev_sample
        reference.append(x)
    steps = []
    unipc_sample(field, z, ours, callback=lambda i, n, x_next, x0: steps.append(x_next))
    assert len(steps) == len(reference) == num_steps
    for mine, theirs in zip(steps, reference, strict=True):
        # diffusers computes its coefficients in float32
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_samplers_are_deterministic_and_report_progress(solver):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 3, 2, 2, generator=g)
    calls, seen = [], []
    field = lambda x, s: (calls.append(s.clone()), 0.5 * x - 0.1)[1]  # noqa: E731
    cb = lambda i, n, x_next, x0: seen.append((i, n, x_next.shape, x0.shape))  # noqa: E731
    a = sample(field, x, flow_sigmas(6, 3.0), solver=solver, callback=cb)
    b = sample(field, x, flow_sigmas(6, 3.0), solver=solver)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(calls) == 12 and calls[0].shape == (2,) and calls[0].dtype == torch.float32
    assert [s[0] for s in seen] == list(range(6)) and seen[0][1] == 6
    assert seen[0][2] == x.shape


def test_few_step_sampler_renoises_predictions():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    sigmas = few_step_sigmas([1000, 750, 500, 250], shift=5.0)
    inputs = []

    def oracle(x, sigma_b):  # a perfect student: always predicts the target
        inputs.append((x.clone(), sigma_b[0].item()))
        return (x - target) / sigma_b.view(-1, 1, 1, 1, 1)

    noise = torch.randn(target.shape, generator=g, dtype=torch.float64)
    out = few_step_sample(oracle, noise, sigmas, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, target)
    assert [s for _, s in inputs] == pytest.approx(sigmas[:-1].tolist())
    # each later input is the target re-noised to its level with fresh noise
    draw = torch.Generator().manual_seed(9)
    for x, s in inputs[1:]:
        fresh = torch.randn(target.shape, generator=draw, dtype=torch.float64)
        torch.testing.assert_close(x, (1 - s) * target + s * fresh)
    again = few_step_sample(oracle, noise, sigmas, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out, again, rtol=0, atol=0)


def test_samplers_validate_arguments(z):
    field = gaussian_velocity(MEAN, STD)
    with pytest.raises(ValueError, match="decreasing"):
        euler_sample(field, z, [0.5, 0.8, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        unipc_sample(field, z, [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        few_step_sample(field, z, [1.5, 0.0])
    with pytest.raises(ValueError, match="order"):
        unipc_sample(field, z, flow_sigmas(4), order=4)
    with pytest.raises(ValueError, match="solver"):
        sample(field, z, flow_sigmas(4), solver="heun")
    with pytest.raises(ValueError, match="model_fn returned"):
        euler_sample(lambda x, s: x[:1], z, flow_sigmas(2))

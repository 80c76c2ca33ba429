import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar

from sdlearn.schedules import (add_noise, alphas_cumprod_from_betas, check_betas, cosine_betas, karras_sigmas,
                               linear_betas, make_schedule, scaled_linear_betas, sigmas_from_alphas_cumprod,
                               signal_to_noise, spaced_timesteps, velocity)


def test_beta_schedules_equal_diffusers():
    torch.testing.assert_close(linear_betas(1000), DDPMScheduler(beta_schedule="linear").betas, rtol=0, atol=0)
    torch.testing.assert_close(scaled_linear_betas(1000), DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).betas, rtol=0, atol=0)
    torch.testing.assert_close(cosine_betas(1000), betas_for_alpha_bar(1000), rtol=0, atol=0)


def test_alphas_cumprod_sigmas_and_snr_are_consistent():
    ac = alphas_cumprod_from_betas(linear_betas())
    assert torch.all(ac[1:] < ac[:-1]) and 0 < ac[-1] < 1e-4 and ac[0] == pytest.approx(1 - 1e-4)
    sigmas = sigmas_from_alphas_cumprod(ac)
    torch.testing.assert_close(signal_to_noise(ac), 1 / sigmas ** 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("timestep_spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 25, 50, 1000])
def test_spacings_equal_diffusers(timestep_spacing, steps):
    scheduler = DDPMScheduler(timestep_spacing=timestep_spacing)
    scheduler.set_timesteps(steps)
    ours = np.round(spaced_timesteps(steps, 1000, timestep_spacing=timestep_spacing)).astype(np.int64)
    np.testing.assert_array_equal(ours, scheduler.timesteps.numpy())


def test_add_noise_equals_diffusers_and_velocity_relation():
    scheduler = DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ours = add_noise(x0, noise, t, scheduler.alphas_cumprod)
    torch.testing.assert_close(ours, scheduler.add_noise(x0, noise, t), rtol=0, atol=1e-6)
    torch.testing.assert_close(velocity(x0, noise, t, scheduler.alphas_cumprod),
                               scheduler.get_velocity(x0, noise, t), rtol=0, atol=1e-6)


def test_closed_form_noising_matches_step_by_step_statistics():
    betas = linear_betas(1000)
    ac = alphas_cumprod_from_betas(betas)
    g = torch.Generator().manual_seed(0)
    x = torch.full((20000,), 0.7)
    for t in range(300):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps, one step at a time
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=g)
    expected_mean, expected_std = 0.7 * ac[299].sqrt(), (1 - ac[299]).sqrt()
    assert abs(x.mean() - expected_mean) < 0.01 and abs(x.std() - expected_std) < 0.01


def test_karras_sigmas_are_dense_near_the_minimum():
    sigmas = karras_sigmas(10, 0.03, 14.6)
    assert sigmas[0] == pytest.approx(14.6) and sigmas[-1] == pytest.approx(0.03)
    steps = -np.diff(sigmas)
    assert np.all(steps[1:] < steps[:-1])


@pytest.mark.parametrize("betas, match", [
    (torch.tensor([0.1, 1.0]), r"betas\[1\] = 1"),
    (torch.tensor([0.0, 0.1]), r"betas\[0\] = 0"),
    (torch.tensor([0.1, float("nan")]), "nan"),
])
def test_betas_outside_zero_one_are_clear_errors(betas, match):
    with pytest.raises(ValueError, match=match):
        check_betas(betas)
    with pytest.raises(ValueError, match="beta_start"):
        linear_betas(100, beta_start=0.5, beta_end=1.5)


def test_bad_timesteps_and_step_counts_are_clear_errors():
    ac = alphas_cumprod_from_betas(linear_betas())
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        add_noise(x, x, torch.tensor([0, 1000]), ac)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        add_noise(x, x, torch.tensor([-1, 3]), ac)
    with pytest.raises(TypeError, match="integers"):
        add_noise(x, x, torch.tensor([0.5, 3.0]), ac)
    with pytest.raises(ValueError, match="cannot exceed num_train_timesteps"):
        make_schedule(ac, 1001)
    with pytest.raises(ValueError, match="at least 1"):
        make_schedule(ac, 0)
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        make_schedule(ac, 10, timestep_spacing="uniform")


def test_make_schedule_records_its_spacing_and_starting_noise():
    ac = alphas_cumprod_from_betas(linear_betas())
    trailing = make_schedule(ac, 10, timestep_spacing="trailing")
    leading = make_schedule(ac, 10, timestep_spacing="leading", steps_offset=1)
    assert trailing.timestep_spacing == "trailing" and leading.timestep_spacing == "leading"
    assert trailing.timesteps[0] == 999 and leading.timesteps[0] == 901
    assert trailing.init_noise_sigma == pytest.approx(trailing.sigmas[0].item())            # diffusers' rule
    assert leading.init_noise_sigma == pytest.approx((leading.sigmas[0].item() ** 2 + 1) ** 0.5)


def test_karras_sigmas_can_start_below_the_schedules_largest_sigma():
    from sdlearn.schedules import make_betas

    alphas_cumprod = alphas_cumprod_from_betas(make_betas("squaredcos_cap_v2", 1000))
    table = sigmas_from_alphas_cumprod(alphas_cumprod)
    full = make_schedule(alphas_cumprod, 10, timestep_spacing="trailing", use_karras_sigmas=True)
    capped = make_schedule(alphas_cumprod, 10, timestep_spacing="trailing", use_karras_sigmas=True, sigma_max=80.0)
    assert full.sigmas[0].item() > 10_000                                  # the cosine schedule's first sigma
    expected = karras_sigmas(10, full.sigmas[-2].item(), 80.0)
    np.testing.assert_allclose(capped.sigmas[:-1].numpy(), expected, rtol=1e-6)
    assert capped.init_noise_sigma == pytest.approx(80.0)
    assert (capped.timesteps[:-1] > capped.timesteps[1:]).all() and capped.timesteps[0] < 999
    # each timestep's sigma, read back from the training table, is the Karras sigma it was made from
    sigma_at = np.interp(capped.timesteps.numpy(), np.arange(1000), table.numpy())
    np.testing.assert_allclose(sigma_at, expected, rtol=1e-3)
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        make_schedule(alphas_cumprod, 10, sigma_max=80.0)

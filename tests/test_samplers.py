"""Every sampler against its diffusers scheduler: same model, same start, same generator.

Tolerance: max abs difference <= 1e-5 at every step, float32, over up to 50 steps.
"""

import itertools

import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LMSDiscreteScheduler)

from sdlearn.schedules import make_betas, alphas_cumprod_from_betas, make_schedule
from sdlearn.samplers import (as_noise_model, sample_ddim, sample_ddpm, sample_euler, sample_euler_ancestral,
                              sample_heun, sample_lms)

TOL = 1e-5
BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}


class TinyNoiseModel(torch.nn.Module):
    """A fixed random network of (x, t): a convolution whose output also depends on t."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.mix = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        scale = torch.sin(t / 150.0).view(-1, 1, 1, 1)
        return 0.5 * torch.tanh(self.conv(x)) + 0.3 * scale * self.mix(x)


MODEL = TinyNoiseModel().eval()

SAMPLERS = {
    "ddpm": (DDPMScheduler, sample_ddpm),
    "ddim": (DDIMScheduler, sample_ddim),
    "euler": (EulerDiscreteScheduler, sample_euler),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, sample_euler_ancestral),
    "heun": (HeunDiscreteScheduler, sample_heun),
    "lms": (LMSDiscreteScheduler, sample_lms),
}


def diffusers_trajectory(name, scheduler, x, seed, step_kwargs):
    generator = torch.Generator().manual_seed(seed)
    trajectory, x0s = [], []
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        with torch.no_grad():
            output = MODEL(x_in, t)
        kwargs = dict(step_kwargs)
        if name not in ("heun", "lms"):
            kwargs["generator"] = generator
        result = scheduler.step(output, t, x, **kwargs)
        x = result.prev_sample
        if name == "heun" and not scheduler.state_in_first_order and t != scheduler.timesteps[-1]:
            continue  # the Euler half of a Heun step: not a completed step
        trajectory.append(x)
    return trajectory


def run_pair(name, beta_schedule, steps, spacing, prediction_type, scheduler_kwargs=None, sampler_kwargs=None,
             step_kwargs=None):
    scheduler_cls, sampler = SAMPLERS[name]
    beta_start, beta_end = BETAS[beta_schedule]
    config = dict(num_train_timesteps=1000, beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end,
                  prediction_type=prediction_type, timestep_spacing=spacing)
    if name in ("ddpm", "ddim"):
        config["clip_sample"] = False
    config.update(scheduler_kwargs or {})
    scheduler = scheduler_cls(**config)
    scheduler.set_timesteps(steps)

    alphas_cumprod = alphas_cumprod_from_betas(make_betas(beta_schedule, 1000, beta_start, beta_end))
    torch.testing.assert_close(alphas_cumprod, scheduler.alphas_cumprod, atol=0, rtol=0)
    schedule = make_schedule(alphas_cumprod, steps, spacing=spacing,
                             use_karras_sigmas=config.get("use_karras_sigmas", False))
    if name not in ("ddpm", "ddim"):  # DDPM and DDIM start from unit noise
        assert schedule.init_noise_sigma == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-6)

    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = noise * scheduler.init_noise_sigma
    reference = diffusers_trajectory(name, scheduler, x.clone(), seed=7, step_kwargs=step_kwargs or {})

    ours = []
    sampler(as_noise_model(MODEL), x.clone(), schedule, prediction_type=prediction_type,
            generator=torch.Generator().manual_seed(7), callback=lambda i, t, xi, x0: ours.append(xi),
            **(sampler_kwargs or {}))
    assert len(ours) == len(reference) == steps
    errors = [(a - b).abs().max().item() for a, b in zip(ours, reference)]
    assert max(errors) <= TOL, f"step {int(np.argmax(errors))}: max abs difference {max(errors):.2e}"
    return errors


CONFIGS = list(itertools.product(SAMPLERS, BETAS, [10, 25, 50], ["leading", "trailing", "linspace"],
                                 ["epsilon", "v_prediction"]))


@pytest.mark.parametrize("name, beta_schedule, steps, spacing, prediction_type", CONFIGS,
                         ids=["-".join(map(str, c)) for c in CONFIGS])
def test_trajectory_matches_diffusers(name, beta_schedule, steps, spacing, prediction_type):
    run_pair(name, beta_schedule, steps, spacing, prediction_type)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddpm_with_clipping_matches(spacing):
    run_pair("ddpm", "linear", 25, spacing, "epsilon", scheduler_kwargs={"clip_sample": True},
             sampler_kwargs={"clip_sample": True})


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_with_eta_matches(eta):
    run_pair("ddim", "scaled_linear", 25, "leading", "epsilon", scheduler_kwargs={"clip_sample": True},
             sampler_kwargs={"eta": eta, "clip_sample": True}, step_kwargs={"eta": eta})


@pytest.mark.parametrize("name", ["euler", "heun", "lms"])
def test_karras_sigmas_match(name):
    run_pair(name, "scaled_linear", 25, "linspace", "epsilon", scheduler_kwargs={"use_karras_sigmas": True})


def test_stable_diffusion_schedule_matches_the_published_table():
    """SD's schedule at 15 steps (seed 001): LMS timesteps and sigmas to 4 decimals."""
    alphas_cumprod = alphas_cumprod_from_betas(make_betas("scaled_linear", 1000, 0.00085, 0.012))
    schedule = make_schedule(alphas_cumprod, 15, spacing="linspace")
    expected_timesteps = [999.0000, 927.6429, 856.2857, 784.9286, 713.5714, 642.2143, 570.8571, 499.5000,
                          428.1429, 356.7857, 285.4286, 214.0714, 142.7143, 71.3571, 0.0000]
    expected_sigmas = [14.6146, 9.6826, 6.6780, 4.7746, 3.5221, 2.6666, 2.0606, 1.6156, 1.2768, 1.0097, 0.7913,
                       0.6056, 0.4397, 0.2780, 0.0292, 0.0000]
    np.testing.assert_allclose(schedule.timesteps.numpy(), expected_timesteps, atol=5e-5)
    np.testing.assert_allclose(schedule.sigmas.numpy(), expected_sigmas, atol=5e-5)


def test_generate_decodes_each_batch_for_latent_models():
    from sdlearn.samplers import generate

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
    calls = []

    def decode(z):
        calls.append(z.shape)
        return z.mean(1, keepdim=True).repeat_interleave(4, -1).repeat_interleave(4, -2)

    plain = generate(Zero(), 5, alphas_cumprod=alphas_cumprod, num_inference_steps=3, shape=(4, 8, 8), batch_size=2)
    images = generate(Zero(), 5, alphas_cumprod=alphas_cumprod, num_inference_steps=3, shape=(4, 8, 8), batch_size=2,
                      decode=decode)
    assert calls == [(2, 4, 8, 8), (2, 4, 8, 8), (1, 4, 8, 8)]
    assert images.shape == (5, 1, 32, 32)
    assert torch.allclose(images, decode(plain))

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
from sdlearn.samplers import (SAMPLERS as OURS, Step, as_noise_model, generate, sample_ddim, sample_ddpm,
                              sample_euler, sample_euler_ancestral, sample_heun, sample_lms)
from sdlearn.utils import randn_tensor

TOL = 1e-5
BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}


class TinyNoiseModel(torch.nn.Module):
    """A fixed random network of (x, t): a convolution whose output also depends on t.

    Its weights come from its own generator, so they do not depend on (or change) the global seed.
    """

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.mix = torch.nn.Conv2d(3, 3, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        scale = torch.sin(t / 150.0).view(-1, 1, 1, 1)
        return 0.5 * torch.tanh(self.conv(x)) + 0.3 * scale * self.mix(x)


MODEL = TinyNoiseModel().eval()


class Zero(torch.nn.Module):
    """A model that always predicts zero."""

    def forward(self, x, t):
        return torch.zeros_like(x)

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
    schedule = make_schedule(alphas_cumprod, steps, timestep_spacing=spacing,
                             use_karras_sigmas=config.get("use_karras_sigmas", False))
    if name not in ("ddpm", "ddim"):  # DDPM and DDIM start from unit noise
        assert schedule.init_noise_sigma == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-6)

    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = noise * scheduler.init_noise_sigma
    reference = diffusers_trajectory(name, scheduler, x.clone(), seed=7, step_kwargs=step_kwargs or {})

    seen = []
    sampler(as_noise_model(MODEL), x.clone(), schedule, prediction_type=prediction_type,
            generator=torch.Generator().manual_seed(7), callback=seen.append, **(sampler_kwargs or {}))
    assert len(seen) == len(reference) == steps
    assert [step.index for step in seen] == list(range(steps))
    timesteps = schedule.timesteps.round() if name in ("ddpm", "ddim") else schedule.timesteps   # DDPM, DDIM: integers
    assert [step.timestep for step in seen] == timesteps.tolist()
    errors = [(step.sample - b).abs().max().item() for step, b in zip(seen, reference)]
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
    schedule = make_schedule(alphas_cumprod, 15, timestep_spacing="linspace")
    expected_timesteps = [999.0000, 927.6429, 856.2857, 784.9286, 713.5714, 642.2143, 570.8571, 499.5000,
                          428.1429, 356.7857, 285.4286, 214.0714, 142.7143, 71.3571, 0.0000]
    expected_sigmas = [14.6146, 9.6826, 6.6780, 4.7746, 3.5221, 2.6666, 2.0606, 1.6156, 1.2768, 1.0097, 0.7913,
                       0.6056, 0.4397, 0.2780, 0.0292, 0.0000]
    np.testing.assert_allclose(schedule.timesteps.numpy(), expected_timesteps, atol=5e-5)
    np.testing.assert_allclose(schedule.sigmas.numpy(), expected_sigmas, atol=5e-5)


def test_generate_decodes_each_batch_for_latent_models():
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


@pytest.mark.parametrize("name", ["ddim", "lms"])
def test_callback_gets_a_step_with_the_sample_and_the_predicted_x0(name):
    """The Step of a deterministic sampler: the last sample is the result; pred_x0 is what the model implies."""
    alphas_cumprod = alphas_cumprod_from_betas(make_betas("linear", 1000, 1e-4, 0.02))
    schedule = make_schedule(alphas_cumprod, 10, timestep_spacing="trailing")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x = x if name == "ddim" else x * schedule.init_noise_sigma
    seen = []
    result = OURS[name](as_noise_model(MODEL), x, schedule, callback=seen.append)
    assert all(isinstance(step, Step) for step in seen) and len(seen) == 10
    assert torch.equal(seen[-1].sample, result)
    first = seen[0]
    with torch.no_grad():
        if name == "ddim":                                                    # from x_t and the noise, eq. 15
            a = alphas_cumprod[int(first.timestep)]
            expected = (x - (1 - a).sqrt() * MODEL(x, schedule.timesteps[:1])) / a.sqrt()
        else:                                                                 # x - sigma * eps, Karras' form
            sigma = schedule.sigmas[0]
            expected = x - sigma * MODEL(x / (sigma ** 2 + 1) ** 0.5, schedule.timesteps[:1])
    torch.testing.assert_close(first.pred_x0, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(first.timestep, int if name == "ddim" else float)


def test_generate_draws_every_batch_from_one_generator():
    """Batch by batch: the starting noise, then the sampler's own noise (DDPM), from the same generator."""
    alphas_cumprod = alphas_cumprod_from_betas(make_betas("linear", 1000, 1e-4, 0.02))
    settings = dict(alphas_cumprod=alphas_cumprod, sampler="ddpm", num_inference_steps=4, shape=(3, 8, 8),
                    batch_size=2)
    images = generate(MODEL, 5, **settings, generator=torch.Generator().manual_seed(3))

    generator = torch.Generator().manual_seed(3)
    schedule = make_schedule(alphas_cumprod, 4, timestep_spacing="trailing")
    expected = []
    for size in (2, 2, 1):
        x = torch.randn((size, 3, 8, 8), generator=generator)
        expected.append(sample_ddpm(as_noise_model(MODEL), x, schedule, generator=generator))
    torch.testing.assert_close(images, torch.cat(expected), rtol=0, atol=0)
    default = generate(MODEL, 5, **settings)                                  # None: a generator seeded with 0
    torch.testing.assert_close(default, generate(MODEL, 5, **settings, generator=torch.Generator().manual_seed(0)),
                               rtol=0, atol=0)
    assert not torch.allclose(default, images)
    with pytest.raises(TypeError, match=r"generator=torch.Generator\(\).manual_seed\(seed\)"):
        generate(MODEL, 5, **settings, seed=3)


def _record_randn_devices(monkeypatch):
    """Make torch.randn note the device it draws on."""
    devices, randn = [], torch.randn

    def recording(*args, **kwargs):
        devices.append(torch.device(kwargs.get("device") or "cpu"))
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", recording)
    return devices


def test_randn_tensor_draws_on_the_generators_device(monkeypatch):
    generator = torch.Generator().manual_seed(5)
    noise = randn_tensor((2, 3), generator, "cpu", torch.float64)
    assert noise.dtype == torch.float64
    torch.testing.assert_close(noise, torch.randn((2, 3), generator=torch.Generator().manual_seed(5),
                                                  dtype=torch.float64), rtol=0, atol=0)
    if torch.cuda.is_available():                      # a CPU generator with a GPU model: the same numbers, moved
        moved = randn_tensor((2, 3), torch.Generator().manual_seed(5), "cuda")
        assert moved.device.type == "cuda"
        torch.testing.assert_close(moved.cpu(), noise.float(), rtol=0, atol=0)
    devices = _record_randn_devices(monkeypatch)           # without a GPU: "meta" stands in for the model's device
    moved = randn_tensor((2, 3), torch.Generator().manual_seed(5), "meta")
    assert devices == [torch.device("cpu")] and moved.device.type == "meta"


def test_euler_ancestral_stays_finite_where_float32_rounding_makes_sigma_down_squared_negative():
    """Three trailing steps of the cosine schedule start at sigma ~ 20,000: there sigma_to^2 - sigma_up^2
    comes out slightly below 0 in float32 (-2.4e-7), and its square root was NaN."""
    ac = alphas_cumprod_from_betas(make_betas("squaredcos_cap_v2"))
    schedule = make_schedule(ac, 3, timestep_spacing="trailing")

    def model(x, t):
        return 0.1 * x

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * schedule.init_noise_sigma
    out = sample_euler_ancestral(model, x, schedule, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()

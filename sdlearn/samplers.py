"""Samplers: plain functions that turn noise into images with a noise-predicting model.

Every sampler has the same signature:

    sample_xxx(model, x, schedule, *, prediction_type="epsilon", generator=None, callback=None, ...)

- `model(x_in, t)` returns the network's prediction for the batch `x_in` at timesteps `t` (a
  tensor with one value per image): the noise (`prediction_type="epsilon"`) or the velocity
  ("v_prediction"). `as_noise_model` adapts a diffusers U-Net or any module to this;
  `sdlearn.guidance.GuidedNoiseModel` adapts a text-conditioned U-Net, prompts and a guidance
  scale (classifier-free guidance on the doubled batch), so the same samplers draw from text.
- `x` is the starting sample: unit noise for DDPM and DDIM, `schedule.init_noise_sigma`
  times unit noise for the sigma samplers (Euler, Euler ancestral, Heun, LMS).
- `schedule` comes from `sdlearn.schedules.make_schedule`.
- `callback(step)` is called after every step with a `Step`: its index and timestep, the new
  sample and the model's estimate of the clean image. `sdlearn.text_to_image` calls its
  callback with the same `Step`, so one callback serves every denoising loop of the package.

Each step computes what the matching diffusers scheduler computes, so that with the same
model, starting sample and generator the trajectories agree (tests/test_samplers.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from sdlearn.schedules import Schedule, make_schedule
from sdlearn.utils import randn_tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class Step:
    """What a denoising loop's `callback` sees after each step, in pixel or in latent space."""
    index: int                  # 0, 1, ..., number of steps - 1
    timestep: int | float       # the model timestep t of this step (a float where the schedule's t is fractional)
    sample: torch.Tensor        # x after the step, the input of the next one: images, or latents
    pred_x0: torch.Tensor       # the clean sample the model's prediction at this step implies


Callback = Callable[[Step], None]


# --------------------------------------------------------------------------- adapters

class NoiseModel:
    """Wrap a network so that samplers can call it as `model(x, t)` with one t per image.

    Works for sdlearn's models (`forward(x, t)` returning a tensor) and for diffusers'
    `UNet2DModel` / `UNet2DConditionModel` (which return an object with `.sample`). Extra
    keyword arguments, such as `encoder_hidden_states`, are passed through on every call.
    `sdlearn.guidance.GuidedNoiseModel` builds on it for classifier-free guidance.
    """

    def __init__(self, network: torch.nn.Module, **kwargs):
        self.network = network
        self.kwargs = kwargs

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t              # (B,): one timestep per image
        out = self.network(x, t, **self.kwargs)
        return out.sample if hasattr(out, "sample") else out


def as_noise_model(network, **kwargs) -> NoiseModel:
    """Adapt a from-scratch model or a diffusers U-Net to the sampler's `model(x, t)` interface."""
    return network if isinstance(network, NoiseModel) else NoiseModel(network, **kwargs)


def check_sampler_input(x: torch.Tensor, schedule: Schedule, prediction_type: str) -> None:
    """A clear error for a schedule, prediction type or sample a sampler cannot use."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must come from sdlearn.schedules.make_schedule, got {type(schedule).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def _timestep(schedule: Schedule, i: int, x: torch.Tensor) -> torch.Tensor:
    return schedule.timesteps[i].to(x.device)


# --------------------------------------------------------------------------- DDPM and DDIM

def _pred_x0_and_eps(output, x, alpha_prod_t, prediction_type):
    """Turn the model output into (predicted x0, predicted noise) for alpha-bar_t."""
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        pred_x0 = (x - beta_prod_t ** 0.5 * output) / alpha_prod_t ** 0.5
        return pred_x0, output
    pred_x0 = alpha_prod_t ** 0.5 * x - beta_prod_t ** 0.5 * output            # v-prediction
    pred_eps = alpha_prod_t ** 0.5 * output + beta_prod_t ** 0.5 * x
    return pred_x0, pred_eps


@torch.no_grad()
def sample_ddpm(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", clip_sample: bool = False,
                clip_sample_range: float = 1.0, generator=None, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral sampling from DDPM (Ho et al., 2020), Algorithm 2, on any subset of timesteps.

    x             x_t
    a_t, a_prev   alpha-bar_t, alpha-bar_{t'} (t' the next, smaller timestep; alpha-bar = 1 past the end)
    pred_x0       x_0 estimated from x_t (eq. 15)
    mean          the posterior mean mu~_t(x_t, x_0) (eq. 7)
    variance      beta~_t = (1 - a_prev) / (1 - a_t) * beta_t (eq. 7), "fixed_small"
    """
    check_sampler_input(x, schedule, prediction_type)
    timesteps = schedule.timesteps.round().long()
    ac = schedule.alphas_cumprod.to(x.device)
    one = torch.tensor(1.0, device=x.device)
    for i, t in enumerate(timesteps.tolist()):
        output = model(x, timesteps[i].to(x.device))
        prev_t = timesteps[i + 1].item() if i + 1 < len(timesteps) else -1
        # 1. alpha-bar at this and the next timestep, and the beta of the jump between them
        a_t = ac[t]
        a_prev = ac[prev_t] if prev_t >= 0 else one
        beta_t = 1 - a_t / a_prev
        # 2. predict x_0 (eq. 15), optionally clipped to the data range
        pred_x0, _ = _pred_x0_and_eps(output, x, a_t, prediction_type)
        if clip_sample:
            pred_x0 = pred_x0.clamp(-clip_sample_range, clip_sample_range)
        # 3. the posterior mean (eq. 7) as a blend of pred_x0 and x_t
        coeff_x0 = (a_prev ** 0.5 * beta_t) / (1 - a_t)
        coeff_xt = (a_t / a_prev) ** 0.5 * (1 - a_prev) / (1 - a_t)
        mean = coeff_x0 * pred_x0 + coeff_xt * x
        # 4. add noise with the posterior variance, except at the last step
        if t > 0:
            variance = torch.clamp((1 - a_prev) / (1 - a_t) * beta_t, min=1e-20)
            mean = mean + variance ** 0.5 * randn_tensor(output.shape, generator, output.device, output.dtype)
        x = mean
        if callback is not None:
            callback(Step(index=i, timestep=t, sample=x, pred_x0=pred_x0))
    return x


@torch.no_grad()
def sample_ddim(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", eta: float = 0.0,
                clip_sample: bool = False, clip_sample_range: float = 1.0, set_alpha_to_one: bool = True,
                generator=None, callback: Callback | None = None) -> torch.Tensor:
    """DDIM (Song et al., 2021), eq. 12: deterministic for eta = 0, DDPM-like for eta = 1.

    x             x_t
    a_t, a_prev   alpha_t, alpha_{t-1} in the paper's notation (alpha-bar in DDPM's)
    pred_x0       "predicted x_0", the first term of eq. 12
    direction     "direction pointing to x_t", the second term
    std_dev_t     sigma_t(eta) = eta * sqrt((1 - a_prev)/(1 - a_t)) * sqrt(1 - a_t/a_prev), eq. 16

    As in diffusers, the previous timestep is t - T // n whatever the spacing.
    """
    check_sampler_input(x, schedule, prediction_type)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    timesteps = schedule.timesteps.round().long()
    ac = schedule.alphas_cumprod.to(x.device)
    final = torch.tensor(1.0, device=x.device) if set_alpha_to_one else ac[0]
    jump = schedule.num_train_timesteps // schedule.num_inference_steps
    for i, t in enumerate(timesteps.tolist()):
        output = model(x, timesteps[i].to(x.device))
        prev_t = t - jump
        # 1. alpha-bar at t and at the previous timestep
        a_t = ac[t]
        a_prev = ac[prev_t] if prev_t >= 0 else final
        # 2. predicted x_0 and noise
        pred_x0, pred_eps = _pred_x0_and_eps(output, x, a_t, prediction_type)
        if clip_sample:
            pred_x0 = pred_x0.clamp(-clip_sample_range, clip_sample_range)
        # 3. sigma_t(eta), eq. 16
        variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
        std_dev_t = eta * variance ** 0.5
        # 4. the direction pointing to x_t, then eq. 12
        direction = (1 - a_prev - std_dev_t ** 2) ** 0.5 * pred_eps
        x = a_prev ** 0.5 * pred_x0 + direction
        # 5. random noise, only when eta > 0
        if eta > 0:
            x = x + std_dev_t * randn_tensor(output.shape, generator, output.device, output.dtype)
        if callback is not None:
            callback(Step(index=i, timestep=t, sample=x, pred_x0=pred_x0))
    return x


# --------------------------------------------------------------------------- sigma samplers

def denoise(model, x, schedule, i, sigma, prediction_type):
    """Call the model at noise level sigma; return the predicted x0 (the "denoised" image).

    The model was trained on variance-preserving inputs, so x (variance 1 + sigma^2) is
    scaled by 1 / sqrt(sigma^2 + 1) first, as diffusers' `scale_model_input` does.
    """
    x_in = x / ((sigma ** 2 + 1) ** 0.5)
    output = model(x_in, _timestep(schedule, i, x))
    if prediction_type == "epsilon":
        return x - sigma * output
    return output * (-sigma / (sigma ** 2 + 1) ** 0.5) + x / (sigma ** 2 + 1)   # v-prediction


@torch.no_grad()
def sample_euler(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", generator=None,
                 callback: Callback | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al., 2022, Algorithm 1 without churn).

    x          x at noise level sigma_i
    denoised   D(x; sigma_i), the predicted x_0
    d          dx/dsigma = (x - D(x; sigma)) / sigma, eq. 3
    dt         sigma_{i+1} - sigma_i
    """
    check_sampler_input(x, schedule, prediction_type)
    sigmas = schedule.sigmas
    for i in range(schedule.num_inference_steps):
        sigma = sigmas[i]
        # 1. denoise, 2. the slope, 3. one Euler step in sigma
        denoised = denoise(model, x, schedule, i, sigma, prediction_type)
        d = (x - denoised) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=denoised))
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", generator=None,
                           callback: Callback | None = None) -> torch.Tensor:
    """Euler with fresh noise at every step (k-diffusion's ancestral sampler, eta = 1).

    sigma_up     the noise added after the step: sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)
    sigma_down   the level the deterministic step goes to: sqrt(sigma_to^2 - sigma_up^2)
    """
    check_sampler_input(x, schedule, prediction_type)
    sigmas = schedule.sigmas
    for i in range(schedule.num_inference_steps):
        sigma_from, sigma_to = sigmas[i], sigmas[i + 1]
        # 1. denoise and take the slope
        denoised = denoise(model, x, schedule, i, sigma_from, prediction_type)
        d = (x - denoised) / sigma_from
        # 2. split the step into a deterministic part and fresh noise
        sigma_up = (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
        sigma_down = (sigma_to ** 2 - sigma_up ** 2).clamp(min=0) ** 0.5      # >= 0 despite float32 rounding
        # 3. step down to sigma_down, then add noise back up to sigma_to
        x = x + d * (sigma_down - sigma_from)
        x = x + randn_tensor(x.shape, generator, x.device, x.dtype) * sigma_up
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=denoised))
    return x


@torch.no_grad()
def sample_heun(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", generator=None,
                callback: Callback | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al., 2022, Algorithm 1): an Euler step, then a correction.

    d        slope at (x, sigma_i)
    x_euler  the Euler prediction at sigma_{i+1}
    d_next   slope at (x_euler, sigma_{i+1}); the step uses the average (d + d_next) / 2
    The last step, to sigma = 0, is a plain Euler step. Two model calls per step otherwise.
    """
    check_sampler_input(x, schedule, prediction_type)
    sigmas = schedule.sigmas
    n = schedule.num_inference_steps
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # 1. Euler step
        denoised = denoise(model, x, schedule, i, sigma, prediction_type)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        if i == n - 1:
            x = x + d * dt
        else:
            # 2. the slope at the Euler prediction (the model is called at timestep i + 1)
            x_euler = x + d * dt
            denoised_next = denoise(model, x_euler, schedule, i + 1, sigma_next, prediction_type)
            d_next = (x_euler - denoised_next) / sigma_next
            # 3. the trapezoidal step with the averaged slope
            x = x + (d + d_next) / 2 * dt
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=denoised))
    return x


def lms_coefficient(sigmas: torch.Tensor, i: int, order: int, j: int) -> float:
    """The weight of the derivative from step i - j in a linear multistep step of `order`.

    It is the integral over [sigma_i, sigma_{i+1}] of the Lagrange polynomial that is 1 at
    sigma_{i-j} and 0 at the other `order - 1` points sigma_{i-k}. The polynomial is
    evaluated with the float32 sigmas, as diffusers does: at sigma ~ 150 a float32 ulp is
    1.5e-5, so evaluating in float64 instead would already move the result by that much.
    """
    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        return prod
    from scipy import integrate       # here, not at import: scipy.integrate costs most of this module's start-up

    return integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, schedule: Schedule, *, prediction_type: str = "epsilon", order: int = 4,
               generator=None, callback: Callback | None = None) -> torch.Tensor:
    """Linear multistep (k-diffusion's LMS): combine the last `order` slopes, like momentum.

    derivatives   the slopes d_i, d_{i-1}, ... of the most recent steps
    coefficients  integrals of Lagrange polynomials through the recent sigmas (`lms_coefficient`)
    """
    check_sampler_input(x, schedule, prediction_type)
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    sigmas = schedule.sigmas
    derivatives = []
    for i in range(schedule.num_inference_steps):
        sigma = sigmas[i]
        # 1. denoise and keep the slope
        denoised = denoise(model, x, schedule, i, sigma, prediction_type)
        derivatives.append((x - denoised) / sigma)
        if len(derivatives) > order:
            derivatives.pop(0)
        # 2. the weights of the stored slopes, newest first
        current_order = min(i + 1, order)
        coefficients = [lms_coefficient(sigmas, i, current_order, j) for j in range(current_order)]
        # 3. the multistep update
        update = 0
        for coefficient, derivative in zip(coefficients, reversed(derivatives)):
            update = update + coefficient * derivative
        x = x + update
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=denoised))
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "lms": sample_lms,
}


def generate(network, n: int, *, alphas_cumprod: torch.Tensor, sampler: str = "ddim", num_inference_steps: int = 50,
             timestep_spacing: str = "trailing", prediction_type: str = "epsilon", shape: tuple = (1, 32, 32),
             batch_size: int = 250, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
             progress: bool = False, decode=None, **sampler_kwargs) -> torch.Tensor:
    """Draw `n` samples in batches of `batch_size` with one of `SAMPLERS`.

    Returns a CPU tensor (n, *shape) in the model's data range. All randomness comes from
    `generator` (None: a fresh `torch.Generator().manual_seed(0)`), drawn in order: the first
    batch's starting noise, the noise its sampler adds during the steps (DDPM, DDIM with eta > 0,
    Euler ancestral), then the next batch's, and so on. The same generator state gives the same
    images; a different `batch_size` changes every batch after the first. The noise is drawn on
    the generator's device and moved to `device`.
    For a latent model, `shape` is the latent shape and `decode` (for example
    `functools.partial(decode_latents, vae)`) turns each batch into images as it is drawn.
    """
    from tqdm.auto import tqdm

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    unknown = sorted(set(sampler_kwargs) - set(inspect.signature(SAMPLERS[sampler]).parameters))
    if unknown:
        raise TypeError(f"generate got {unknown}, which neither it nor the {sampler!r} sampler takes (seed= is now "
                        f"generator=torch.Generator().manual_seed(seed), and spacing= is timestep_spacing=)")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    schedule = make_schedule(alphas_cumprod, num_inference_steps, timestep_spacing=timestep_spacing)
    model = as_noise_model(network)
    out = []
    for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
        size = min(batch_size, n - start)
        x = randn_tensor((size, *shape), generator, device)
        if sampler not in ("ddpm", "ddim"):
            x = x * schedule.init_noise_sigma
        result = SAMPLERS[sampler](model, x, schedule, prediction_type=prediction_type, generator=generator,
                                   **sampler_kwargs)
        if decode is not None:
            with torch.no_grad():
                result = decode(result)
        out.append(result.cpu())
    return torch.cat(out)

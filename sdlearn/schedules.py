"""Noise schedules as pure functions: betas, alphas_cumprod, sigmas, timesteps, and noising.

Notation: the DDPM paper (Ho et al., 2020) counts the noisy images t = 1, ..., T (x_0 is clean);
arrays here count from 0, as in diffusers, so index i holds the paper's timestep t = i + 1, and
the "timestep" a network or `add_noise` is given is that 0-based index i:

    betas[i]           beta_{i+1}       variance added by that step of the forward process
    alphas[i]          alpha_{i+1}      1 - beta_{i+1}
    alphas_cumprod[i]  alpha-bar_{i+1}  prod_{s <= i+1} alpha_s: the signal kept after i + 1 steps
    sigmas[i]          sigma_{i+1}      sqrt((1 - alpha-bar) / alpha-bar): the noise-to-signal ratio
                                        used by the Euler, Heun and LMS samplers (Karras et al., 2022)

A noisy image at index i is  sqrt(alphas_cumprod[i]) x_0 + sqrt(1 - alphas_cumprod[i]) eps.
Everything is float32, like diffusers, so that the numbers agree with it bit for bit where
the arithmetic is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


# --------------------------------------------------------------------------- betas

def check_steps(num_train_timesteps: int) -> None:
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int of at least 2, got {num_train_timesteps!r}")


def check_betas(betas: torch.Tensor) -> torch.Tensor:
    """Raise a clear error unless every beta lies strictly between 0 and 1."""
    if betas.ndim != 1 or len(betas) < 2:
        raise ValueError(f"betas must be a 1-D tensor of at least 2 values, got shape {tuple(betas.shape)}")
    bad = ((betas <= 0) | (betas >= 1) | ~torch.isfinite(betas)).nonzero().flatten()
    if len(bad):
        i = bad[0].item()
        raise ValueError(f"betas must lie in (0, 1); betas[{i}] = {betas[i].item():g}. "
                         "Check beta_start and beta_end (DDPM uses 1e-4 and 0.02).")
    return betas


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's schedule: betas evenly spaced from beta_start to beta_end."""
    check_steps(num_train_timesteps)
    return check_betas(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32))


def scaled_linear_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's schedule: sqrt(beta) evenly spaced, then squared."""
    check_steps(num_train_timesteps)
    roots = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32)
    return check_betas(roots ** 2)


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """Improved DDPM's alpha-bar as a function of continuous time t in [0, 1]."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_train_timesteps: int = 1000, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal, 2021), "squaredcos_cap_v2" in diffusers.

    beta_t = 1 - alpha-bar(t+1) / alpha-bar(t), capped at max_beta to avoid a singularity at t = T.
    """
    check_steps(num_train_timesteps)
    betas = []
    for i in range(num_train_timesteps):
        t1 = i / num_train_timesteps
        t2 = (i + 1) / num_train_timesteps
        betas.append(min(1 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1), max_beta))
    return check_betas(torch.tensor(betas, dtype=torch.float32))


def make_betas(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas by name, with diffusers' names: "linear", "scaled_linear" or "squaredcos_cap_v2" ("cosine")."""
    if beta_schedule == "linear":
        return linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "scaled_linear":
        return scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule in ("squaredcos_cap_v2", "cosine"):
        return cosine_betas(num_train_timesteps)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; use 'linear', 'scaled_linear' or 'squaredcos_cap_v2'")


# --------------------------------------------------------------------------- derived quantities

def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s <= t} (1 - beta_s)."""
    return torch.cumprod(1.0 - check_betas(betas), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t), the noise level of the Karras formulation."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def signal_to_noise(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR_t = alpha-bar_t / (1 - alpha-bar_t) = 1 / sigma_t^2."""
    return alphas_cumprod / (1 - alphas_cumprod)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022), eq. 5: n noise levels from sigma_max down to sigma_min, dense near sigma_min."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    ramp = np.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma: float, log_sigmas: np.ndarray) -> float:
    """The fractional timestep of a noise level: invert sigma(t) by interpolating log sigma linearly."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - w) * low_idx + w * high_idx).reshape(np.shape(sigma))


# --------------------------------------------------------------------------- timesteps

def spaced_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, timestep_spacing: str = "leading",
                     steps_offset: int = 0) -> np.ndarray:
    """The timesteps a sampler visits, in descending order, with diffusers' three `timestep_spacing`s.

    "leading":  0, k, 2k, ... (k = T // n), reversed, plus steps_offset (Stable Diffusion uses 1);
    "trailing": T-1, T-1-T/n, ... rounded, so the first step starts at pure noise;
    "linspace": n evenly spaced values from T-1 to 0, not rounded (DDPM and DDIM round them).
    Returned as float64; samplers that need integers round them.
    """
    check_steps(num_train_timesteps)
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps!r}")
    if num_inference_steps > num_train_timesteps:
        raise ValueError(f"num_inference_steps ({num_inference_steps}) cannot exceed num_train_timesteps "
                         f"({num_train_timesteps}): the model only knows {num_train_timesteps} noise levels")
    if timestep_spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_inference_steps)[::-1].copy()
    if timestep_spacing == "leading":
        step_ratio = num_train_timesteps // num_inference_steps
        return (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].astype(np.float64) + steps_offset
    if timestep_spacing == "trailing":
        step_ratio = num_train_timesteps / num_inference_steps
        return np.round(np.arange(num_train_timesteps, 0, -step_ratio)) - 1
    raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")


# --------------------------------------------------------------------------- the forward process

def _check_timesteps(t: torch.Tensor, num_train_timesteps: int) -> None:
    if t.is_floating_point():
        raise TypeError(f"timesteps must be integers (torch.long), got {t.dtype}")
    if len(t) and (t.min() < 0 or t.max() >= num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps - 1}], got values from "
                         f"{t.min().item()} to {t.max().item()}")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) in closed form: sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) noise, one t per image."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but noise has {tuple(noise.shape)}")
    t = torch.as_tensor(t, device=x0.device).reshape(-1)
    if len(t) not in (1, x0.shape[0]):
        raise ValueError(f"give one timestep or one per image: got {len(t)} timesteps for {x0.shape[0]} images")
    _check_timesteps(t, len(alphas_cumprod))
    ac = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return ac.sqrt().view(shape) * x0 + (1 - ac).sqrt().view(shape) * noise


def velocity(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The v-prediction target (Salimans & Ho, 2022): sqrt(alpha-bar_t) noise - sqrt(1 - alpha-bar_t) x0."""
    t = torch.as_tensor(t, device=x0.device).reshape(-1)
    _check_timesteps(t, len(alphas_cumprod))
    ac = alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return ac.sqrt().view(shape) * noise - (1 - ac).sqrt().view(shape) * x0


# --------------------------------------------------------------------------- what samplers need

@dataclass(frozen=True)
class Schedule:
    """The timesteps a sampler visits and their noise levels, built by `make_schedule`.

    timesteps        (n,)    model timesteps, descending (fractional for the sigma samplers)
    sigmas           (n+1,)  sigma at each timestep, then 0
    alphas_cumprod   (T,)    the training schedule
    timestep_spacing         the spacing of the timesteps: "leading", "trailing" or "linspace"
    init_noise_sigma         standard deviation of the starting noise for the sigma samplers
                             (the DDPM and DDIM samplers start from unit noise)
    """
    timesteps: torch.Tensor
    sigmas: torch.Tensor
    alphas_cumprod: torch.Tensor
    timestep_spacing: str
    init_noise_sigma: float

    @property
    def num_inference_steps(self) -> int:
        return len(self.timesteps)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)


def make_schedule(alphas_cumprod: torch.Tensor, num_inference_steps: int, *, timestep_spacing: str = "leading",
                  steps_offset: int = 0, use_karras_sigmas: bool = False, sigma_max: float | None = None) -> Schedule:
    """Timesteps and sigmas for sampling, computed as diffusers' schedulers compute them.

    sigmas at fractional timesteps are interpolated linearly in t; with `use_karras_sigmas`
    they are replaced by `karras_sigmas` between the same end points and the timesteps are
    recomputed from them with `sigma_to_t`. `sigma_max` (Karras sigmas only) starts them lower
    than the schedule's largest sigma: Karras et al. use 80, where the data are long drowned,
    instead of the cosine schedule's 20,000, whose first step a second-order sampler cannot take.
    """
    if sigma_max is not None and not use_karras_sigmas:
        raise ValueError("sigma_max applies to Karras sigmas: pass use_karras_sigmas=True as well")
    if sigma_max is not None and not sigma_max > 0:
        raise ValueError(f"sigma_max must be > 0, got {sigma_max!r}")
    alphas_cumprod = alphas_cumprod.to(torch.float32)
    timesteps = spaced_timesteps(num_inference_steps, len(alphas_cumprod), timestep_spacing,
                                 steps_offset).astype(np.float32)
    table = sigmas_from_alphas_cumprod(alphas_cumprod).numpy()          # float32, one per training step
    sigmas = np.interp(timesteps, np.arange(len(table)), table)          # float64 at the chosen timesteps
    if use_karras_sigmas:
        top = sigmas[0].item() if sigma_max is None else min(sigma_max, sigmas[0].item())
        sigmas = karras_sigmas(num_inference_steps, sigmas[-1].item(), top)
        log_table = np.log(table)
        timesteps = np.array([sigma_to_t(s, log_table) for s in sigmas]).astype(np.float32)
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    sigma_max = sigmas.max().item()
    init = sigma_max if timestep_spacing in ("linspace", "trailing") else (sigma_max ** 2 + 1) ** 0.5
    return Schedule(torch.from_numpy(timesteps), sigmas, alphas_cumprod, timestep_spacing, init)

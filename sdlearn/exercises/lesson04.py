"""Checks for the exercises of lesson 04, the forward process.

Notation as in the lesson: x_0 is the clean image, x_t the image after t noising steps,
t = 1, ..., T. Arrays are 0-based, so alpha-bar_t is alphas_cumprod[t - 1].
"""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake
from sdlearn.models.unet import timestep_embedding
from sdlearn.schedules import add_noise, alphas_cumprod_from_betas, linear_betas

T = 1000
PURE_NOISE = 1e-3          # alpha-bar at or below this: the image is noise for every practical purpose
MAX_WASTED = 100           # at most this many of the T steps may be spent on pure noise
MIDDLE = (250, 750)        # alpha-bar first drops below 0.5 at a t in this range


@exercise("04.1", "a schedule by design")
def check_my_betas(my_betas):
    betas = my_betas()
    if isinstance(betas, (list, tuple)):
        betas = torch.tensor(betas)
    if not isinstance(betas, torch.Tensor) or tuple(betas.shape) != (T,):
        found = tuple(betas.shape) if isinstance(betas, torch.Tensor) else type(betas).__name__
        raise Failed(f"return the {T} betas, beta_1 to beta_T, as a tensor of shape ({T},); got {found}.")
    betas = betas.detach().double()
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise Failed("every beta is a variance added at one step: it must lie strictly between 0 and 1.")
    if betas[0] > 0.5 and betas[-1] < 1e-2 and (betas[1:] <= betas[:-1]).all():
        raise Failed("those fall from about 1 towards 0, like alphas_cumprod; return the betas, the noise added at "
                     "each step.")
    alpha_bar = torch.cumprod(1 - betas, 0)                     # alpha_bar[t - 1] is alpha-bar_t
    if alpha_bar[-1] > PURE_NOISE:
        raise Failed(f"alpha-bar_T = {alpha_bar[-1]:.1e}: x_T still holds sqrt(alpha-bar_T) = "
                     f"{alpha_bar[-1].sqrt():.3f} of the image, but sampling starts x_T from pure noise. Add more "
                     f"noise in total, until alpha-bar_T <= {PURE_NOISE:g}.")
    wasted = int((alpha_bar <= PURE_NOISE).sum())
    if wasted > MAX_WASTED:
        first = int((alpha_bar <= PURE_NOISE).nonzero()[0]) + 1
        raise Failed(f"{wasted} of the {T} steps come after the image is already pure noise (alpha-bar_t <= "
                     f"{PURE_NOISE:g} from t = {first} on): a network learns nothing from them. Destroy the signal "
                     f"more slowly, so that at most {MAX_WASTED} are wasted.")
    halfway = int((alpha_bar < 0.5).nonzero()[0]) + 1
    if not MIDDLE[0] <= halfway <= MIDDLE[1]:
        raise Failed(f"alpha-bar_t first drops below 0.5 (as much noise as signal) at t = {halfway}: the destruction "
                     f"is bunched up. Spread it so that the halfway point lies between t = {MIDDLE[0]} and "
                     f"{MIDDLE[1]}.")
    ddpm_wasted = int((alphas_cumprod_from_betas(linear_betas(T)) <= PURE_NOISE).sum())
    return (f"alpha-bar_T = {alpha_bar[-1]:.1e}, {wasted} steps on pure noise (DDPM's linear schedule spends "
            f"{ddpm_wasted}), halfway at t = {halfway}.")


def _alpha_bar(alphas_cumprod: torch.Tensor, t: int) -> torch.Tensor:
    """alpha-bar_t in the paper's notation: 1 for t = 0 (the clean image), else alphas_cumprod[t - 1]."""
    return torch.tensor(1.0) if t == 0 else alphas_cumprod[t - 1]


def _jump(x_s, noise, a_s, a_t):
    ratio = a_t / a_s
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


@exercise("04.2", "noising further")
def check_noise_further(noise_further):
    ac = alphas_cumprod_from_betas(linear_betas(T))
    g = torch.Generator().manual_seed(42)
    x0 = torch.randn(2, 1, 6, 6, generator=g)
    for s, t in [(100, 400), (299, 300), (500, 1000), (0, 300)]:
        x_s = x0.clone() if s == 0 else add_noise(x0, torch.randn(x0.shape, generator=g), torch.tensor([s - 1]), ac)
        noise = torch.randn(x0.shape, generator=g)
        try:
            got = noise_further(x_s.clone(), noise.clone(), s, t, ac)
        except IndexError as exc:
            raise Failed(f"for s = {s}, t = {t} your code raised IndexError: {exc}. In the lesson's notation t runs "
                         f"from 1 to T = {T}, and alpha-bar_t is stored at alphas_cumprod[t - 1].") from exc
        if not isinstance(got, torch.Tensor) or got.shape != x0.shape:
            raise Failed(f"return a tensor shaped like x_s, {tuple(x0.shape)}.")
        a_s, a_t = _alpha_bar(ac, s), _alpha_bar(ac, t)
        expected = _jump(x_s, noise, a_s, a_t)
        if torch.allclose(got, expected, atol=1e-5):
            continue
        if not torch.isfinite(got).all() and s == 0:
            raise Failed("for s = 0 (x_s is the clean image) your result holds NaN: alphas_cumprod[s - 1] is "
                         "alphas_cumprod[-1], the last entry, alpha-bar_T, so the ratio exceeds 1. alpha-bar_0 = 1 "
                         "(no noise yet) is not stored in the array.")
        if not torch.isfinite(got).all():
            raise Failed(f"for s = {s}, t = {t} your result holds NaN: a square root of a negative number. The "
                         "signal shrinks as t grows, so alpha-bar_t / alpha-bar_s is below 1 (check the order).")
        name_the_mistake(got, {
            f"for s = {s}, t = {t}: off by one step. The arrays start at 0, so alpha-bar_t is alphas_cumprod[t - 1] "
            "(alphas_cumprod[0] is alpha-bar_1, already a little noisy).":
                _jump(x_s, noise, ac[s], ac[t]) if t < T else None,
            f"for s = {s}, t = {t}: that is the jump from a clean image. x_s has been scaled down and noised already, "
            "so scale it by sqrt(alpha-bar_t / alpha-bar_s) and add only the missing noise.":
                a_t.sqrt() * x_s + (1 - a_t).sqrt() * noise if s > 0 else None,
            f"for s = {s}, t = {t}: too much noise. x_s already holds noise of variance (1 - alpha-bar_s), which the "
            "scaling shrinks by alpha-bar_t / alpha-bar_s; the new noise only tops it up to 1 - alpha-bar_t, so its "
            "variance is 1 - alpha-bar_t / alpha-bar_s.":
                (a_t / a_s).sqrt() * x_s + (1 - a_t).sqrt() * noise if s > 0 else None,
            f"for s = {s}, t = {t}: take square roots; the coefficients are the square roots of alpha-bar_t / "
            "alpha-bar_s and of 1 - alpha-bar_t / alpha-bar_s, so that the variance stays 1.":
                (a_t / a_s) * x_s + (1 - a_t / a_s) * noise,
        }, atol=1e-5)
        raise Failed(f"for s = {s}, t = {t} the result differs from sqrt(alpha-bar_t / alpha-bar_s) x_s + "
                     "sqrt(1 - alpha-bar_t / alpha-bar_s) noise, with alpha-bar_t = alphas_cumprod[t - 1] and "
                     "alpha-bar_0 = 1.")
    return ("two jumps, 0 to s and s to t, give x_t the same distribution as one jump from 0 to t, and s = 0 "
            "works as well.")


@exercise("04.3", "the sinusoidal time embedding")
def check_timestep_embedding(my_timestep_embedding):
    t = torch.tensor([0, 1, 17, 500, 999])
    got = my_timestep_embedding(t, 32)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (5, 32):
        raise Failed("return a tensor of shape (len(timesteps), dim) = (5, 32).")
    k = torch.arange(16)
    angles = t[:, None].float() * torch.exp(-math.log(10000.0) * k / 16)[None, :]        # (5, 16), the right ones
    angles_over_dim = t[:, None].float() * torch.exp(-math.log(10000.0) * k / 32)[None, :]   # k / dim: too slow
    interleaved = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).reshape(5, 32)  # cos, sin, cos, ...
    name_the_mistake(got, {
        "sines first; this exercise (like diffusers' UNet2DModel) puts the cosines first.":
            timestep_embedding(t, 32, flip_sin_to_cos=False),
        "the exponent divides k by dim/2 - 1 (diffusers' freq_shift=1); here it is k / (dim/2), so that f_k runs "
        "from 1 down to just above 1/10000.": timestep_embedding(t, 32, flip_sin_to_cos=True, freq_shift=1),
        "the exponent divides k by dim; divide by dim/2, the number of frequencies, so that the lowest frequency "
        "is close to 1/10000.": torch.cat([torch.cos(angles_over_dim), torch.sin(angles_over_dim)], dim=-1),
        "the cosines and sines alternate; put all the cosines first, then all the sines (torch.cat, not "
        "torch.stack).": interleaved,
    })
    if not torch.allclose(got, timestep_embedding(t, 32, flip_sin_to_cos=True), atol=1e-5):
        raise Failed("the values differ from [cos(t f_k), sin(t f_k)] with f_k = exp(-ln(10000) k / (dim/2)).")
    return "equal to sdlearn.models.unet.timestep_embedding (and to diffusers')."

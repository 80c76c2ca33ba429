"""Checks for the exercises of lesson 04, the forward process."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake
from sdlearn.models.unet import timestep_embedding
from sdlearn.schedules import add_noise, alphas_cumprod_from_betas, linear_betas


@exercise("04.1", "alphas_cumprod from betas")
def check_alphas_cumprod(my_alphas_cumprod):
    betas = linear_betas(1000)
    got = my_alphas_cumprod(betas.clone())
    if not isinstance(got, torch.Tensor) or got.shape != betas.shape:
        raise Failed(f"return a tensor of shape {tuple(betas.shape)}, one value per timestep.")
    expected = alphas_cumprod_from_betas(betas)
    name_the_mistake(got, {
        "that is the product of the betas; multiply the alphas, 1 - beta.": torch.cumprod(betas, 0),
        "that is alpha_t for each step; alphas_cumprod multiplies all of them up to t (torch.cumprod).": 1 - betas,
        "the values are shifted by one step: alphas_cumprod[t] includes step t itself, so alphas_cumprod[0] is "
        "1 - betas[0], not 1.": torch.cat([torch.ones(1), expected[:-1]]),
    }, rtol=1e-5, atol=1e-7)
    if not torch.allclose(got, expected, rtol=1e-5, atol=1e-7):
        raise Failed("the values differ from prod_{s <= t} (1 - beta_s).")
    return f"alphas_cumprod[999] = {got[-1]:.2e}, as expected."


@exercise("04.2", "noising in closed form")
def check_add_noise(my_add_noise):
    ac = alphas_cumprod_from_betas(linear_betas(1000))
    g = torch.Generator().manual_seed(42)
    x0, noise = torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    t = torch.tensor([0, 400, 999])
    try:
        got = my_add_noise(x0.clone(), noise.clone(), t, ac)
    except RuntimeError as exc:
        if "must match the size" not in str(exc):
            raise
        raise Failed(f"your code raised RuntimeError: {exc}. alphas_cumprod[t] has one value per image, shape (B,); "
                     "reshape it to (B, 1, 1, 1) so that each image gets its own timestep.") from exc
    if not isinstance(got, torch.Tensor) or got.shape != x0.shape:
        raise Failed(f"return a tensor shaped like x0, {tuple(x0.shape)}.")

    def mix(ab, signal, noisy):
        ab = ab.view(-1, 1, 1, 1)
        return ab.sqrt() * signal + (1 - ab).sqrt() * noisy

    name_the_mistake(got, {
        "take square roots: the coefficients are sqrt(alpha-bar) and sqrt(1 - alpha-bar), so that the variance "
        "stays 1.": ac[t].view(-1, 1, 1, 1) * x0 + (1 - ac[t]).view(-1, 1, 1, 1) * noise,
        "the coefficients are swapped: sqrt(alpha-bar) multiplies x0 (the signal fades as t grows) and "
        "sqrt(1 - alpha-bar) the noise.": mix(ac[t], noise, x0),
        "you took alphas_cumprod[t - 1]; the noise level of timestep t is alphas_cumprod[t] (indices start at 0, "
        "and t = 0 already has a little noise).": mix(ac[t - 1], x0, noise),
    }, atol=1e-6)
    if not torch.allclose(got, add_noise(x0, noise, t, ac), atol=1e-6):
        raise Failed("expected sqrt(ab_t) * x0 + sqrt(1 - ab_t) * noise with ab_t = alphas_cumprod[t], reshaped to "
                     "(B, 1, 1, 1) so that each image gets its own timestep.")
    return "matches sdlearn.schedules.add_noise for three timesteps."


@exercise("04.3", "the sinusoidal time embedding")
def check_timestep_embedding(my_timestep_embedding):
    t = torch.tensor([0, 1, 17, 500, 999])
    got = my_timestep_embedding(t, 32)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (5, 32):
        raise Failed("return a tensor of shape (len(t), dim) = (5, 32).")
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

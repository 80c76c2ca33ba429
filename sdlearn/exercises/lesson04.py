"""Checks for the exercises of lesson 04, the forward process."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.unet import timestep_embedding
from sdlearn.schedules import add_noise, alphas_cumprod_from_betas, linear_betas


@exercise("04.1", "alphas_cumprod from betas")
def check_alphas_cumprod(my_alphas_cumprod):
    betas = linear_betas(1000)
    got = my_alphas_cumprod(betas.clone())
    if not isinstance(got, torch.Tensor) or got.shape != betas.shape:
        raise Failed(f"return a tensor of shape {tuple(betas.shape)}, one value per timestep.")
    expected = alphas_cumprod_from_betas(betas)
    if torch.allclose(got, torch.cumprod(betas, 0)):
        raise Failed("that is the product of the betas; multiply the alphas, 1 - beta.")
    if torch.allclose(got, 1 - betas):
        raise Failed("that is alpha_t for each step; alphas_cumprod multiplies all of them up to t (torch.cumprod).")
    if not torch.allclose(got, expected, rtol=1e-5, atol=1e-7):
        raise Failed("the values differ from prod_{s <= t} (1 - beta_s).")
    return f"alphas_cumprod[999] = {got[-1]:.2e}, as expected."


@exercise("04.2", "noising in closed form")
def check_add_noise(my_add_noise):
    ac = alphas_cumprod_from_betas(linear_betas(1000))
    g = torch.Generator().manual_seed(42)
    x0, noise = torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    t = torch.tensor([0, 400, 999])
    got = my_add_noise(x0.clone(), noise.clone(), t, ac)
    if not isinstance(got, torch.Tensor) or got.shape != x0.shape:
        raise Failed(f"return a tensor shaped like x0, {tuple(x0.shape)}.")
    expected = add_noise(x0, noise, t, ac)
    wrong = ac[t].view(-1, 1, 1, 1) * x0 + (1 - ac[t]).view(-1, 1, 1, 1) * noise
    if torch.allclose(got, wrong, atol=1e-6):
        raise Failed("take square roots: the coefficients are sqrt(alpha-bar) and sqrt(1 - alpha-bar), so that the "
                     "variance stays 1.")
    if not torch.allclose(got, expected, atol=1e-6):
        raise Failed("expected sqrt(ab_t) * x0 + sqrt(1 - ab_t) * noise with ab_t = alphas_cumprod[t], reshaped to "
                     "(B, 1, 1, 1) so that each image gets its own timestep.")
    return "matches sdlearn.schedules.add_noise for three timesteps."


@exercise("04.3", "the sinusoidal time embedding")
def check_timestep_embedding(my_timestep_embedding):
    t = torch.tensor([0, 1, 17, 500, 999])
    got = my_timestep_embedding(t, 32)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (5, 32):
        raise Failed("return a tensor of shape (len(t), dim) = (5, 32).")
    expected = timestep_embedding(t, 32, flip_sin_to_cos=True)
    if torch.allclose(got, timestep_embedding(t, 32, flip_sin_to_cos=False), atol=1e-5):
        raise Failed("sines first; this exercise (like diffusers' UNet2DModel) puts the cosines first.")
    if not torch.allclose(got, expected, atol=1e-5):
        raise Failed("the values differ from [cos(t f_k), sin(t f_k)] with f_k = exp(-ln(10000) k / (dim/2)).")
    return "equal to sdlearn.models.unet.timestep_embedding (and to diffusers')."

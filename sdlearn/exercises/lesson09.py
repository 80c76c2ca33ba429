"""Checks for the exercises of lesson 09, autoencoders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, exercise
from sdlearn.schedules import alphas_cumprod_from_betas, scaled_linear_betas


def _number(value, name: str) -> float:
    """A Python number or a one-element tensor as a float; anything else is a clear failure."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"{name} should return one number, got a tensor of shape {tuple(value.shape)}.")
        return value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise Failed(f"{name} should return a number, got {type(value).__name__}.")


# --------------------------------------------------------------------------- 09.1 the scale the KL term chooses

def _total_kl(mean: torch.Tensor, logvar: torch.Tensor, k: float) -> float:
    """KL(N(k mean, k^2 sigma^2) || N(0, 1)), summed over every number, in float64."""
    mean, var = mean.double(), logvar.double().exp()
    return (0.5 * (k * k * mean ** 2 + k * k * var - 1 - logvar.double() - 2 * math.log(k))).sum().item()


def _posteriors():
    g = torch.Generator().manual_seed(91)
    shape = (16, 4, 8, 8)
    wide = 0.5 + 2.0 * torch.randn(shape, generator=g)                        # off centre and wide, like vae_fashion
    wide_logvar = math.log(0.5 ** 2) + 0.3 * torch.randn(shape, generator=g)  # sigma around 0.5
    narrow = -0.2 + 0.3 * torch.randn(shape, generator=g)                     # too narrow, with wide clouds
    narrow_logvar = math.log(0.8 ** 2) + 0.3 * torch.randn(shape, generator=g)
    return [("wide latents (means spread 2, sigma about 0.5)", wide, wide_logvar),
            ("narrow latents (means spread 0.3, sigma about 0.8)", narrow, narrow_logvar)]


@exercise("09.1", "the scale the KL term chooses")
def check_kl_minimising_scale(kl_minimising_scale):
    for name, mean, logvar in _posteriors():
        got = _number(kl_minimising_scale(mean.clone(), logvar.clone()), "kl_minimising_scale")
        var = logvar.exp()
        right = 1.0 / (mean ** 2 + var).mean().sqrt().item()
        if math.isclose(got, right, rel_tol=1e-3):
            continue
        mistakes = {
            "the cloud is rescaled too: N(k mean, (k sigma)^2), and its KL counts sigma^2 beside mean^2.":
                1.0 / (mean ** 2).mean().sqrt().item(),
            "1 / std of the means centres them first and leaves out the clouds; the KL sees mean^2 + sigma^2, "
            "not the variance of the means.": 1.0 / mean.std().item(),
            "use sigma^2 = exp(logvar), not sigma = exp(logvar / 2), beside mean^2.":
                1.0 / (mean ** 2 + var.sqrt()).mean().sqrt().item(),
            "that is k squared: the minimum is at k^2 = n / sum(mean^2 + sigma^2), so take the square root.":
                1.0 / (mean ** 2 + var).mean().item(),
            "that is the root mean square itself; the scale that brings it to 1 is its inverse.":
                (mean ** 2 + var).mean().sqrt().item(),
        }
        for message, answer in mistakes.items():
            if math.isclose(got, answer, rel_tol=1e-3):
                raise Failed(f"for {name}: {message}")
        if got <= 0:
            raise Failed(f"for {name} you returned {got:g}; a scale is positive.")
        at_right, at_yours = _total_kl(mean, logvar, right), _total_kl(mean, logvar, got)
        raise Failed(f"for {name} the KL is smallest at k = {right:.4f} (total {at_right:,.1f}); at your "
                     f"k = {got:.4f} it is {at_yours:,.1f}. Write the KL of N(k mean, (k sigma)^2) and set its "
                     f"derivative in k to 0 (or search for the minimum to within 0.1%).")
    return ("k = 1 / sqrt(mean(mean^2 + sigma^2)): after rescaling, the latents' root mean square (means and clouds "
            "together) is exactly 1. Rescaling changes nothing the decoder cannot undo, so the KL term alone "
            "sets the scale, and it sets it to 1.")


# --------------------------------------------------------------------------- 09.2 the noise a decoder forgives

def _decode(z: torch.Tensor) -> torch.Tensor:
    """A stand-in decoder, (B, 4, 8, 8) -> (B, 1, 32, 32): a mix of the channels, enlarged 4 times."""
    mixed = 0.4 * z[:, :1] + 0.2 * z[:, 1:2] - 0.1 * z[:, 2:3]
    return F.interpolate(mixed, scale_factor=4, mode="nearest")


def _decoder_problem():
    g = torch.Generator().manual_seed(92)
    latents = torch.randn(64, 4, 8, 8, generator=g)
    amplitude = torch.linspace(0.01, 0.12, 64).view(-1, 1, 1, 1)    # some images are harder than others
    detail = amplitude * torch.randn(64, 1, 32, 32, generator=g)
    blocks = F.avg_pool2d(detail, 4)                                # what the decoder could reproduce
    detail = detail - F.interpolate(blocks, scale_factor=4, mode="nearest")   # the rest: it never can
    images = _decode(latents) + detail
    noise = torch.randn(latents.shape, generator=g)
    return latents, images, noise


def _psnr(decoded, images, *, peak_squared=4.0, pooled=False):
    mse = ((decoded - images) ** 2).flatten(1).mean(1)              # (B,): one per image
    if pooled:
        return 10 * math.log10(peak_squared / mse.mean().item())
    return (10 * torch.log10(peak_squared / mse)).mean().item()


def _largest(target_db, latents, images, noise, **psnr_options) -> float:
    """The noise level where the PSNR crosses target_db, by bisection (the PSNR falls as the level grows)."""
    low, high = 0.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        if _psnr(_decode(latents + middle * noise), images, **psnr_options) >= target_db:
            low = middle
        else:
            high = middle
    return low


@exercise("09.2", "how much latent noise the decoder forgives")
def check_largest_noise(largest_noise):
    latents, images, noise = _decoder_problem()
    calls = []

    def decode(z):
        calls.append(1)
        if len(calls) > 10_000:
            raise Failed("your search decoded more than 10,000 times; a bisection or a grid of steps of 0.01 needs "
                         "far fewer.")
        return _decode(z)

    for target in (28.0, 24.0):
        got = _number(largest_noise(decode, latents.clone(), images.clone(), noise.clone(), target), "largest_noise")
        at = _psnr(_decode(latents + got * noise), images)
        above = _psnr(_decode(latents + (got + 0.01) * noise), images)
        if at >= target and above < target:
            continue
        if got > 5:
            raise Failed(f"you returned {got:.2f}, which looks like a PSNR in dB; return the noise level: the "
                         f"number that multiplies `noise`.")
        for message, options in [("you averaged the squared errors over all the images before taking the "
                                   "logarithm; compute one PSNR per image, then average the PSNRs.", {"pooled": True}),
                                  ("the images span [-1, 1], a range of 2: the PSNR is 10 log10(2^2 / MSE), not "
                                   "10 log10(1 / MSE).", {"peak_squared": 1.0})]:
            mistaken = _largest(target, latents, images, noise, **options)
            if abs(got - mistaken) <= 0.011 and abs(mistaken - _largest(target, latents, images, noise)) > 0.011:
                raise Failed(f"for a target of {target:g} dB: {message}")
        if at < target:
            raise Failed(f"for a target of {target:g} dB, at your level {got:.3f} the PSNR is {at:.2f} dB, below the "
                         f"target: return the largest level that still reaches it, not the first that misses.")
        raise Failed(f"for a target of {target:g} dB, the level {got + 0.01:.3f} still gives {above:.2f} dB: search "
                     f"further, or more finely (to within 0.01).")
    return ("right for two targets. Now run it on vae_fashion (the decoder decode_latents(vae, z), the scaled "
            "latents of test images, and seeded noise): how far may a diffusion model's latents be off before "
            "the decoded garments lose 1 dB?")


# --------------------------------------------------------------------------- 09.3 neighbours that agree

def _neighbour_correlation(z: torch.Tensor, dim: int = -1) -> float:
    left, right = z.narrow(dim, 0, z.shape[dim] - 1).flatten(), z.narrow(dim, 1, z.shape[dim] - 1).flatten()
    return torch.corrcoef(torch.stack([left, right]))[0, 1].item()


@exercise("09.3", "prior samples whose neighbours agree")
def check_correlated_latents(correlated_latents):
    n = 4000
    for rho in (0.86, 0.5, 0.0):
        z = correlated_latents(n, rho, torch.Generator().manual_seed(93))
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != (n, 4, 8, 8):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise Failed(f"correlated_latents({n}, {rho}, generator) should return latents of shape ({n}, 4, 8, 8), "
                         f"got {shape}.")
        z = z.detach().float()
        again = correlated_latents(n, rho, torch.Generator().manual_seed(93))
        if not torch.equal(z, again.detach().float()):
            raise Failed("two calls with generators seeded alike gave different latents: draw every random number "
                         "with the generator you are given (torch.randn(..., generator=generator)).")
        column_std = z.transpose(0, -1).reshape(8, -1).std(dim=1)     # (8,): one per column position
        across, along = _neighbour_correlation(z, -1), _neighbour_correlation(z, -2)
        if abs(z.mean().item()) > 0.03:
            raise Failed(f"for rho = {rho} the latents have mean {z.mean():.3f}; like N(0, 1) they should have "
                         f"mean 0.")
        if (column_std - 1).abs().max() > 0.05:
            raise Failed(f"for rho = {rho} the standard deviation of the latents changes along the row, from "
                         f"{column_std[0]:.2f} in the first column to {column_std[-1]:.2f} in the last; every "
                         f"number should have standard deviation 1. If you write z_j = rho z_(j-1) + fresh noise, "
                         f"scale the fresh noise so that the variance stays 1: rho^2 + s^2 = 1.")
        if abs(across - rho) <= 0.03:
            continue
        if abs(along - rho) <= 0.03 and rho > 0:
            raise Failed(f"for rho = {rho} your neighbours agree down the columns (correlation {along:.2f}) but not "
                         f"along the rows ({across:.2f}); make each number agree with its right-hand neighbour, "
                         f"along the last axis, as neighbour_correlation measures.")
        raise Failed(f"for rho = {rho} each number correlates with its right-hand neighbour at {across:.2f}, not "
                     f"{rho}.")
    return ("standard deviation 1, and neighbours that agree as much as you asked (0.86, like vae_fashion's real "
            "latents). Decode a few with decode_latents(vae, ...) beside plain N(0, 1) latents: does the agreement "
            "between neighbours make garments?")


# --------------------------------------------------------------------------- 09.4 the timestep of unscaled latents

def _signal(alphas_cumprod: torch.Tensor, t: int, std: float, *, power: int = 2) -> float:
    """The correlation between x_t and x_0 for data of standard deviation `std` (power=1: a typical slip)."""
    a = alphas_cumprod[t].double().item()
    return math.sqrt(a) * std / math.sqrt(a * std ** power + 1 - a)


def _timestep_for(alphas_cumprod: torch.Tensor, correlation: float, *, compare_alpha_bar: bool = False) -> int:
    intended = alphas_cumprod.double() if compare_alpha_bar else alphas_cumprod.double().sqrt()
    return int((intended - correlation).abs().argmin())


@exercise("09.4", "the timestep that unscaled latents really get")
def check_effective_timestep(effective_timestep):
    alphas_cumprod = alphas_cumprod_from_betas(scaled_linear_betas(1000))     # Stable Diffusion's schedule
    cases = [(500, 2.147), (999, 1 / 0.18215), (300, 0.5), (200, 1.0), (900, 2.147)]
    found = {}
    for t, std in cases:
        got = effective_timestep(t, std, alphas_cumprod.clone())
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        right = _timestep_for(alphas_cumprod, _signal(alphas_cumprod, t, std))
        case = f"for t = {t} and latents of standard deviation {std:.3f}"
        if isinstance(got, float) and 0 <= got <= 1:
            raise Failed(f"{case} you returned {got:.3f}, which looks like a correlation or an alpha_bar; return the "
                         f"timestep (an int from 0 to 999) whose schedule intends that much signal.")
        if not isinstance(got, int) or isinstance(got, bool):
            raise Failed(f"return a timestep, an int from 0 to 999; got {type(got).__name__}.")
        found[(t, std)] = got
        if abs(got - right) <= 1:
            continue
        mistakes = [
            ("the noisy latent is sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise, so its variance is "
             "alpha_bar std^2 + 1 - alpha_bar: std squared, not std.",
             _timestep_for(alphas_cumprod, _signal(alphas_cumprod, t, std, power=1))),
            ("for unit-variance data the correlation of x_t with x_0 is sqrt(alpha_bar_t), not alpha_bar_t: "
             "compare the correlation with sqrt(alpha_bar).",
             _timestep_for(alphas_cumprod, _signal(alphas_cumprod, t, std), compare_alpha_bar=True)),
            ("wider latents carry more signal than the schedule intends, so they look less noisy, like an earlier "
             "timestep; use the standard deviation you are given, not its inverse.",
             _timestep_for(alphas_cumprod, _signal(alphas_cumprod, t, 1 / std))),
        ]
        for message, answer in mistakes:
            if abs(got - answer) <= 1 and abs(answer - right) > 1:
                raise Failed(f"{case}: {message}")
        raise Failed(f"{case} the answer is t = {right} (correlation {_signal(alphas_cumprod, t, std):.3f} between "
                     f"noisy and clean, which the schedule intends at t = {right}); you gave {got}.")
    return (f"without the scaling factor, vae_fashion's latents noised to t = 500 are as recognisable as the "
            f"schedule intends at t = {found[(500, 2.147)]}, and Stable Diffusion's at t = 999, where sampling "
            f"starts from pure noise, as at t = {found[(999, 1 / 0.18215)]}.")

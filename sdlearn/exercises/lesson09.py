"""Checks for the exercises of lesson 09, autoencoders."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.autoencoder import DiagonalGaussian


def _number(value, name: str) -> float:
    """A Python number or a one-element tensor as a float; anything else is a clear failure."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"{name} should return one number, got a tensor of shape {tuple(value.shape)}.")
        return value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise Failed(f"{name} should return a number, got {type(value).__name__}.")


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


@exercise("09.1", "the compression ratio")
def check_compression_ratio(compression_ratio):
    cases = [((3, 512, 512), 4, 8, 48.0),          # Stable Diffusion 1.x and 2.x
             ((1, 32, 32), 4, 4, 4.0),             # the shipped vae_fashion
             ((3, 1024, 1024), 16, 8, 12.0),       # a 16-channel latent, as in Stable Diffusion 3
             ((1, 32, 32), 3, 4, 1024 / 192)]      # not a whole number
    for image_shape, latent_channels, factor, expected in cases:
        got = _number(compression_ratio(image_shape, latent_channels, factor), "compression_ratio")
        if _close(got, expected):
            continue
        c, h, w = image_shape
        what = f"for a {c}x{h}x{w} image, {latent_channels} latent channels and factor {factor}"
        latent = latent_channels * (h // factor) * (w // factor)
        if _close(got, latent / (c * h * w)):
            raise Failed(f"{what} you returned latent numbers / image numbers; the ratio is the other way round, "
                         "image / latent, so that 48 means 'the latent is 48 times smaller'.")
        if _close(got, c * h * w / ((h // factor) * (w // factor))):
            raise Failed(f"{what} you left out the latent channels: the latent has latent_channels numbers "
                         "at each of its (H/f) x (W/f) positions.")
        if _close(got, h * w / latent):
            raise Failed(f"{what} you left out the image's channels: an RGB image has 3 numbers per pixel.")
        if _close(got, c * h * w / (latent_channels * (h // factor) * w)) or _close(got, c * factor / latent_channels):
            raise Failed(f"{what} you divided by the factor only once; it shrinks the height and the width, "
                         "so the number of positions falls by factor ** 2.")
        if _close(got, math.floor(expected)) and not _close(expected, math.floor(expected)):
            raise Failed(f"{what} the ratio is {expected:.4f}; you rounded it to a whole number (use / rather "
                         "than //).")
        raise Failed(f"{what} the ratio is (C * H * W) / (latent_channels * (H / factor) * (W / factor)) = "
                     f"{expected:g}, you returned {got:g}.")
    return ("Stable Diffusion: 48; the shipped vae_fashion: 4; a 16-channel latent at factor 8: 12. The ratio is "
            "C * factor**2 / latent_channels, whatever the image size.")


@exercise("09.2", "the reparameterisation trick")
def check_reparameterise(reparameterise):
    g = torch.Generator().manual_seed(9)
    mean = torch.randn(3, 4, 5, 5, generator=g)
    logvar = torch.randn(3, 4, 5, 5, generator=g) - 1.0      # std between about 0.1 and 1.5
    noise = torch.randn(3, 4, 5, 5, generator=g)
    mean_in, logvar_in = mean.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    z = reparameterise(mean_in, logvar_in, noise.clone())
    expected = mean + (0.5 * logvar).exp() * noise
    if not isinstance(z, torch.Tensor) or z.shape != expected.shape:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise Failed(f"return a tensor shaped like the mean, {tuple(expected.shape)}, got {shape}.")
    got = z.detach()
    wrong = {
        "you multiplied the noise by the variance exp(logvar); multiply by the standard deviation, "
        "exp(0.5 * logvar).": mean + logvar.exp() * noise,
        "logvar is the log of the variance, not the standard deviation: the standard deviation is "
        "exp(0.5 * logvar).": mean + logvar * noise,
        "the standard deviation is exp(0.5 * logvar), not exp(logvar / 0.5) = exp(2 * logvar).":
            mean + (2 * logvar).exp() * noise,
        "you left out the mean: z = mean + std * noise.": (0.5 * logvar).exp() * noise,
        "you left out the noise's scale: z = mean + std * noise, with std = exp(0.5 * logvar).": mean + noise,
        "that is the mean alone; add std * noise, or the decoder never learns to handle the spread.": mean,
    }
    for message, value in wrong.items():
        if torch.allclose(got, value, atol=1e-5):
            raise Failed(message)
    if torch.isnan(got).any():
        raise Failed("the result has NaNs: logvar can be negative, so do not take its square root; "
                     "the standard deviation is exp(0.5 * logvar).")
    if not torch.allclose(got, expected, atol=1e-5):
        raise Failed("the sample should be mean + exp(0.5 * logvar) * noise, using the noise you are given.")
    if not z.requires_grad:
        raise Failed("the result does not depend on mean and logvar through autograd (did you detach, or use "
                     ".data?); the whole point of the trick is that gradients reach the encoder.")
    z.sum().backward()
    if mean_in.grad is None or logvar_in.grad is None:
        raise Failed("gradients must reach both the mean and the log-variance.")
    if not torch.allclose(mean_in.grad, torch.ones_like(mean), atol=1e-5) or \
            not torch.allclose(logvar_in.grad, 0.5 * (0.5 * logvar).exp() * noise, atol=1e-5):
        raise Failed("the values are right but the gradients are not those of mean + exp(0.5 * logvar) * noise.")
    return "d z / d mean = 1 and d z / d logvar = 0.5 * std * noise: the randomness sits in the noise alone."


@exercise("09.3", "the KL divergence to N(0, 1)")
def check_kl(kl_to_standard_normal):
    g = torch.Generator().manual_seed(90)
    mean = torch.randn(3, 4, 2, 2, generator=g)
    logvar = torch.randn(3, 4, 2, 2, generator=g)
    got = kl_to_standard_normal(mean.clone(), logvar.clone())
    expected = DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()           # (3,)
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return a tensor with one KL per image, shape (3,), got {type(got).__name__}.")
    if got.numel() == 1 and _close(got.item(), expected.sum().item(), 1e-5):
        raise Failed("you summed over the batch too; return one KL per image, shape (B,): sum over every axis "
                     "but the first.")
    if got.numel() == 1 and _close(got.item(), expected.mean().item(), 1e-5):
        raise Failed("you averaged over the batch; return one KL per image, shape (B,).")
    if got.shape == mean.shape:
        raise Failed("you returned the KL of every latent number; sum them per image, over every axis but the "
                     "first, to get shape (B,).")
    if tuple(got.shape) != (3,):
        raise Failed(f"return one KL per image, shape (B,) = (3,), got {tuple(got.shape)}.")
    per_number = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)
    wrong = {
        "the KL has a factor 1/2 in front: 0.5 * (mean^2 + exp(logvar) - 1 - logvar).": 2 * expected,
        "you averaged over the latent numbers; the KL of independent numbers adds up: sum them.":
            per_number.flatten(1).mean(1),
        "the last term is minus logvar: 0.5 * (mean^2 + exp(logvar) - 1 - logvar).":
            0.5 * (mean ** 2 + logvar.exp() - 1 + logvar).flatten(1).sum(1),
        "you left out the -1: without it the KL of N(0, 1) to itself would not be 0.":
            0.5 * (mean ** 2 + logvar.exp() - logvar).flatten(1).sum(1),
        "exp(logvar) is already the variance; you squared it.":
            0.5 * (mean ** 2 + (2 * logvar).exp() - 1 - logvar).flatten(1).sum(1),
        "you treated logvar as the log of the standard deviation; it is the log of the variance: "
        "variance = exp(logvar).": 0.5 * (mean ** 2 + (2 * logvar).exp() - 1 - 2 * logvar).flatten(1).sum(1),
        "you left out mean^2: a Gaussian far from 0 must cost more.":
            0.5 * (logvar.exp() - 1 - logvar).flatten(1).sum(1),
    }
    for message, value in wrong.items():
        if torch.allclose(got, value, atol=1e-4):
            raise Failed(message)
    if not torch.allclose(got, expected, atol=1e-4):
        raise Failed("the KL of N(mean, exp(logvar)) to N(0, 1), per latent number, is "
                     "0.5 * (mean^2 + exp(logvar) - 1 - logvar); sum it over every axis but the first.")
    zero = kl_to_standard_normal(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
    if not torch.allclose(zero, torch.zeros(2), atol=1e-6):
        raise Failed("the KL of N(0, 1) to itself must be 0.")
    return "equal to DiagonalGaussian.kl() and to torch.distributions.kl_divergence, summed per image."


@exercise("09.4", "the scaling factor")
def check_scaling_factor(scaling_factor):
    g = torch.Generator().manual_seed(99)
    # four channels with different means and spreads, like a real autoencoder's latents
    shift = torch.tensor([0.3, -0.2, -3.0, 1.3]).view(1, 4, 1, 1)
    spread = torch.tensor([1.2, 1.4, 1.4, 0.9]).view(1, 4, 1, 1)
    latents = shift + spread * torch.randn(200, 4, 8, 8, generator=g)
    result = scaling_factor(latents.clone())
    expected = 1.0 / latents.std().item()
    if isinstance(result, torch.Tensor) and result.numel() == 4:
        raise Failed("that is one number per channel; the scaling factor is one number for the whole latent "
                     "(take the standard deviation over all of its numbers at once).")
    got = _number(result, "scaling_factor")
    wrong = {
        "that is the standard deviation itself; the factor is its inverse, so that latents * factor have a "
        "standard deviation of 1.": latents.std().item(),
        "you divided by the variance; divide by the standard deviation.": 1.0 / latents.var().item(),
        "you divided by the root mean square, which includes the latents' mean; use the standard deviation "
        "(the spread around the mean), as Stable Diffusion's authors did.": 1.0 / latents.pow(2).mean().sqrt().item(),
        "you averaged the per-channel standard deviations; take the standard deviation of all the numbers at "
        "once (the channels' different means add to the spread).": 1.0 / latents.std(dim=(0, 2, 3)).mean().item(),
    }
    for message, value in wrong.items():
        if _close(got, value, 1e-4):
            raise Failed(message)
    if not _close(got, expected, 1e-4):
        raise Failed(f"the factor should be 1 / latents.std() = {expected:.4f}, got {got:.4f}.")
    return f"1 / std = {expected:.4f}; the scaled latents have standard deviation {(latents * got).std().item():.4f}."

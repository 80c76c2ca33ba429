"""Checks for the exercises of lesson 03, predicting noise."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 1, 5, 5, generator=g)
    noise = torch.randn(3, 1, 5, 5, generator=g)
    sigma = torch.tensor([0.1, 1.0, 4.0])
    return x0, noise, sigma


def _tensor(value, shape, what):
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise Failed(f"{what} should return a tensor of shape {tuple(shape)}, got {found}.")
    return value


@exercise("03.1", "adding noise of a given level")
def check_make_noisy(make_noisy):
    x0, noise, sigma = _batch(31)
    got = _tensor(make_noisy(x0.clone(), noise.clone(), sigma.clone()), x0.shape, "make_noisy")
    if torch.allclose(got, x0 + sigma.view(-1, 1, 1, 1) ** 2 * noise, atol=1e-6):
        raise Failed("sigma is a standard deviation: multiply the noise by sigma, not by sigma squared.")
    if not torch.allclose(got, x0 + sigma.view(-1, 1, 1, 1) * noise, atol=1e-6):
        raise Failed("expected x0 + sigma * noise, with sigma reshaped to (B, 1, 1, 1) so each image gets its own level.")
    return "each image got its own noise level."


@exercise("03.2", "the denoised estimate")
def check_denoised_estimate(denoised_estimate):
    x0, noise, sigma = _batch(32)
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    got = _tensor(denoised_estimate(x.clone(), noise.clone(), sigma.clone()), x.shape, "denoised_estimate")
    if torch.allclose(got, x - noise, atol=1e-5):
        raise Failed("the predicted noise has unit variance: scale it by sigma before subtracting.")
    if not torch.allclose(got, x0, atol=1e-5):
        raise Failed("with the true noise as the prediction, the estimate should give back x0 exactly: x - sigma * noise.")
    return "with a perfect noise prediction you recover the clean images exactly."


@exercise("03.3", "the score from the predicted noise")
def check_score_from_noise(score_from_noise):
    x0, noise, sigma = _batch(33)
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * noise
    exact_score = -(x - x0) / s ** 2                      # Gaussian around one clean image
    got = _tensor(score_from_noise(noise.clone(), sigma.clone()), x.shape, "score_from_noise")
    if torch.allclose(got, -exact_score, atol=1e-5):
        raise Failed("the sign is flipped: the score points from x towards the clean image, against the noise.")
    if torch.allclose(got, -noise / s ** 2, atol=1e-5):
        raise Failed("divide by sigma once: x - x0 = sigma * noise, so -(x - x0) / sigma^2 = -noise / sigma.")
    if not torch.allclose(got, exact_score, atol=1e-5):
        raise Failed("expected -predicted_noise / sigma, with sigma reshaped to (B, 1, 1, 1).")
    return "equal to the exact score of a Gaussian around the clean image."

"""Checks for the exercises of lesson 03, predicting noise."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 1, 5, 5, generator=g)
    noise = torch.randn(3, 1, 5, 5, generator=g)
    sigma = torch.tensor([0.1, 1.0, 4.0])
    return x0, noise, sigma


def _answer(fn, what, shape, *args):
    """Call the student's function and check that it returns a tensor of `shape`.

    A broadcasting error here almost always means that sigma, one level per image (B,), was
    used as it is: against (B, 1, H, W) it lines up with the image's last axis.
    """
    try:
        value = fn(*args)
    except RuntimeError as exc:
        if "must match the size" not in str(exc):
            raise
        raise Failed(f"your code raised RuntimeError: {exc}. sigma holds one level per image, shape (B,); reshape "
                     "it to (B, 1, 1, 1) with sigma.view(-1, 1, 1, 1) so that it scales each image's pixels.") from exc
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise Failed(f"{what} should return a tensor of shape {tuple(shape)}, got {found}.")
    return value


@exercise("03.1", "adding noise of a given level")
def check_make_noisy(make_noisy):
    x0, noise, sigma = _batch(31)
    s = sigma.view(-1, 1, 1, 1)
    got = _answer(make_noisy, "make_noisy", x0.shape, x0.clone(), noise.clone(), sigma.clone())
    name_the_mistake(got, {
        "sigma is a standard deviation: multiply the noise by sigma, not by sigma squared.": x0 + s ** 2 * noise,
        "every image got noise of level 1: multiply the noise by sigma, the level of each image.": x0 + noise,
    }, atol=1e-6)
    if not torch.allclose(got, x0 + s * noise, atol=1e-6):
        raise Failed("expected x0 + sigma * noise, with sigma reshaped to (B, 1, 1, 1) so each image gets its own level.")
    return "each image got its own noise level."


@exercise("03.2", "the denoised estimate")
def check_denoised_estimate(denoised_estimate):
    x0, noise, sigma = _batch(32)
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * noise
    got = _answer(denoised_estimate, "denoised_estimate", x.shape, x.clone(), noise.clone(), sigma.clone())
    name_the_mistake(got, {
        "the predicted noise has unit variance: scale it by sigma before subtracting.": x - noise,
        "you added the noise; x = x0 + sigma * noise, so the estimate subtracts it: x - sigma * noise.": x + s * noise,
        "scale the noise by sigma, not by sigma squared: sigma is a standard deviation.": x - s ** 2 * noise,
    })
    if not torch.allclose(got, x0, atol=1e-5):
        raise Failed("with the true noise as the prediction, the estimate should give back x0 exactly: x - sigma * noise.")
    return "with a perfect noise prediction you recover the clean images exactly."


@exercise("03.3", "the score from the predicted noise")
def check_score_from_noise(score_from_noise):
    x0, noise, sigma = _batch(33)
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * noise
    exact_score = -(x - x0) / s ** 2                      # Gaussian around one clean image
    got = _answer(score_from_noise, "score_from_noise", x.shape, noise.clone(), sigma.clone())
    name_the_mistake(got, {
        "the sign is flipped: the score points from x towards the clean image, against the noise.": -exact_score,
        "divide by sigma once: x - x0 = sigma * noise, so -(x - x0) / sigma^2 = -noise / sigma.": -noise / s ** 2,
        "divide the noise by sigma, do not multiply: -(x - x0) / sigma^2 = -noise / sigma.": -noise * s,
    })
    if not torch.allclose(got, exact_score, atol=1e-5):
        raise Failed("expected -predicted_noise / sigma, with sigma reshaped to (B, 1, 1, 1).")
    return "equal to the exact score of a Gaussian around the clean image."

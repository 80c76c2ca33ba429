"""Lesson 09's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import math

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 09.1 kl_minimising_scale(mean, logvar)

def kl_minimising_scale(mean, logvar):
    return 1.0 / (mean ** 2 + logvar.exp()).mean().sqrt().item()


def kl_minimising_scale_by_search(mean, logvar):
    """Any method that finds the minimum is right: here a golden-section search on the KL itself."""
    def kl(k):
        return (0.5 * (k ** 2 * (mean ** 2 + logvar.exp()) - 1 - logvar) - math.log(k)).double().sum().item()
    low, high, ratio = 1e-3, 10.0, (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if kl(a) < kl(b):
            high = b
        else:
            low = a
    return torch.tensor((low + high) / 2)


def scale_of_the_means(mean, logvar):
    return 1.0 / (mean ** 2).mean().sqrt().item()


def inverse_std_of_the_means(mean, logvar):
    return 1.0 / mean.std().item()


def scale_with_sigma_not_squared(mean, logvar):
    return 1.0 / (mean ** 2 + (0.5 * logvar).exp()).mean().sqrt().item()


def scale_squared(mean, logvar):
    return 1.0 / (mean ** 2 + logvar.exp()).mean().item()


def root_mean_square(mean, logvar):
    return (mean ** 2 + logvar.exp()).mean().sqrt().item()


def scale_per_image(mean, logvar):
    return 1.0 / (mean ** 2 + logvar.exp()).flatten(1).mean(1).sqrt()


def scale_one(mean, logvar):
    return 1.0


# --------------------------------------------------------------------------- 09.2 largest_noise(decode, ...)

def _psnr(decoded, images):
    mse = ((decoded - images) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(4 / mse)).mean().item()


def largest_noise(decode, latents, images, noise, target_db):
    low, high = 0.0, 1.0
    while _psnr(decode(latents + high * noise), images) >= target_db:
        high *= 2
    while high - low > 1e-3:
        middle = (low + high) / 2
        if _psnr(decode(latents + middle * noise), images) >= target_db:
            low = middle
        else:
            high = middle
    return low


def largest_noise_on_a_grid(decode, latents, images, noise, target_db):
    """Any search fine enough is right: here steps of 0.005."""
    level = 0.0
    while _psnr(decode(latents + (level + 0.005) * noise), images) >= target_db:
        level += 0.005
    return level


def first_level_that_misses(decode, latents, images, noise, target_db):
    return largest_noise(decode, latents, images, noise, target_db) + 0.004


def coarse_grid(decode, latents, images, noise, target_db):
    level = 0.0
    while _psnr(decode(latents + (level + 0.1) * noise), images) >= target_db:
        level += 0.1
    return level


def returns_the_psnr(decode, latents, images, noise, target_db):
    return _psnr(decode(latents + largest_noise(decode, latents, images, noise, target_db) * noise), images)


def psnr_of_the_pooled_error(decode, latents, images, noise, target_db):
    def psnr(level):
        return 10 * math.log10(4 / ((decode(latents + level * noise) - images) ** 2).mean().item())
    low, high = 0.0, 2.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if psnr(middle) >= target_db else (low, middle)
    return low


def psnr_with_range_one(decode, latents, images, noise, target_db):
    def psnr(level):
        mse = ((decode(latents + level * noise) - images) ** 2).flatten(1).mean(1)
        return (10 * torch.log10(1 / mse)).mean().item()
    low, high = 0.0, 2.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if psnr(middle) >= target_db else (low, middle)
    return low


# --------------------------------------------------------------------------- 09.3 correlated_latents(n, rho, generator)

def correlated_latents(n, rho, generator):
    z = torch.empty(n, 4, 8, 8)
    z[..., 0] = torch.randn(n, 4, 8, generator=generator)
    for j in range(1, 8):
        fresh = torch.randn(n, 4, 8, generator=generator)
        z[..., j] = rho * z[..., j - 1] + math.sqrt(1 - rho ** 2) * fresh
    return z


def correlated_latents_by_mixing(n, rho, generator):
    """Another construction: a shared part and a private part, mixed for the right covariance, row by row."""
    index = torch.arange(8.0)
    covariance = rho ** (index[:, None] - index[None, :]).abs()          # (8, 8): rho^|i - j|
    factor = torch.linalg.cholesky(covariance.double()).float()
    return torch.randn(n, 4, 8, 8, generator=generator) @ factor.T


def variance_grows_along_the_row(n, rho, generator):
    z = torch.randn(n, 4, 8, 8, generator=generator)
    for j in range(1, 8):
        z[..., j] = rho * z[..., j - 1] + z[..., j]
    return z


def correlated_down_the_columns(n, rho, generator):
    return correlated_latents(n, rho, generator).transpose(-1, -2)


def plain_noise(n, rho, generator):
    return torch.randn(n, 4, 8, 8, generator=generator)


def not_seeded(n, rho, generator):
    return correlated_latents(n, rho, torch.Generator().manual_seed(torch.randint(1000, (1,)).item()))


def off_centre(n, rho, generator):
    return correlated_latents(n, rho, generator) + 0.5


def wrong_shape(n, rho, generator):
    return correlated_latents(n, rho, generator).flatten(1)


# --------------------------------------------------------------------------- 09.4 effective_timestep(t, std, ...)

def effective_timestep(t, latent_std, alphas_cumprod):
    a = alphas_cumprod[t]
    correlation = a.sqrt() * latent_std / (a * latent_std ** 2 + 1 - a).sqrt()
    return int((alphas_cumprod.sqrt() - correlation).abs().argmin())


def effective_timestep_by_simulation(t, latent_std, alphas_cumprod):
    """Measuring the correlation on simulated data is right too, if the sample is large enough."""
    g = torch.Generator().manual_seed(0)
    x0 = latent_std * torch.randn(400_000, generator=g, dtype=torch.float64)
    noise = torch.randn(400_000, generator=g, dtype=torch.float64)
    a = alphas_cumprod[t].double()
    correlation = torch.corrcoef(torch.stack([a.sqrt() * x0 + (1 - a).sqrt() * noise, x0]))[0, 1]
    return torch.tensor((alphas_cumprod.double().sqrt() - correlation).abs().argmin().item())


def timestep_with_std_not_squared(t, latent_std, alphas_cumprod):
    a = alphas_cumprod[t]
    correlation = a.sqrt() * latent_std / (a * latent_std + 1 - a).sqrt()
    return int((alphas_cumprod.sqrt() - correlation).abs().argmin())


def timestep_against_alpha_bar(t, latent_std, alphas_cumprod):
    a = alphas_cumprod[t]
    correlation = a.sqrt() * latent_std / (a * latent_std ** 2 + 1 - a).sqrt()
    return int((alphas_cumprod - correlation).abs().argmin())


def timestep_with_inverse_std(t, latent_std, alphas_cumprod):
    return effective_timestep(t, 1 / latent_std, alphas_cumprod)


def returns_the_correlation(t, latent_std, alphas_cumprod):
    a = alphas_cumprod[t]
    return (a.sqrt() * latent_std / (a * latent_std ** 2 + 1 - a).sqrt()).item()


def timestep_unchanged(t, latent_std, alphas_cumprod):
    return t


RIGHT = [
    ("09.1", kl_minimising_scale),
    ("09.1", kl_minimising_scale_by_search),
    ("09.2", largest_noise),
    ("09.2", largest_noise_on_a_grid),
    ("09.3", correlated_latents),
    ("09.3", correlated_latents_by_mixing),
    ("09.4", effective_timestep),
    ("09.4", effective_timestep_by_simulation),
]


@pytest.mark.parametrize("exercise_id, answer", RIGHT, ids=[r[1].__name__ for r in RIGHT])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("09.1", scale_of_the_means, "its KL counts sigma^2 beside mean^2"),
    ("09.1", inverse_std_of_the_means, "1 / std of the means centres them first"),
    ("09.1", scale_with_sigma_not_squared, "use sigma^2 = exp(logvar)"),
    ("09.1", scale_squared, "that is k squared"),
    ("09.1", root_mean_square, "the scale that brings it to 1 is its inverse"),
    ("09.1", scale_per_image, "should return one number, got a tensor of shape (16,)"),
    ("09.1", scale_one, "the KL is smallest at k = 0.4"),
    ("09.2", first_level_that_misses, "return the largest level that still reaches it"),
    ("09.2", coarse_grid, "search further, or more finely"),
    ("09.2", returns_the_psnr, "looks like a PSNR in dB"),
    ("09.2", psnr_of_the_pooled_error, "compute one PSNR per image, then average the PSNRs"),
    ("09.2", psnr_with_range_one, "a range of 2"),
    ("09.3", variance_grows_along_the_row, "scale the fresh noise so that the variance stays 1"),
    ("09.3", correlated_down_the_columns, "along the last axis"),
    ("09.3", plain_noise, "correlates with its right-hand neighbour at -0.00, not 0.86"),
    ("09.3", not_seeded, "draw every random number with the generator you are given"),
    ("09.3", off_centre, "they should have mean 0"),
    ("09.3", wrong_shape, "should return latents of shape (4000, 4, 8, 8)"),
    ("09.4", timestep_with_std_not_squared, "std squared, not std"),
    ("09.4", timestep_against_alpha_bar, "compare the correlation with sqrt(alpha_bar)"),
    ("09.4", timestep_with_inverse_std, "not its inverse"),
    ("09.4", returns_the_correlation, "looks like a correlation"),
    ("09.4", timestep_unchanged, "the answer is t = 272"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

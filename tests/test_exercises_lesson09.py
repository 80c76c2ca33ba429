"""Lesson 09's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check


def ratio_inverted(image_shape, latent_channels, factor):
    c, h, w = image_shape
    return latent_channels * (h // factor) * (w // factor) / (c * h * w)


def ratio_without_latent_channels(image_shape, latent_channels, factor):
    c, h, w = image_shape
    return c * h * w / ((h // factor) * (w // factor))


def ratio_factor_once(image_shape, latent_channels, factor):
    c, h, w = image_shape
    return c * factor / latent_channels


def ratio_floor_division(image_shape, latent_channels, factor):
    c, h, w = image_shape
    return c * h * w // (latent_channels * (h // factor) * (w // factor))


def sample_with_variance(mean, logvar, noise):
    return mean + logvar.exp() * noise


def sample_with_sqrt(mean, logvar, noise):
    return mean + logvar.sqrt() * noise


def sample_detached(mean, logvar, noise):
    return (mean + (0.5 * logvar).exp() * noise).detach()


def kl_without_half(mean, logvar):
    return (mean ** 2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def kl_averaged(mean, logvar):
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)


def kl_over_batch(mean, logvar):
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum()


def kl_plus_logvar(mean, logvar):
    return 0.5 * (mean ** 2 + logvar.exp() - 1 + logvar).flatten(1).sum(1)


def factor_is_std(latents):
    return latents.std().item()


def factor_per_channel(latents):
    return 1 / latents.std(dim=(0, 2, 3))


def factor_from_rms(latents):
    return 1 / latents.pow(2).mean().sqrt().item()


WRONG = [
    ("09.1", ratio_inverted, "other way round"),
    ("09.1", ratio_without_latent_channels, "left out the latent channels"),
    ("09.1", ratio_factor_once, "only once"),
    ("09.1", ratio_floor_division, "rounded it"),
    ("09.2", sample_with_variance, "variance exp(logvar)"),
    ("09.2", sample_with_sqrt, "NaN"),
    ("09.2", sample_detached, "autograd"),
    ("09.3", kl_without_half, "factor 1/2"),
    ("09.3", kl_averaged, "averaged over the latent numbers"),
    ("09.3", kl_over_batch, "summed over the batch"),
    ("09.3", kl_plus_logvar, "minus logvar"),
    ("09.4", factor_is_std, "its inverse"),
    ("09.4", factor_per_channel, "one number per channel"),
    ("09.4", factor_from_rms, "root mean square"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


def test_right_answers_in_other_forms_pass():
    def ratio_with_math_prod(image_shape, latent_channels, factor):
        return math.prod(image_shape) / (latent_channels * image_shape[1] * image_shape[2] / factor ** 2)

    def sample_with_std_from_sqrt_of_exp(mean, logvar, noise):
        return mean + logvar.exp().sqrt() * noise

    def kl_with_torch_distributions(mean, logvar):
        posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
        return torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)

    def factor_as_tensor(latents):
        return 1 / latents.std()

    for exercise_id, answer in [("09.1", ratio_with_math_prod), ("09.2", sample_with_std_from_sqrt_of_exp),
                                ("09.3", kl_with_torch_distributions), ("09.4", factor_as_tensor)]:
        verdict = check(exercise_id, answer)
        assert verdict.passed, repr(verdict)

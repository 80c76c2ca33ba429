"""Lesson 04's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Notation as in the lesson: t = 1, ..., T, and alpha-bar_t is alphas_cumprod[t - 1].
"""

import math

import pytest
import torch

from sdlearn.exercises import check
from sdlearn.schedules import alphas_cumprod_from_betas, cosine_betas, linear_betas, scaled_linear_betas


# --------------------------------------------------------------------------- 04.1 my_betas()

def betas_linear_gentler():
    return torch.linspace(1e-4, 0.015, 1000)


def betas_cosine():
    return cosine_betas(1000)


def betas_as_a_list():
    return torch.linspace(1e-4, 0.015, 1000).tolist()


def betas_ddpm():
    return linear_betas(1000)


def betas_stable_diffusion():
    return scaled_linear_betas(1000)


def betas_all_at_the_end():
    return torch.cat([torch.full((990,), 1e-5), torch.full((10,), 0.6)])


def alphas_cumprod_instead():
    return alphas_cumprod_from_betas(cosine_betas(1000))


def betas_too_few():
    return torch.linspace(1e-4, 0.03, 500)


def betas_with_a_zero():
    return torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.015, 999)])


# --------------------------------------------------------------------------- 04.2 noise_further(x_s, noise, s, t, ac)

def _alpha_bar(alphas_cumprod, t):
    return torch.tensor(1.0) if t == 0 else alphas_cumprod[t - 1]


def noise_further(x_s, noise, s, t, alphas_cumprod):
    ratio = _alpha_bar(alphas_cumprod, t) / _alpha_bar(alphas_cumprod, s)
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


def noise_further_by_alphas(x_s, noise, s, t, alphas_cumprod):     # multiply alpha_{s+1} ... alpha_t
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    ratio = alphas[s:t].prod()
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


def noise_further_padded(x_s, noise, s, t, alphas_cumprod):        # prepend alpha-bar_0 = 1
    alpha_bar = torch.cat([torch.ones(1), alphas_cumprod])
    ratio = alpha_bar[t] / alpha_bar[s]
    return math.sqrt(ratio) * x_s + math.sqrt(1 - ratio) * noise


def noise_further_zero_based(x_s, noise, s, t, alphas_cumprod):
    ratio = alphas_cumprod[t] / alphas_cumprod[s]
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


def noise_further_wraps_at_zero(x_s, noise, s, t, alphas_cumprod):
    ratio = alphas_cumprod[t - 1] / alphas_cumprod[s - 1]
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


def noise_further_from_clean(x_s, noise, s, t, alphas_cumprod):
    ab = alphas_cumprod[t - 1]
    return ab.sqrt() * x_s + (1 - ab).sqrt() * noise


def noise_further_too_much_noise(x_s, noise, s, t, alphas_cumprod):
    ab_t = alphas_cumprod[t - 1]
    return (ab_t / _alpha_bar(alphas_cumprod, s)).sqrt() * x_s + (1 - ab_t).sqrt() * noise


def noise_further_without_roots(x_s, noise, s, t, alphas_cumprod):
    ratio = _alpha_bar(alphas_cumprod, t) / _alpha_bar(alphas_cumprod, s)
    return ratio * x_s + (1 - ratio) * noise


def noise_further_upside_down(x_s, noise, s, t, alphas_cumprod):
    ratio = _alpha_bar(alphas_cumprod, s) / _alpha_bar(alphas_cumprod, t)
    return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise


def noise_further_ignores_noise(x_s, noise, s, t, alphas_cumprod):
    ratio = _alpha_bar(alphas_cumprod, t) / _alpha_bar(alphas_cumprod, s)
    return ratio.sqrt() * x_s


def noise_further_flattened(x_s, noise, s, t, alphas_cumprod):
    return noise_further(x_s, noise, s, t, alphas_cumprod).flatten(1)


# --------------------------------------------------------------------------- 04.3 my_timestep_embedding(t, dim)

def timestep_embedding_with_math(t, dim):
    half = dim // 2
    frequencies = torch.tensor([math.exp(-math.log(10000) * k / half) for k in range(half)])
    angles = t.float()[:, None] * frequencies
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _angles(t, dim, denominator):
    k = torch.arange(dim // 2)
    return t[:, None].float() * torch.exp(-math.log(10000.0) * k / denominator)[None, :]


def sines_first(t, dim):
    angles = _angles(t, dim, dim // 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def frequencies_shifted(t, dim):
    angles = _angles(t, dim, dim // 2 - 1)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def frequencies_over_dim(t, dim):
    angles = _angles(t, dim, dim)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def cos_and_sin_interleaved(t, dim):
    angles = _angles(t, dim, dim // 2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1).flatten(1)


def half_the_width(t, dim):
    return _angles(t, dim, dim // 2).cos()


@pytest.mark.parametrize("exercise_id, answer", [
    ("04.1", betas_linear_gentler),
    ("04.1", betas_cosine),
    ("04.1", betas_as_a_list),
    ("04.2", noise_further),
    ("04.2", noise_further_by_alphas),
    ("04.2", noise_further_padded),
    ("04.3", timestep_embedding_with_math),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("04.1", betas_ddpm, "175 of the 1000 steps come after the image is already pure noise"),
    ("04.1", betas_stable_diffusion, "x_T still holds"),
    ("04.1", betas_all_at_the_end, "the destruction is bunched up"),
    ("04.1", alphas_cumprod_instead, "like alphas_cumprod"),
    ("04.1", betas_too_few, "shape (1000,)"),
    ("04.1", betas_with_a_zero, "strictly between 0 and 1"),
    ("04.2", noise_further_zero_based, "off by one step"),
    ("04.2", noise_further_wraps_at_zero, "alphas_cumprod[-1], the last entry"),
    ("04.2", noise_further_from_clean, "that is the jump from a clean image"),
    ("04.2", noise_further_too_much_noise, "too much noise"),
    ("04.2", noise_further_without_roots, "take square roots"),
    ("04.2", noise_further_upside_down, "a square root of a negative number"),
    ("04.2", noise_further_ignores_noise, "the result differs from sqrt(alpha-bar_t / alpha-bar_s) x_s"),
    ("04.2", noise_further_flattened, "shaped like x_s"),
    ("04.3", sines_first, "sines first"),
    ("04.3", frequencies_shifted, "divides k by dim/2 - 1"),
    ("04.3", frequencies_over_dim, "divides k by dim;"),
    ("04.3", cos_and_sin_interleaved, "the cosines and sines alternate"),
    ("04.3", half_the_width, "shape (len(timesteps), dim) = (5, 32)"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

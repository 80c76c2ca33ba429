"""Lesson 04's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 04.1 my_alphas_cumprod(betas)

def alphas_cumprod_by_a_loop(betas):
    out, product = [], 1.0
    for beta in betas.tolist():
        product *= 1 - beta
        out.append(product)
    return torch.tensor(out)


def product_of_betas(betas):
    return torch.cumprod(betas, 0)


def alphas_not_multiplied(betas):
    return 1 - betas


def alphas_cumprod_shifted(betas):                   # alpha-bar_{t-1}: starts at 1
    return torch.cat([torch.ones(1), torch.cumprod(1 - betas, 0)[:-1]])


def one_minus_product_of_betas(betas):
    return 1 - torch.cumprod(betas, 0)


def alphas_cumprod_as_a_list(betas):
    return torch.cumprod(1 - betas, 0).tolist()


# --------------------------------------------------------------------------- 04.2 my_add_noise(x0, noise, t, ac)

def add_noise_by_indexing(x0, noise, t, alphas_cumprod):
    ab = alphas_cumprod[t][:, None, None, None]
    return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * noise


def add_noise_without_roots(x0, noise, t, alphas_cumprod):
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return ab * x0 + (1 - ab) * noise


def add_noise_swapped(x0, noise, t, alphas_cumprod):
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x0 + ab.sqrt() * noise


def add_noise_off_by_one(x0, noise, t, alphas_cumprod):
    ab = alphas_cumprod[t - 1].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def add_noise_not_reshaped(x0, noise, t, alphas_cumprod):
    ab = alphas_cumprod[t]                          # (3,) against (3, 1, 6, 6)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def add_noise_sigma_style(x0, noise, t, alphas_cumprod):     # lesson 03's x0 + sigma * noise
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return x0 + ((1 - ab) / ab).sqrt() * noise


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
    ("04.1", alphas_cumprod_by_a_loop),
    ("04.2", add_noise_by_indexing),
    ("04.3", timestep_embedding_with_math),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("04.1", product_of_betas, "that is the product of the betas"),
    ("04.1", alphas_not_multiplied, "that is alpha_t for each step"),
    ("04.1", alphas_cumprod_shifted, "shifted by one step"),
    ("04.1", one_minus_product_of_betas, "differ from prod_{s <= t} (1 - beta_s)"),
    ("04.1", alphas_cumprod_as_a_list, "return a tensor of shape (1000,)"),
    ("04.2", add_noise_without_roots, "take square roots"),
    ("04.2", add_noise_swapped, "the coefficients are swapped"),
    ("04.2", add_noise_off_by_one, "you took alphas_cumprod[t - 1]"),
    ("04.2", add_noise_not_reshaped, "reshape it to (B, 1, 1, 1)"),
    ("04.2", add_noise_sigma_style, "expected sqrt(ab_t) * x0 + sqrt(1 - ab_t) * noise"),
    ("04.3", sines_first, "sines first"),
    ("04.3", frequencies_shifted, "divides k by dim/2 - 1"),
    ("04.3", frequencies_over_dim, "divides k by dim;"),
    ("04.3", cos_and_sin_interleaved, "the cosines and sines alternate"),
    ("04.3", half_the_width, "shape (len(t), dim) = (5, 32)"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

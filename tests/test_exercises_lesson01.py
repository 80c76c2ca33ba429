"""Lesson 01's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

01.1's wrong answers are in tests/test_exercises.py.
"""

import pytest
import torch

from sdlearn.exercises import check
from sdlearn.exercises.lesson01 import _buggy_ascend, roughness


# --------------------------------------------------------------------------- 01.2 ascend(score, x, step_size, n_steps)

def ascend_grad_reset(score, x, step_size, n_steps):
    x = x.clone().requires_grad_(True)
    for _ in range(n_steps):
        score(x[None]).sum().backward()
        with torch.no_grad():
            g = x.grad
            x += step_size * g / g.pow(2).mean().sqrt()
            x.clamp_(0, 1)
        x.grad = None
    return x.detach()


def ascend_with_autograd_grad(score, x, step_size, n_steps):
    x = x.detach().clone()
    for _ in range(n_steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(score(x[None]).sum(), x)
        x = (x.detach() + step_size * g / g.pow(2).mean().sqrt()).clamp(0, 1)
    return x


def ascend_zeroed_in_place(score, x, step_size, n_steps):
    x = x.clone().requires_grad_(True)
    for _ in range(n_steps):
        if x.grad is not None:
            x.grad.zero_()
        score(x[None]).sum().backward()
        with torch.no_grad():
            x += step_size * x.grad / x.grad.pow(2).mean().sqrt()
            x.clamp_(0, 1)
    return x


def ascend_changes_x(score, x, step_size, n_steps):
    x.requires_grad_(True)
    for _ in range(n_steps):
        score(x[None]).sum().backward()
        with torch.no_grad():
            x += step_size * x.grad / x.grad.pow(2).mean().sqrt()
            x.clamp_(0, 1)
        x.grad = None
    x.requires_grad_(False)
    return x.clone()


def ascend_unnormalised(score, x, step_size, n_steps):
    x = x.clone().requires_grad_(True)
    for _ in range(n_steps):
        score(x[None]).sum().backward()
        with torch.no_grad():
            x += step_size * x.grad
            x.clamp_(0, 1)
        x.grad = None
    return x.detach()


def ascend_one_step(score, x, step_size, n_steps):
    return ascend_grad_reset(score, x, step_size, 1)


@pytest.mark.parametrize("answer", [ascend_grad_reset, ascend_with_autograd_grad, ascend_zeroed_in_place])
def test_ascend_right_answers_pass(answer):
    verdict = check("01.2", answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("answer, message", [
    (_buggy_ascend, "backward() adds the new gradient to x.grad"),
    (ascend_changes_x, "changed the x it was given"),
    (ascend_unnormalised, "keep the step as it was"),
    (ascend_one_step, "takes one step only"),
    (lambda score, x, step_size, n_steps: [x], "should return a torch.Tensor"),
])
def test_ascend_mistakes(answer, message):
    verdict = check("01.2", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


# --------------------------------------------------------------------------- 01.3 looks_like_handwriting(x)

def both_directions_judge(x):
    """Another right answer: roughness measured across rows and down columns."""
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    return (horizontal + vertical) / 2 < 0.13


@pytest.mark.parametrize("answer", [
    lambda x: roughness(x) < 0.14,
    lambda x: roughness(x) <= 0.11,
    lambda x: (roughness(x) < 0.14).tolist(),
    lambda x: (roughness(x) < 0.14).float(),
    both_directions_judge,
])
def test_looks_like_handwriting_right_answers_pass(answer):
    verdict = check("01.3", answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("answer, message", [
    (lambda x: roughness(x) < 0.072, "too strict"),              # the real digits' mean
    (lambda x: roughness(x) < 0.2, "digits with speckle added"),
    (lambda x: roughness(x) < 0.32, "of the noise images: too lenient"),
    (lambda x: roughness(x) > 0.14, "wrong way round"),
    (lambda x: roughness(x), "not the measurement itself"),
    (lambda x: bool((roughness(x) < 0.14).all()), "one True or False per image"),
    (lambda x: torch.ones(len(x), dtype=torch.bool), "accepts 100% of the noise images"),
])
def test_looks_like_handwriting_mistakes(answer, message):
    verdict = check("01.3", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

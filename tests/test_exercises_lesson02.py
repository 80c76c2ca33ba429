"""Lesson 02's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

02.4's wrong answers (and a forward difference for 02.1) are in tests/test_exercises.py.
"""

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 02.1 complex_step(f, x, h)

def _at(x, h, dtype=torch.complex128):
    return torch.tensor(complex(x, h), dtype=dtype)


def complex_step(f, x, h):
    return (f(_at(x, h)).imag / h).item()


def complex_step_python(f, x, h):
    return float(f(_at(x, h)).imag.item()) / h


def central_difference(f, x, h):
    x = torch.tensor(x, dtype=torch.float64)
    return ((f(x + h) - f(x - h)) / (2 * h)).item()


COMPLEX_STEP_MISTAKES = [
    (lambda f, x, h: (f(_at(x, h)).real / h).item(), "real part"),
    (lambda f, x, h: f(_at(x, h)).imag.item(), "did not divide by h"),
    (lambda f, x, h: (f(_at(x, h, torch.complex64)).imag / h).item(), "complex64"),
    (lambda f, x, h: f(_at(x, h)) / h, "complex number"),
    (central_difference, "a finite difference, forward or central"),
    (lambda f, x, h: 0.0, "a finite difference, forward or central"),
]


@pytest.mark.parametrize("answer", [complex_step, complex_step_python])
def test_complex_step_passes(answer):
    assert check("02.1", answer).passed


@pytest.mark.parametrize("answer, message", COMPLEX_STEP_MISTAKES, ids=[m for _, m in COMPLEX_STEP_MISTAKES])
def test_complex_step_mistakes_are_named(answer, message):
    result = check("02.1", answer)
    assert not result.passed and message in result.message, result.message


# --------------------------------------------------------------------------- 02.2 central_eps(dtype)

def eps_from_the_error_model(dtype):
    # minimise eps**2 / 6 + u / eps for |f| and |f'''| of order 1, u the unit roundoff
    u = torch.finfo(dtype).eps / 2
    return (3 * u) ** (1 / 3)


@pytest.mark.parametrize("answer", [
    eps_from_the_error_model,
    lambda dtype: torch.finfo(dtype).eps ** (1 / 3),
    lambda dtype: {torch.float32: 1e-2, torch.float64: 1e-5}[dtype],
    lambda dtype: torch.tensor(3e-3 if dtype == torch.float32 else 3e-6),
])
def test_central_eps_right_answers_pass(answer):
    verdict = check("02.2", answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("answer, message", [
    (lambda dtype: 1e-3, "for both precisions"),
    (lambda dtype: 1e-1 if dtype == torch.float32 else 1e-5, "truncation dominates"),     # the network's best
    (lambda dtype: 1e-3 if dtype == torch.float32 else 1e-4, "truncation dominates"),
    (lambda dtype: 1e-8 if dtype == torch.float32 else 1e-12, "rounding dominates"),
    (lambda dtype: torch.finfo(dtype).eps, "rounding dominates"),
    (lambda dtype: torch.finfo(dtype).eps ** 0.5, "rule of thumb for the forward difference"),
    (lambda dtype: -1e-3 if dtype == torch.float32 else 1e-5, "small positive number"),
    (lambda dtype: torch.ones(2), "should be one number"),
])
def test_central_eps_mistakes(answer, message):
    verdict = check("02.2", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


# --------------------------------------------------------------------------- 02.3 log_prob_gradient(W, b, x, k)

def log_prob_gradient(weight, bias, x, k):
    p = (weight @ x + bias).softmax(-1)
    return weight[k] - p @ weight


def log_prob_gradient_summed(weight, bias, x, k):
    logits = weight @ x + bias
    p = torch.exp(logits - torch.logsumexp(logits, 0))
    grad = weight[k].clone()
    for j in range(len(p)):
        grad = grad - p[j] * weight[j]
    return grad


@pytest.mark.parametrize("answer", [log_prob_gradient, log_prob_gradient_summed])
def test_log_prob_gradient_right_answers_pass(answer):
    verdict = check("02.3", answer)
    assert verdict.passed, verdict.message


def with_autograd(weight, bias, x, k):
    x = x.clone().requires_grad_(True)
    (weight @ x + bias).log_softmax(-1)[k].backward()
    return x.grad


@pytest.mark.parametrize("answer, message", [
    (lambda w, b, x, k: w[k], "gradient of the raw logit"),
    (lambda w, b, x, k: -log_prob_gradient(w, b, x, k), "sign is flipped"),
    (lambda w, b, x, k: w[k] - w.mean(0), "not equally"),
    (lambda w, b, x, k: (1 - (w @ x + b).softmax(-1)[k]) * w[k], "only the j = k term"),
    (lambda w, b, x, k: w[k] - (w @ x).softmax(-1) @ w, "bias included"),
    (lambda w, b, x, k: w[:, k], "tensor shaped like x"),
    (lambda w, b, x, k: w[k] - 0.5 * (w @ x + b).softmax(-1) @ w, "differs from autograd's"),
    (with_autograd, "autograd is switched off"),
])
def test_log_prob_gradient_mistakes(answer, message):
    verdict = check("02.3", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

"""Checks for the exercises of lesson 02, derivatives."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise

# Functions with known derivatives, and the point where each is checked.
_CASES = [
    ("x**3 at x = 2", lambda x: x ** 3, 2.0, 12.0),
    ("sin(x) at x = 0.7", math.sin, 0.7, math.cos(0.7)),
]


def _as_float(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"{what} should be one number, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if not isinstance(value, (int, float)):
        raise Failed(f"{what} should be a number, got {type(value).__name__}.")
    return float(value)


def _check_difference(fn, name: str, formula, order: int) -> str:
    for label, f, x, derivative in _CASES:
        eps = 1e-3
        got = _as_float(fn(f, x, eps), f"{name}(f, x, eps)")
        expected = formula(f, x, eps)
        if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
            raise Failed(f"for f(x) = {label} with eps = 1e-3 expected {expected:.8f}, got {got:.8f}. "
                         "Use the f you are given: the check tries more than one function.")
        errors = [abs(_as_float(fn(f, x, e), name) - derivative) for e in (1e-2, 5e-3)]
        ratio = errors[0] / errors[1]
        if not 2 ** order * 0.8 < ratio < 2 ** order * 1.25:
            raise Failed(f"halving eps should divide the error by about {2 ** order}; yours by {ratio:.2f}.")
    return f"values match on two functions, and halving eps divides the error by about {2 ** order}."


@exercise("02.1", "forward difference")
def check_forward_difference(forward_difference):
    def central(f, x, eps):
        return (f(x + eps) - f(x - eps)) / (2 * eps)
    label, f, x, _ = _CASES[0]
    if math.isclose(_as_float(forward_difference(f, x, 1e-3), "forward_difference"), central(f, x, 1e-3), rel_tol=1e-9):
        raise Failed("that is the central difference; the forward one uses f(x + eps) and f(x) only.")
    return _check_difference(forward_difference, "forward_difference", lambda f, x, e: (f(x + e) - f(x)) / e, 1)


@exercise("02.2", "central difference")
def check_central_difference(central_difference):
    label, f, x, _ = _CASES[0]
    if math.isclose(_as_float(central_difference(f, x, 1e-3), "central_difference"),
                    (f(x + 1e-3) - f(x - 1e-3)) / 1e-3, rel_tol=1e-9):
        raise Failed("divide by 2 * eps: the two points are 2 * eps apart.")
    return _check_difference(central_difference, "central_difference",
                             lambda f, x, e: (f(x + e) - f(x - e)) / (2 * e), 2)


@exercise("02.3", "a numerical gradient, element by element")
def check_numerical_gradient(numerical_gradient):
    g = torch.Generator().manual_seed(23)
    for shape in [(3, 4), (5,), (2, 2, 3)]:
        w = torch.randn(*shape, generator=g, dtype=torch.float64)
        x = torch.randn(*shape, generator=g, dtype=torch.float64)

        def f(t):
            return (w * t ** 2).sum() + torch.sin(t).sum()

        exact = 2 * w * x + torch.cos(x)
        x_given = x.clone()
        try:
            got = numerical_gradient(f, x_given, 1e-6)
        except NotImplementedError:
            raise
        except Exception as exc:
            raise Failed(f"for x of shape {shape} your code raised {type(exc).__name__}: {exc}. Loop over "
                         "x.numel() elements (x.view(-1) gives them in order), whatever the shape.") from exc
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            found = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise Failed(f"for x of shape {shape}, return a tensor of that shape; got {found}. "
                         "Loop over x.numel() elements (x.view(-1) gives them in order), whatever the shape.")
        if not torch.allclose(x_given, x, rtol=0, atol=1e-12):
            raise Failed("your function changed x; nudge a copy (x.clone()) instead.")
        error = (got - exact).abs().max().item()
        if error > 1e-6:
            raise Failed(f"for x of shape {shape} the largest difference from the exact gradient is {error:.2e} "
                         "(allowed 1e-6). Nudge one element at a time by +eps and -eps: the central difference.")
    return "matches the exact gradient to 1e-6 for 1-D, 2-D and 3-D inputs."


@exercise("02.4", "maximum relative error")
def check_max_relative_error(max_relative_error):
    a = torch.tensor([1.0, -2.0, 0.0, 1e-3, 2e-3])
    b = torch.tensor([1.1, -2.0, 0.0, 2e-3, 1e-3])
    expected = 0.5  # |1e-3 - 2e-3| / 2e-3 in both orders; the 0/0 element counts as no error
    got = max_relative_error(a, b)
    if isinstance(got, torch.Tensor):
        raise Failed("return a Python float: call .item() on the result.")
    got = _as_float(got, "max_relative_error(a, b)")
    if math.isnan(got):
        raise Failed("you divided 0 by 0 where both entries are 0: divide by max(|a|, |b|, 1e-8).")
    if math.isclose(got, 0.1, rel_tol=1e-4):
        raise Failed("you returned the largest absolute error (0.1); divide each difference by max(|a|, |b|).")
    if math.isclose(got, 1.0, rel_tol=1e-4):
        raise Failed("divide by the larger of |a| and |b|, not by one of them: the measure must not depend on the order.")
    if not math.isclose(got, expected, rel_tol=1e-4):
        raise Failed(f"expected {expected}: max over elements of |a - b| / max(|a|, |b|, 1e-8); got {got}.")
    return "the relative error of each element is scaled by its own size, as it should be."

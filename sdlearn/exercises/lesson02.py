"""Checks for the exercises of lesson 02, derivatives."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise


def _cube(x):
    return x ** 3


def _as_float(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"{what} should be one number, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if not isinstance(value, (int, float)):
        raise Failed(f"{what} should be a number, got {type(value).__name__}.")
    return float(value)


@exercise("02.1", "forward difference")
def check_forward_difference(forward_difference):
    x, eps = 2.0, 1e-3
    got = _as_float(forward_difference(_cube, x, eps), "forward_difference(f, x, eps)")
    expected = (_cube(x + eps) - _cube(x)) / eps
    if math.isclose(got, (_cube(x + eps) - _cube(x - eps)) / (2 * eps), rel_tol=1e-9):
        raise Failed("that is the central difference; the forward one uses f(x + eps) and f(x) only.")
    if not math.isclose(got, expected, rel_tol=1e-9):
        raise Failed(f"for f(x) = x**3 at x = 2 with eps = 1e-3 expected {expected:.6f}, got {got:.6f}.")
    errors = [abs(_as_float(forward_difference(_cube, x, e), "forward_difference") - 12.0) for e in (1e-2, 5e-3)]
    return f"halving eps divides the error by {errors[0] / errors[1]:.2f}: first order, as expected."


@exercise("02.2", "central difference")
def check_central_difference(central_difference):
    x, eps = 2.0, 1e-3
    got = _as_float(central_difference(_cube, x, eps), "central_difference(f, x, eps)")
    expected = (_cube(x + eps) - _cube(x - eps)) / (2 * eps)
    if math.isclose(got, (_cube(x + eps) - _cube(x - eps)) / eps, rel_tol=1e-9):
        raise Failed("divide by 2 * eps: the two points are 2 * eps apart.")
    if not math.isclose(got, expected, rel_tol=1e-9):
        raise Failed(f"for f(x) = x**3 at x = 2 with eps = 1e-3 expected {expected:.6f}, got {got:.6f}.")
    errors = [abs(_as_float(central_difference(_cube, x, e), "central_difference") - 12.0) for e in (1e-2, 5e-3)]
    return f"halving eps divides the error by {errors[0] / errors[1]:.2f}: second order, as expected."


@exercise("02.3", "a numerical gradient, element by element")
def check_numerical_gradient(numerical_gradient):
    g = torch.Generator().manual_seed(23)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def f(t):
        return (w * t ** 2).sum() + torch.sin(t).sum()

    exact = 2 * w * x + torch.cos(x)
    x_given = x.clone()
    got = numerical_gradient(f, x_given, 1e-6)
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise Failed(f"return a tensor with the shape of x, {tuple(x.shape)}; got {shape}.")
    if not torch.equal(x_given, x):
        raise Failed("your function changed x in place; nudge a copy (x.clone()) instead.")
    error = (got - exact).abs().max().item()
    if error > 1e-6:
        raise Failed(f"the largest difference from the exact gradient is {error:.2e} (allowed 1e-6). "
                     "Nudge one element at a time by +eps and -eps and use the central difference.")
    return f"largest difference from the exact gradient: {error:.1e}."


@exercise("02.4", "maximum relative error")
def check_max_relative_error(max_relative_error):
    a = torch.tensor([1.0, -2.0, 0.0, 1e-3])
    b = torch.tensor([1.1, -2.0, 0.0, 2e-3])
    expected = 0.5  # |1e-3 - 2e-3| / 2e-3; the 0/0 element counts as no error
    got = _as_float(max_relative_error(a, b), "max_relative_error(a, b)")
    if math.isnan(got):
        raise Failed("you divided 0 by 0 where both entries are 0: divide by max(|a|, |b|, 1e-8).")
    if math.isclose(got, 0.1, rel_tol=1e-4):
        raise Failed("you returned the largest absolute error (0.1); divide each difference by max(|a|, |b|).")
    if not math.isclose(got, expected, rel_tol=1e-4):
        raise Failed(f"expected {expected}: max over elements of |a - b| / max(|a|, |b|, 1e-8); got {got}.")
    return "the relative error of each element is scaled by its own size, as it should be."

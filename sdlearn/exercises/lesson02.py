"""Checks for the exercises of lesson 02, derivatives."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise

# Analytic functions written with torch (so that they accept complex numbers), their derivatives, and
# the point where each is checked.
_COMPLEX_CASES = [
    ("x**3 at x = 2", lambda z: z ** 3, 2.0, 12.0),
    ("sin(x) at x = 0.7", torch.sin, 0.7, math.cos(0.7)),
    ("exp(x) / (1 + x**2) at x = -1.3", lambda z: torch.exp(z) / (1 + z ** 2), -1.3,
     math.exp(-1.3) / (1 + 1.69) - 2 * -1.3 * math.exp(-1.3) / (1 + 1.69) ** 2),
]


def _as_float(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"{what} should be one number, got a tensor of shape {tuple(value.shape)}.")
        if value.is_complex():
            raise Failed(f"{what} returned a complex number; the derivative is a real number: keep one part of "
                         "f(x + ih) and scale it.")
        value = value.item()
    if isinstance(value, complex):
        raise Failed(f"{what} returned a complex number; the derivative is a real number: keep one part of "
                     "f(x + ih) and scale it.")
    if not isinstance(value, (int, float)):
        raise Failed(f"{what} should be a number, got {type(value).__name__}.")
    return float(value)


@exercise("02.1", "a derivative without cancellation: the complex step")
def check_complex_step(complex_step):
    for label, f, x, derivative in _COMPLEX_CASES:
        for h in (1e-8, 1e-20, 1e-100):
            got = _as_float(complex_step(f, x, h), "complex_step(f, x, h)")
            if math.isnan(got):
                hint = (" In complex64 (single precision) h = 1e-100 rounds to 0, and 0 / 0 is NaN: compute in "
                        "torch.complex128 (or Python's complex)." if h < 1e-40 else "")
                raise Failed(f"for f(x) = {label} with h = {h:g} you returned NaN.{hint}")
            error = abs(got - derivative) / abs(derivative)
            if error <= 1e-13:
                continue
            z = torch.tensor(complex(x, h), dtype=torch.complex128)
            value = f(z)
            if h < 1e-16 and (got == 0.0 or (error > 0.5 and abs(got) < 1e-3 * abs(derivative))):
                raise Failed(f"for f(x) = {label} with h = {h:g} you got {got:g}: x + h equals x in float64 when h "
                             "is this small, so f(x + h) - f(x) is 0. The nudge must go in the imaginary direction, "
                             "x + ih, where it is never lost against x.")
            x64 = torch.tensor(x, dtype=torch.float64)
            differences = [((f(x64 + h) - f(x64)) / h).item(), ((f(x64 + h) - f(x64 - h)) / (2 * h)).item()]
            if got == 0.0 or any(math.isclose(got, d, rel_tol=1e-9) for d in differences):
                raise Failed("that is a finite difference, forward or central: the subtraction of two nearly "
                             "equal numbers loses digits, and for h below 1e-16 it gives 0. Nudge x in the "
                             "imaginary direction instead and keep Im f(x + ih) / h.")
            if math.isclose(got, abs(value.item()) / h, rel_tol=1e-6) and value.real.item() < 0:
                raise Failed("you took the modulus |f(x + ih)|; the derivative is the imaginary part divided by h.")
            if math.isclose(got, value.real.item() / h, rel_tol=1e-6):
                raise Failed("you kept the real part of f(x + ih), divided by h; the real part is f(x) plus a tiny "
                             "correction. The derivative is in the imaginary part: Im f(x + ih) / h.")
            if math.isclose(got, value.imag.item(), rel_tol=1e-6):
                raise Failed("you did not divide by h: Im f(x + ih) = h f'(x) + O(h^3).")
            if h == 1e-8 and error < 1e-5:
                raise Failed(f"for f(x) = {label} with h = 1e-8 your relative error is {error:.1e}, the accuracy "
                             "of a finite difference or of complex64 (single precision); the complex step in "
                             "complex128 is exact to about 1e-16. Compute in torch.complex128 (or Python's complex).")
            raise Failed(f"for f(x) = {label} with h = {h:g} expected {derivative:.15g}, got {got:.15g} "
                         f"(relative error {error:.1e}). The complex step is Im f(x + ih) / h.")
    return ("exact to the last digits for h = 1e-8, 1e-20 and 1e-100: Im f(x + ih) / h has no subtraction, so "
            "nothing cancels, and h can be as small as you like.")


# Well-scaled functions (values and derivatives of order 1 on [-1, 1]) for choosing eps, with their derivatives.
_SMOOTH = [
    ("sin", torch.sin, torch.cos),
    ("exp", torch.exp, torch.exp),
    ("tanh", torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
]
_EPS_GRID = [10 ** (-k / 8) for k in range(8 * 14 + 1)]       # 1 down to 1e-14, eight values per decade
_TOLERANCE = 10                                                # accept any eps within 10 times the best error


def central_error(f, derivative, dtype: torch.dtype, eps: float) -> float:
    """Mean error of the central difference in `dtype` over 201 points of [-1, 1], relative to mean |f'|."""
    x = torch.linspace(-1, 1, 201, dtype=torch.float64).to(dtype)
    estimate = (f(x + eps) - f(x - eps)) / (2 * eps)
    exact = derivative(x.double())
    return ((estimate.double() - exact).abs().mean() / exact.abs().mean()).item()


@lru_cache(maxsize=None)
def _best(name: str, dtype: torch.dtype) -> tuple[float, float]:
    _, f, derivative = next(case for case in _SMOOTH if case[0] == name)
    errors = [central_error(f, derivative, dtype, eps) for eps in _EPS_GRID]
    i = min(range(len(errors)), key=errors.__getitem__)
    return _EPS_GRID[i], errors[i]


@exercise("02.2", "choosing eps")
def check_central_eps(central_eps):
    chosen = {dtype: _as_float(central_eps(dtype), f"central_eps({dtype})") for dtype in (torch.float32, torch.float64)}
    for dtype, eps in chosen.items():
        if not 0 < eps < 1:
            raise Failed(f"central_eps({dtype}) should be a small positive number, got {eps!r}.")
    if chosen[torch.float32] == chosen[torch.float64]:
        raise Failed(f"you chose eps = {chosen[torch.float32]:g} for both precisions. float64 carries about 16 digits "
                     "against float32's 7: its rounding error is about a billion times smaller, so the best balance "
                     "with the truncation error lies at a much smaller eps.")
    for dtype, eps in chosen.items():
        for name, f, derivative in _SMOOTH:
            error = central_error(f, derivative, dtype, eps)
            best_eps, best_error = _best(name, dtype)
            if error <= _TOLERANCE * best_error:
                continue
            where = (f"in {str(dtype).replace('torch.', '')}, eps = {eps:g} gives a relative error of {error:.1e} for "
                     f"{name} on [-1, 1], against {best_error:.1e} at eps = {best_eps:.1e}")
            if abs(math.log10(eps / torch.finfo(dtype).eps ** 0.5)) < 0.2:
                raise Failed(f"{where}. The square root of the machine epsilon is the rule of thumb for the forward "
                             "difference, whose truncation error shrinks like eps; the central difference's shrinks "
                             "like eps**2, so it can afford a larger eps. Balance eps**2 / 6 against "
                             "(machine epsilon) / eps.")
            if eps < best_eps:
                raise Failed(f"{where}: rounding dominates. f(x + eps) and f(x - eps) agree in most of their digits, "
                             "their difference keeps only the few in which they differ, and dividing by 2 eps "
                             "magnifies the rounding. Take a larger eps.")
            raise Failed(f"{where}: truncation dominates, the error eps**2 / 6 * f'''(x) of the Taylor expansion. "
                         "Take a smaller eps.")
    return (f"eps = {chosen[torch.float32]:.1e} in float32 and {chosen[torch.float64]:.1e} in float64 are within "
            f"{_TOLERANCE} times of the best error for sin, exp and tanh.")


@exercise("02.3", "a gradient by hand")
def check_log_prob_gradient(log_prob_gradient):
    g = torch.Generator().manual_seed(23)
    weight = torch.randn(5, 12, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    x = torch.randn(12, generator=g, dtype=torch.float64)
    for k in (0, 3):
        given = x.clone().requires_grad_(True)
        expected = torch.autograd.grad((weight @ given + bias).log_softmax(-1)[k], given)[0]
        try:
            with torch.no_grad():
                got = log_prob_gradient(weight.clone(), bias.clone(), x.clone(), k)
        except RuntimeError as exc:
            if "grad" not in str(exc):
                raise
            raise Failed("autograd is switched off in this check: derive the gradient on paper and compute it with "
                         "tensor operations (then compare with autograd or gradient_check yourself).") from exc
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            found = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise Failed(f"return a tensor shaped like x, (12,); got {found}.")
        got = got.double()
        if torch.allclose(got, expected, rtol=1e-6, atol=1e-9):
            continue
        p = (weight @ x + bias).softmax(-1)
        p_no_bias = (weight @ x).softmax(-1)
        if torch.allclose(got, weight[k], rtol=1e-6, atol=1e-9):
            raise Failed("that is the gradient of the raw logit (W x + b)[k], the bug the lesson's gradient check "
                         "caught. The log-softmax subtracts log sum_j exp(logit_j), whose gradient is sum_j p_j W_j.")
        if torch.allclose(got, -expected, rtol=1e-6, atol=1e-9):
            raise Failed("the sign is flipped: raising the logit of k raises log p_k, so W_k enters with a plus sign.")
        if torch.allclose(got, weight[k] - weight.mean(0), rtol=1e-6, atol=1e-9):
            raise Failed("the rows of W are weighted by the probabilities p_j = softmax(W x + b)_j, not equally.")
        if torch.allclose(got, (1 - p[k]) * weight[k], rtol=1e-6, atol=1e-9):
            raise Failed("that keeps only the j = k term of sum_j p_j W_j; every class's probability contributes.")
        if torch.allclose(got, weight[k] - p_no_bias @ weight, rtol=1e-6, atol=1e-9):
            raise Failed("the probabilities come from the logits W x + b, bias included.")
        raise Failed(f"for k = {k} your gradient differs from autograd's by {(got - expected).abs().max():.2e}. "
                     "Write log p_k = logit_k - log sum_j exp(logit_j) and differentiate each part with respect to x.")
    return "W_k - sum_j p_j W_j: the class's own direction minus the probability-weighted average of all of them."


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

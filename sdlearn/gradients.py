"""Gradients of a score with respect to its input: finite differences, autograd, and ascent.

Lessons 01 and 02 treat a trained network as a "magic function" f that scores an image,
and ask how to change every pixel to raise the score. Every helper here uses one
convention for f:

    f takes a batch of inputs of shape (B, *x.shape) and returns one number per input, shape (B,).

So `f(x[None])[0]` is the score of a single input `x`, and the batched finite differences
can score hundreds of nudged copies of `x` in one call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from sdlearn.utils import magnitude

ScalarFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- checks

def _check_input(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}. "
                        "Convert it with torch.as_tensor(x, dtype=torch.float32).")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor to be differentiated, got {x.dtype}. "
                        "Convert it with x.float() (and scale uint8 images to [0, 1]).")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass one input, for example an image (1, 28, 28).")


def _check_eps(eps) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}") from None
    if isinstance(eps, bool) or not value > 0 or value == float("inf"):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}. For central differences "
                         "1e-2 to 1e-1 works best in float32 and 1e-5 to 1e-4 in float64 (lesson 02 measures why).")
    return value


def _scores(f: ScalarFn, batch: torch.Tensor) -> torch.Tensor:
    """Call f on a batch and check that it returned one number per input."""
    out = f(batch)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != (batch.shape[0],):
        raise ValueError(
            f"f must return one number per input: for a batch of {batch.shape[0]} it should give shape "
            f"({batch.shape[0]},), but it gave {tuple(out.shape)}. Reduce its output to a scalar per input, "
            "for example the log-probability of one class: model(x).log_softmax(-1)[:, k]."
        )
    return out


# --------------------------------------------------------------------------- finite differences

def finite_difference_grad(f: ScalarFn, x: torch.Tensor, eps: float = 1e-3, *, method: str = "central",
                           batched: bool = True, batch_size: int | None = None) -> torch.Tensor:
    """The gradient of f at x by finite differences, one nudged copy of x per element.

    forward:  (f(x + eps e_i) - f(x)) / eps                error O(eps)
    central:  (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)   error O(eps^2)

    With `batched=False` the loop calls f once per nudged copy (the naive way, as a person
    would nudge one pixel at a time); with `batched=True` the copies are stacked and scored
    `batch_size` at a time (by default as many as fit in about 256 MB: the batch of nudged
    copies holds batch_size * x.numel() numbers). Both use the same formula; the results
    agree up to float rounding, which differs between a batch of one and a large batch.
    """
    _check_input(x)
    eps = _check_eps(eps)
    if batch_size is None:
        batch_size = max(1, min(1024, 2 ** 26 // x.numel()))
    if method not in ("forward", "central"):
        raise ValueError(f"method must be 'forward' or 'central', got {method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    with torch.no_grad():
        flat = x.detach().reshape(-1)
        n = flat.numel()
        base = _scores(f, x.detach()[None])[0] if method == "forward" else None
        grad = torch.empty(n, dtype=x.dtype, device=x.device)
        if not batched:
            for i in range(n):
                plus = flat.clone()
                plus[i] += eps
                f_plus = _scores(f, plus.view(1, *x.shape))[0]
                if method == "forward":
                    grad[i] = (f_plus - base) / eps
                else:
                    minus = flat.clone()
                    minus[i] -= eps
                    f_minus = _scores(f, minus.view(1, *x.shape))[0]
                    grad[i] = (f_plus - f_minus) / (2 * eps)
            return grad.view_as(x)
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=x.device)
            nudge = torch.zeros(len(idx), n, dtype=x.dtype, device=x.device)
            nudge[torch.arange(len(idx)), idx] = eps                    # (b, n): row j nudges element idx[j]
            f_plus = _scores(f, (flat + nudge).view(-1, *x.shape))
            if method == "forward":
                grad[idx] = (f_plus - base) / eps
            else:
                f_minus = _scores(f, (flat - nudge).view(-1, *x.shape))
                grad[idx] = (f_plus - f_minus) / (2 * eps)
    return grad.view_as(x)


# --------------------------------------------------------------------------- autograd

def autograd_grad(f: ScalarFn, x: torch.Tensor) -> torch.Tensor:
    """The gradient of f at x by backpropagation: one forward pass, one backward pass.

    Only x receives a gradient: the `.grad` of the model's parameters is left untouched.
    """
    _check_input(x)
    x = x.detach().clone().requires_grad_(True)
    value = _scores(f, x[None])[0]
    if not value.requires_grad:
        raise ValueError("f's output does not depend on x (no gradient flows back to it); check that f uses its input")
    (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    if grad is None:
        raise ValueError("f's output does not depend on x (no gradient flows back to it); check that f uses its input")
    return grad.detach()


# --------------------------------------------------------------------------- gradient check

@dataclass
class GradCheck:
    """The result of comparing a finite-difference gradient with the autograd one."""
    max_abs_error: float
    max_rel_error: float
    eps: float
    tol: float

    @property
    def passed(self) -> bool:
        return self.max_rel_error <= self.tol

    def __repr__(self) -> str:
        if self.passed:   # rounding-sized errors: their size, not their CPU-dependent digits
            return (f"GradCheck passed: max relative error {magnitude(self.max_rel_error)} "
                    f"(tolerance {self.tol:.0e}), max absolute error {magnitude(self.max_abs_error)}, eps {self.eps:g}")
        return (f"GradCheck FAILED: max relative error {self.max_rel_error:.2e} "
                f"(tolerance {self.tol:.0e}), max absolute error {self.max_abs_error:.2e}, eps {self.eps:g}")


def _warn_unless_float64(x: torch.Tensor) -> None:
    if x.dtype != torch.float64:
        warnings.warn(f"gradient_check on {x.dtype}: rounding alone gives relative errors around 1e-4 to 1e-2 "
                      "in float32. Convert the model and x with .double() for a meaningful check.", stacklevel=3)


def relative_error(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    """Elementwise |a - b| / max(|a|, |b|, floor): 0 when equal, 1 when one of them is 0, 2 for opposite signs."""
    denom = torch.maximum(a.abs(), b.abs()).clamp_min(floor)
    return (a - b).abs() / denom


def gradient_check(f: ScalarFn, x: torch.Tensor, eps: float = 1e-5, tol: float = 1e-4,
                   grad: torch.Tensor | None = None) -> GradCheck:
    """Check a gradient against central differences, reporting the max relative error.

    `grad` is the gradient to be checked (autograd's by default). Run it in float64 (a
    warning says so otherwise): in float32 rounding alone gives errors of 1e-4 to 1e-2.
    Relative errors are measured with a floor of 1e-3 times the largest gradient entry,
    so that entries that are nearly zero in both gradients do not count as large errors.
    """
    _check_input(x)
    eps = _check_eps(eps)
    _warn_unless_float64(x)
    if grad is None:
        grad = autograd_grad(f, x)
    if grad.shape != x.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but x has shape {tuple(x.shape)}")
    numeric = finite_difference_grad(f, x, eps, method="central")
    # Elements where both gradients are tiny carry no information; the floor keeps them from
    # dominating the relative error with 0/0-like ratios.
    floor = 1e-3 * float(numeric.abs().max().clamp_min(1e-12))
    rel = relative_error(grad.to(numeric.dtype), numeric, floor=floor)
    return GradCheck(max_abs_error=float((grad - numeric).abs().max()), max_rel_error=float(rel.max()),
                     eps=eps, tol=tol)


# --------------------------------------------------------------------------- gradient ascent

@dataclass
class AscentResult:
    """What `gradient_ascent` returns: the final input, the recorded frames and scores."""
    x: torch.Tensor
    frames: list[torch.Tensor] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def gradient_ascent(f: ScalarFn, x: torch.Tensor, *, step_size: float, n_steps: int,
                    normalize: bool = True, clamp: tuple[float, float] | None = (0.0, 1.0),
                    record_every: int = 1) -> AscentResult:
    """Change the input, not the weights: x <- x + step_size * grad f(x), n_steps times.

    With `normalize=True` the gradient is divided by its root-mean-square first, so that
    `step_size` is the typical change of one pixel per step whatever the scale of f.
    `clamp` keeps x in the valid pixel range after every step (None to switch it off).
    Frames and scores are recorded before the first step and every `record_every` steps.
    """
    _check_input(x)
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
    if record_every < 1:
        raise ValueError(f"record_every must be at least 1, got {record_every}")
    result = AscentResult(x=x.detach().clone())
    current = x.detach().clone()
    for step in range(n_steps + 1):
        current.requires_grad_(True)
        score = _scores(f, current[None])[0]
        if step % record_every == 0 or step == n_steps:
            result.frames.append(current.detach().clone())
            result.scores.append(score.detach().item())
        if step == n_steps:
            break
        (grad,) = torch.autograd.grad(score, current)
        with torch.no_grad():
            if normalize:
                grad = grad / grad.pow(2).mean().sqrt().clamp_min(1e-12)
            current = current + step_size * grad
            if clamp is not None:
                current = current.clamp(*clamp)
    result.x = current.detach()
    return result


# --------------------------------------------------------------------------- counting calls

class CallCounter:
    """Wrap a function f to count how often it is called and how many inputs it evaluates."""

    def __init__(self, f: ScalarFn):
        self.f = f
        self.calls = 0
        self.inputs = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs += batch.shape[0]
        return self.f(batch)

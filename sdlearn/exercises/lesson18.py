"""Checks for the exercises of lesson 18, textual inversion."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor


# --------------------------------------------------------------------------- 18.1

def _adam(row: torch.Tensor, gradient: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """The experiment: torch.optim.Adam (no weight decay) given the same gradient at every step."""
    parameter = torch.nn.Parameter(row.clone())
    optimizer = torch.optim.Adam([parameter], lr=lr)
    for _ in range(steps):
        parameter.grad = gradient.clone()
        optimizer.step()
    return parameter.detach()


@exercise("18.1", "where Adam moves a row")
def check_adam_row_after(adam_row_after):
    g = torch.Generator().manual_seed(181)
    row = torch.randn(8, generator=g)
    sizes = torch.tensor([10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4, 1.0, 0.0])    # very different sizes, and one zero
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    gradient = sizes * signs
    lr, steps = 1e-2, 5
    expected = _adam(row, gradient, lr, steps)
    got = adam_row_after(row.clone(), gradient.clone(), lr, steps)
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return the row as a tensor, (D,), not {type(got).__name__}.")
    if got.shape != row.shape:
        raise Failed(f"return the row, shape {tuple(row.shape)}, got {tuple(got.shape)}.")
    got = got.detach().float()
    wrong = {
        "that is plain gradient descent, row - lr * steps * gradient: each number moves in proportion to its "
        "gradient. Adam divides by the running root mean square of the gradient, so with the same gradient at every "
        "step each number moves by lr per step, whatever its size.": row - lr * steps * gradient,
        "that is one step; the row moves by lr at each of the steps.": row - lr * gradient.sign(),
        "Adam steps against the gradient, downhill: row - ..., not row + ...": row + lr * steps * gradient.sign(),
        "you divided by the length of the whole gradient vector; Adam divides each number by its own running "
        "root mean square, so every number moves by lr per step.": row - lr * steps * gradient / gradient.norm(),
        "a number whose gradient is exactly 0 does not move (Adam's moments stay 0); the others move by lr per "
        "step.": row - lr * steps * (signs),
    }
    name_the_mistake(got, wrong, atol=1e-5)
    if not same_tensor(got, expected, atol=1e-5):
        raise Failed("the row differs from what torch.optim.Adam gives after these steps. With the same gradient g at "
                     "every step, the bias-corrected moments are m = g and v = g^2: what is m / sqrt(v)?")
    again = adam_row_after(row.clone(), gradient.clone(), 3e-3, 12)
    if not isinstance(again, torch.Tensor) or not same_tensor(again.detach().float(), _adam(row, gradient, 3e-3, 12),
                                                              atol=1e-5):
        raise Failed("right for lr = 1e-2 and 5 steps, wrong for 3e-3 and 12: use the arguments you are given.")
    return ("each number moves by lr per step, whatever the size of its gradient (a gradient of 1e-4 moves it as far "
            "as one of 10): a row that the loss barely touches still moves as far as the new word's.")


# --------------------------------------------------------------------------- 18.2

def _as_whole(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise Failed(f"{what} should be a whole number, got {value!r}.")
    if value != int(value):
        raise Failed(f"{what} should be a whole number of steps, got {value!r}: round it (which way?).")
    return int(value)


@exercise("18.2", "how long until a frozen row has shrunk")
def check_steps_to_shrink(steps_to_shrink):
    cases = [(2e-3, 1e-2, 0.5),          # diffusers' README learning rate: when is a "frozen" row halved?
             (3e-3, 1e-2, 0.97),         # this lesson's: 3% shorter
             (2e-3, 1e-2, 0.1)]          # and to a tenth
    for lr, weight_decay, factor in cases:
        got = _as_whole(steps_to_shrink(lr, weight_decay, factor), "the number of steps")
        keep = 1 - lr * weight_decay                          # what one AdamW step leaves of a row without gradient
        right = math.ceil(math.log(factor) / math.log(keep))
        if keep ** right > factor:                            # guard the rounding of the logarithms
            right += 1
        if got == right:
            continue
        where = f"for lr {lr:g}, weight_decay {weight_decay:g} and factor {factor:g} you said {got:,}"
        approximate = math.ceil(-math.log(factor) / (lr * weight_decay))
        if got == right - 1:
            raise Failed(f"{where}: after {got:,} steps the row is {keep ** got:.6f} of its length, still above "
                         f"{factor:g}. Take the first whole number of steps that gets there: round up.")
        if got == approximate:
            raise Failed(f"{where}: -ln(factor) / (lr * weight_decay) uses ln(1 - x) ~ -x, close but not exact; the "
                         f"row is {keep ** got:.7f} of its length after {got:,} steps. Use log(factor) / "
                         "log(1 - lr * weight_decay).")
        if got == math.ceil(math.log(factor) / math.log(1 - weight_decay)):
            raise Failed(f"{where}: AdamW multiplies by 1 - lr * weight_decay at each step, not 1 - weight_decay.")
        raise Failed(f"{where}: after {got:,} steps the row is {keep ** got:.6f} of its length. Find the smallest k "
                     f"with (1 - lr * weight_decay)^k <= factor.")
    return ("k = ceil(log(factor) / log(1 - lr * weight_decay)): at the README's learning rate about 35,000 steps "
            "halve a frozen row and about 115,000 leave a tenth; at this lesson's, about 1,000 take 3% off.")


# --------------------------------------------------------------------------- 18.3

def _chance_similarity(num_rows: int, dim: int, trials: int = 301) -> float:
    """The median over `trials` draws of the largest cosine similarity of a fixed direction with `num_rows` random ones.

    The cosine of a fixed unit vector with a Gaussian vector is x1 / sqrt(x1^2 + chi^2_{dim - 1}), so the draws
    need two numbers per row, not `dim`.
    """
    g = torch.Generator().manual_seed(183)
    x1 = torch.randn((trials, num_rows), generator=g, dtype=torch.float64)
    rest = torch._standard_gamma(torch.full((trials, num_rows), (dim - 1) / 2, dtype=torch.float64),
                                 generator=g) * 2          # chi^2 with dim - 1 degrees of freedom
    cosine = x1 / (x1 ** 2 + rest).sqrt()
    return cosine.max(dim=1).values.median().item()


@exercise("18.3", "how similar is a random row by chance")
def check_chance_similarity(chance_similarity):
    tolerance = 0.04
    for num_rows, dim in [(49408, 64), (25, 64), (2000, 768)]:
        got = chance_similarity(num_rows, dim)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise Failed(f"return one number, the typical largest similarity, not a tensor of shape "
                             f"{tuple(got.shape)}.")
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or math.isnan(got):
            raise Failed(f"return one number, a cosine similarity, not {got!r}.")
        right = _chance_similarity(num_rows, dim)
        if abs(got - right) <= tolerance:
            continue
        where = f"for {num_rows:,} random rows in {dim} dimensions you said {got:.3f}"
        if abs(got) < 0.02:
            raise Failed(f"{where}: that is the typical similarity of one random row, about 0. The question is the "
                         "largest of them: take the max over the rows, then the median over many draws.")
        if got > 1:
            raise Failed(f"{where}: a cosine similarity is at most 1. Divide the dot products by both lengths.")
        if abs(got - math.sqrt(2 * math.log(num_rows) / dim)) < 1e-6:
            raise Failed(f"{where}: sqrt(2 ln n / d) is the large-n limit and overestimates at these sizes; simulate "
                         "it instead.")
        if got > right + tolerance and got > 0.6:
            raise Failed(f"{where}, far above chance: are your random rows all positive (torch.rand)? A random "
                         "direction has entries of both signs: use torch.randn.")
        raise Failed(f"{where}; many draws give about {right:.2f}. Draw the rows from a Gaussian (torch.randn), take "
                     "the largest cosine with a fixed random vector, and repeat (20 draws or more) to take the median.")
    return ("chance alone gives about 0.49 among 49,408 random rows in 64 dimensions, but about 0.24 among 25: the "
            "lesson's 0.57 for 'left' stands out among the 25 trained words, less so among all rows.")

"""Checks for the exercises of lesson 16, image to image."""

from __future__ import annotations

import math

import torch

from sdlearn.editing import strength_timesteps
from sdlearn.exercises import Failed, exercise
from sdlearn.pipelines import scheduler_config


def _ddim(config: dict, num_inference_steps: int):
    """A fresh DDIMScheduler from a configuration, set to `num_inference_steps`."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


# Stable Diffusion 1.5's schedule, as in lesson 15 (its PNDM scheduler's settings, read by DDIM)
_SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
         "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}


# --------------------------------------------------------------------------- 16.1

def _as_int(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise Failed(f"{what} should be a whole number, got {value!r}.")
    return int(value)


START_RANGE = (550, 650)     # exercise 16.1: where the loop should start
MAX_CALLS = 3                # exercise 16.1: U-Net calls per image


def _as_strength(value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise Failed(f"the strength is a number between 0 and 1, got {value!r}.")
    if not 0 < value <= 1:
        raise Failed(f"the strength is a number in (0, 1], got {value!r}.")
    return float(value)


@exercise("16.1", "a start and a budget")
def check_steps_and_strength(steps_and_strength):
    answer = steps_and_strength()
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Failed("return two things, (num_inference_steps, strength), for example (10, 0.3).")
    steps, strength = _as_int(answer[0], "num_inference_steps"), _as_strength(answer[1])
    if steps < 1:
        raise Failed(f"num_inference_steps must be at least 1, got {steps}.")
    config = scheduler_config("squaredcos_cap_v2", "v_prediction")
    calls = int(steps * strength)
    if calls < 1:
        raise Failed(f"int({steps} * {strength:g}) = 0: that strength runs no step at all.")
    timesteps = strength_timesteps(_ddim(config, steps), steps, strength)
    start = int(timesteps[0])
    low, high = START_RANGE
    setting = f"{steps} steps at strength {strength:g} run {calls} U-Net call{'s' if calls > 1 else ''} from t = {start}"
    if calls > MAX_CALLS and low <= start <= high:
        raise Failed(f"{setting}: the right start, but over the budget of {MAX_CALLS} calls. Fewer inference steps "
                     "spread the same range of timesteps more widely.")
    if calls > MAX_CALLS:
        raise Failed(f"{setting}: over the budget of {MAX_CALLS} calls, and not between {low} and {high}.")
    if not low <= start <= high:
        if start < low:
            hint = ("the strength is the share of the schedule's steps that run, so with "
                    f"{steps} steps a small strength starts low. Keep the strength near 0.6 and use fewer steps.")
        else:
            hint = "start lower: a smaller share of the steps, or steps spaced differently."
        raise Failed(f"{setting}, outside {low} to {high}: {hint}")
    return (f"{setting}: with {steps} steps the trailing timesteps are {steps} evenly spaced levels, and "
            f"int({steps} * strength) picks the last {calls}. Every strength from {calls / steps:g} up to below "
            f"{(calls + 1) / steps:g} does the same: the count is rounded down.")


# --------------------------------------------------------------------------- 16.2

def _signal_kept(config: dict, num_inference_steps: int) -> list[float]:
    """sqrt(alpha_bar) at the first timestep of strength k / N, for k = 1 .. N."""
    scheduler = _ddim(config, num_inference_steps)
    timesteps = scheduler.timesteps
    return [scheduler.alphas_cumprod[timesteps[num_inference_steps - k]].sqrt().item()
            for k in range(1, num_inference_steps + 1)]


@exercise("16.2", "the strength that keeps a share of the signal")
def check_strength_for_signal(strength_for_signal):
    from diffusers import DDIMScheduler

    cases = [("our schedule", scheduler_config("squaredcos_cap_v2", "v_prediction"), 10, 0.75),
             ("Stable Diffusion 1.5's schedule", _SD15, 10, 0.1),         # strength 1 still keeps 0.118
             ("our schedule", scheduler_config("squaredcos_cap_v2", "v_prediction"), 25, 0.3)]
    for name, config, steps, min_signal in cases:
        signals = _signal_kept(config, steps)
        best = max(k for k in range(1, steps + 1) if signals[k - 1] >= min_signal)       # steps that may run
        got = _as_strength(strength_for_signal(DDIMScheduler.from_config(config), steps, min_signal))
        runs = int(steps * got)
        if runs == best:
            continue
        where = (f"with {name}, {steps} steps and min_signal {min_signal}: your strength {got:g} runs {runs} "
                 f"step{'s' if runs != 1 else ''}")
        if runs == 0:
            raise Failed(f"{where}: int({steps} * {got:g}) = 0 runs nothing. Return a strength, a share of the steps.")
        kept = signals[runs - 1]
        squared = max(k for k in range(1, steps + 1) if signals[k - 1] ** 2 >= min_signal)
        alphas_cumprod = _ddim(config, steps).alphas_cumprod
        paper = max([k for k in range(1, steps + 1)
                     if alphas_cumprod[min(1000 * k // steps, 999)].sqrt().item() >= min_signal], default=0)
        if runs == paper:
            raise Failed(f"{where}: you read the signal at t = strength x 1000, as the SDEdit paper sets t0. diffusers "
                         "starts at the first of the last int(N * strength) timesteps of the scheduler's own list "
                         f"({_ddim(config, steps).timesteps.tolist()} here): read sqrt(alphas_cumprod) there.")
        if abs(got - (1 - min_signal)) < 1e-9:
            raise Failed(f"{where}: 1 - min_signal assumes the signal falls in a straight line with the strength. "
                         "It does not: read sqrt(alphas_cumprod) at the first timestep that runs.")
        if runs == squared and runs < best:
            raise Failed(f"{where}: you compared alphas_cumprod with min_signal; the share of the signal is its "
                         f"square root, sqrt(alphas_cumprod) (the x0 term of x_t).")
        if runs > best:
            raise Failed(f"{where}, from t = {int(_ddim(config, steps).timesteps[steps - runs])}, where "
                         f"sqrt(alpha_bar) = {kept:.3f} is below {min_signal}: too strong.")
        if runs == 1:
            raise Failed(f"{where}: the smallest strength keeps the most signal, but the question is the largest "
                         f"that still keeps {min_signal}: {best} steps do.")
        raise Failed(f"{where}, keeping {kept:.3f} of the signal; {best} steps still keep at least {min_signal} "
                     f"({signals[best - 1]:.3f}). Take the largest strength that passes.")
    return ("the strength is a share of the steps (rounded down), and what survives is sqrt(alpha_bar) at the "
            "first timestep that runs: the same strength keeps different shares in different schedules.")


# --------------------------------------------------------------------------- 16.3

STRENGTHS = [0.1 * k for k in range(1, 11)]
THRESHOLD = 0.9


def _table(seed: int, *, centre: float, n: int = 50, other: float = 0.0, exact: bool = False,
           bump: int | None = None) -> dict:
    """A measured-looking table: the share that switched rises with strength, the distance grows.

    centre   the strength at which about half the pictures switched
    other    the largest share that ends up in a third class (neither the input's nor the prompt's)
    exact    make one strength switch exactly 90% (45 of 50)
    bump     make the distance at this index smaller than at the one before (measurement noise)
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(STRENGTHS, dtype=torch.float64)
    switched = torch.sigmoid((s - centre) / 0.07) * (1 - other)
    switched = (switched * n + 0.6 * torch.rand(10, generator=g, dtype=torch.float64) - 0.3).round().clamp(0, n) / n
    switched = switched + 0.0                                    # no negative zeros
    if exact:
        first = int((switched >= THRESHOLD).nonzero()[0])
        switched[first] = 45 / n
        switched[first + 1:] = switched[first + 1:].clamp_min(46 / n)
    left = torch.sigmoid((s - centre + 0.12) / 0.07)            # the input's class empties a little earlier
    to_input = torch.minimum(((1 - left) * n).round() / n, 1 - switched)
    distance = 0.03 + 0.25 * s**1.5 + 0.004 * torch.rand(10, generator=g, dtype=torch.float64)
    if bump is not None:
        distance[bump] = distance[bump - 1] - 0.006
    return {"strengths": [round(x, 1) for x in STRENGTHS], "to_prompt_class": switched.tolist(),
            "to_input_class": to_input.tolist(), "distance": distance.tolist()}


def _tables() -> list[tuple[str, dict]]:
    """The check's tables, each with a feature that tells one mistake apart."""
    return [
        ("the table where one strength switches exactly 90%", _table(1, centre=0.42, exact=True)),
        ("the table where the input's class empties before the prompt's fills (a third class takes some)",
         _table(2, centre=0.5, other=0.08)),
        ("the table where the distance dips at strength 0.8 (measurements are noisy)",
         _table(3, centre=0.53, bump=7)),
        ("the table where no strength switches 90%", _table(4, centre=0.6, other=0.2)),
        ("an ordinary table", _table(5, centre=0.35)),
    ]


def _closest(indices: list[int], distance: list[float]) -> int | None:
    """Of the given positions, the one with the smallest distance (None for none)."""
    best = None
    for k in indices:
        if best is None or distance[k] < distance[best]:
            best = k
    return best


def _right(table: dict) -> float | None:
    ok = [k for k, f in enumerate(table["to_prompt_class"]) if f >= THRESHOLD]
    best = _closest(ok, table["distance"])
    return None if best is None else table["strengths"][best]


def _mistakes(table: dict) -> list[tuple[str, float | None]]:
    """(message, the answer a typical mistake gives) for one table."""
    s, p, i, d = table["strengths"], table["to_prompt_class"], table["to_input_class"], table["distance"]
    everything = list(range(len(s)))
    ok = [k for k in everything if p[k] >= THRESHOLD]
    strict = [k for k in everything if p[k] > THRESHOLD]
    left = [k for k in everything if 1 - i[k] >= THRESHOLD]
    most = max(p)

    def strength(k):
        return None if k is None else s[k]

    out = [
        ("90% or more qualifies: use >= 0.9, not > 0.9.", strength(_closest(strict, d))),
        ("that counts the pictures that left the input's class (1 - to_input_class); a switch means the "
         "classifier sees the prompt's class, to_prompt_class >= 0.9. Some pictures become a third class.",
         strength(_closest(left, d))),
        ("you took the smallest strength that switches 90%, but measured distances do not always grow with "
         "strength: among the strengths that switch, take the one with the smallest distance.",
         strength(min(ok)) if ok else None),
        ("that is the strongest of the strengths that switch, the furthest from the input; take the one with "
         "the smallest distance.", strength(max(ok)) if ok else None),
        ("that strength switches the most, but the task is the one closest to the input among those that "
         "switch at least 90%.", strength(min(k for k in everything if p[k] == most))),
        ("that is the closest strength of all, but it does not switch 90% of the pictures: keep only the "
         "strengths with to_prompt_class >= 0.9 first.", strength(_closest(everything, d))),
        ("return the strength itself, not its position in the list.", _closest(ok, d)),
    ]
    if ok:
        out.append(("return the strength, not its distance.", d[_closest(ok, d)]))
    return out


@exercise("16.3", "choosing the strength")
def check_choose_strength(choose_strength):
    for name, table in _tables():
        got = choose_strength(list(table["strengths"]), list(table["to_prompt_class"]),
                              list(table["to_input_class"]), list(table["distance"]))
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        right = _right(table)
        if right is None:
            if got is None:
                continue
            raise Failed(f"for {name}, no strength switches 90% of the pictures (the most is "
                         f"{max(table['to_prompt_class']):.0%}): return None rather than the best of the "
                         f"rest.")
        if got is None:
            raise Failed(f"for {name} you returned None, but strength {right:g} switches "
                         f"{table['to_prompt_class'][table['strengths'].index(right)]:.0%}.")
        if hasattr(got, "item") and not isinstance(got, bool):       # a NumPy or PyTorch scalar
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise Failed(f"return the strength as a number (or None), got {type(got).__name__}.")
        if abs(got - right) < 1e-9:
            continue
        for message, answer in _mistakes(table):
            if answer is not None and abs(got - answer) < 1e-9 and abs(answer - right) > 1e-9:
                raise Failed(f"for {name}: {message}")
        raise Failed(f"for {name} the answer is strength {right:g}: of the strengths with to_prompt_class >= 0.9, "
                     f"the one with the smallest distance; you gave {got!r}.")
    return "the least change that still does what the prompt asks, nine times in ten."

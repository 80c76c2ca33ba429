"""Checks for the exercises of lesson 06, samplers."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.samplers import SAMPLERS, lms_coefficient
from sdlearn.schedules import alphas_cumprod_from_betas, cosine_betas, make_schedule


def _close(got, expected, what):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise Failed(f"{what} should return a tensor of shape {tuple(expected.shape)}.")
    return torch.allclose(got.double(), expected, atol=1e-6)


# --------------------------------------------------------------------------- 06.1 DDIM as an Euler step

@exercise("06.1", "DDIM is Euler in other coordinates")
def check_ddim_step(ddim_step):
    g = torch.Generator().manual_seed(62)
    x_t = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)      # any prediction, not the true noise
    for a, a_prev in [(0.3, 0.6), (0.02, 0.9)]:
        got = ddim_step(x_t.clone(), eps.clone(), a, a_prev)
        sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
        x = x_t / math.sqrt(a)
        expected = math.sqrt(a_prev) * (x - sigma * eps) + math.sqrt(1 - a_prev) * eps       # DDIM, eq. 12
        what = "ddim_step(x_t, eps, alpha_bar, alpha_bar_prev)"
        if _close(got, expected, what):
            continue
        if _close(got, x + (sigma_prev - sigma) * eps, what):
            raise Failed("that is the Euler step in the noise-level form, x = x_t / sqrt(alpha_bar). Convert back: "
                         "x_t' = sqrt(alpha_bar_prev) * x', at the new level.")
        if _close(got, math.sqrt(a) * (x + (sigma_prev - sigma) * eps), what):
            raise Failed("convert back with the new level's alpha-bar: x_t' = sqrt(alpha_bar_prev) * x'.")
        if _close(got, math.sqrt(a_prev) * (x + ((1 - a_prev) / a_prev - (1 - a) / a) * eps), what):
            raise Failed("sigma is the square root of (1 - alpha_bar) / alpha_bar, the noise's standard deviation "
                         "relative to the signal.")
        if _close(got, math.sqrt(a_prev) * (x + (math.sqrt(1 - a_prev) - math.sqrt(1 - a)) * eps), what):
            raise Failed("sqrt(1 - alpha_bar) is the noise's standard deviation in x_t; in x = x_t / sqrt(alpha_bar) "
                         "it is sigma = sqrt((1 - alpha_bar) / alpha_bar).")
        if _close(got, math.sqrt(a_prev) * (x + (sigma_prev - sigma) * eps / sigma), what):
            raise Failed("the direction is d = (x - D(x; sigma)) / sigma with D = x - sigma * eps: the noise "
                         "prediction itself, not eps / sigma.")
        raise Failed(f"for alpha_bar = {a}, alpha_bar_prev = {a_prev} the result differs from DDIM's update. Three "
                     "moves: x = x_t / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar); an Euler step "
                     "with d = eps to sigma_prev; then x_t' = sqrt(alpha_bar_prev) * x'.")
    return "the same numbers as DDIM's update in alpha-bar form: DDIM is Euler's method on the same ODE."


# --------------------------------------------------------------------------- 06.2 second-order LMS weights

def _as_pair(value) -> tuple[float, float]:
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise Failed("return two numbers: (weight of d_i, weight of d_(i-1)).") from exc
    return first, second


@exercise("06.2", "the weights of a two-step method")
def check_lms2_weights(lms2_weights):
    cases = [(14.6146, 9.6826, 6.678), (20291.3, 6.37, 3.1), (1.0097, 0.7913, 0.0)]
    for sigma_prev, sigma, sigma_next in cases:
        got = _as_pair(lms2_weights(sigma_prev, sigma, sigma_next))
        sigmas = torch.tensor([sigma_prev, sigma, sigma_next])
        expected = tuple(lms_coefficient(sigmas, 1, 2, j) for j in range(2))
        h = sigma_next - sigma
        if all(math.isclose(g, e, rel_tol=1e-3, abs_tol=1e-6 * abs(h)) for g, e in zip(got, expected)):
            continue
        where = f"for sigmas {sigma_prev:g}, {sigma:g}, {sigma_next:g}"

        def near(a, b):
            return all(math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-6 * abs(h)) for x, y in zip(a, b))

        if near(got, expected[::-1]):
            raise Failed(f"{where} the two weights are swapped: the newest direction, d_i, comes first.")
        if near(got, (1.5 * h, -0.5 * h)):
            raise Failed(f"{where} you return (3/2, -1/2) times the step, the Adams-Bashforth weights for equal "
                         "steps. Here the steps differ: integrate the straight line through (sigma_(i-1), d_(i-1)) "
                         "and (sigma_i, d_i) from sigma_i to sigma_(i+1).")
        if near(got, (expected[0] / h, expected[1] / h)) and not near((1.0, 1.0), (h, h)):
            raise Failed(f"{where} those are the weights as multiples of the step, as the lesson printed them; "
                         "return the weights themselves, which multiply d_i and d_(i-1) in x + w_i d_i + "
                         "w_(i-1) d_(i-1).")
        if near(got, (-expected[0], -expected[1])):
            raise Failed(f"{where} the signs are flipped: the step runs from sigma_i down to sigma_(i+1), so the "
                         "integral's length, sigma_(i+1) - sigma_i, is negative.")
        raise Failed(f"{where} expected weights ({expected[0]:.4g}, {expected[1]:.4g}), got ({got[0]:.4g}, "
                     f"{got[1]:.4g}). The line through the two points is d_i + (tau - sigma_i) (d_i - d_(i-1)) / "
                     "(sigma_i - sigma_(i-1)); integrate it over tau from sigma_i to sigma_(i+1).")
    return ("the weights add up to the step, and from the cosine schedule's sigma of 20,291 the older direction "
            "gets almost none: the lesson's second row.")


# --------------------------------------------------------------------------- 06.3 a sampler for a budget

# A small case whose answer is known exactly: one-dimensional data from three narrow bumps, the
# exact noise prediction for them, the lesson's cosine schedule and trailing spacing.
CENTRES = (-0.8, 0.1, 0.7)
WIDTH = 0.05
N_SAMPLES = 2000
BUDGETS = (5, 10)
QUALITY_BAR = 1.5          # pass: at most 1.5 times the error of the best sampler within the budget


@lru_cache(maxsize=1)
def _alphas_cumprod() -> torch.Tensor:
    return alphas_cumprod_from_betas(cosine_betas(1000))


def _exact_noise_model(x: torch.Tensor, t) -> torch.Tensor:
    """E[noise | x_t] for the three-bump data: a model with no training error."""
    step = int(round(float(torch.as_tensor(t).reshape(-1)[0])))
    a = _alphas_cumprod()[step].double()
    centres = torch.tensor(CENTRES, dtype=torch.float64)
    xt = x.double().reshape(-1, 1)
    variance = a * WIDTH ** 2 + 1 - a                               # of x_t given the bump
    weights = (-(xt - a.sqrt() * centres) ** 2 / (2 * variance)).softmax(-1)
    x0_given_bump = centres + a.sqrt() * WIDTH ** 2 / variance * (xt - a.sqrt() * centres)
    x0 = (weights * x0_given_bump).sum(-1)
    return ((xt[:, 0] - a.sqrt() * x0) / (1 - a).sqrt()).reshape(x.shape).to(x.dtype)


@lru_cache(maxsize=1)
def _true_quantiles() -> torch.Tensor:
    """The N_SAMPLES quantiles of the data, by bisection on its cumulative distribution."""
    p = (torch.arange(N_SAMPLES, dtype=torch.float64) + 0.5) / N_SAMPLES
    centres = torch.tensor(CENTRES, dtype=torch.float64)
    low, high = torch.full_like(p, -2.0), torch.full_like(p, 2.0)
    for _ in range(60):
        mid = (low + high) / 2
        below = (0.5 * (1 + torch.erf((mid[:, None] - centres) / (WIDTH * math.sqrt(2))))).mean(-1) < p
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return (low + high) / 2


def network_calls(sampler: str, num_inference_steps: int) -> int:
    """Heun calls the network twice per step but on its last; every other sampler once per step."""
    return 2 * num_inference_steps - 1 if sampler == "heun" else num_inference_steps


@lru_cache(maxsize=64)
def sampler_error(sampler: str, num_inference_steps: int) -> float:
    """The 1-Wasserstein distance between N_SAMPLES samples and the data, as the lesson runs the sampler."""
    schedule = make_schedule(_alphas_cumprod(), num_inference_steps, timestep_spacing="trailing")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 1, 1, 1, generator=generator)
    if sampler not in ("ddpm", "ddim"):
        x = x * schedule.init_noise_sigma
    kwargs = {"clip_sample": True} if sampler in ("ddpm", "ddim") else {}
    out = SAMPLERS[sampler](_exact_noise_model, x, schedule, prediction_type="epsilon", generator=generator, **kwargs)
    return (out.reshape(-1).double().sort().values - _true_quantiles()).abs().mean().item()


@lru_cache(maxsize=None)
def best_within(budget: int) -> tuple[str, int, float]:
    """The best sampler for a budget, each sampler taking as many steps as the budget allows."""
    candidates = []
    for sampler in SAMPLERS:
        steps = (budget + 1) // 2 if sampler == "heun" else budget
        candidates.append((sampler_error(sampler, steps), sampler, steps))
    error, sampler, steps = min(candidates)
    return sampler, steps, error


@exercise("06.3", "a sampler for a budget")
def check_choose_sampler(choose_sampler):
    verdicts = []
    for budget in BUDGETS:
        choice = choose_sampler(budget)
        if not isinstance(choice, (tuple, list)) or len(choice) != 2:
            raise Failed("return a pair (sampler name, number of steps), for example ('euler', 10).")
        sampler, steps = choice
        if sampler not in SAMPLERS:
            raise Failed(f"{sampler!r} is not one of the samplers: choose from {', '.join(SAMPLERS)}.")
        if isinstance(steps, torch.Tensor):
            steps = steps.item()
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise Failed(f"the number of steps should be a whole number of at least 1, got {steps!r}.")
        steps = int(steps)
        calls = network_calls(sampler, steps)
        if calls > budget:
            per_step = "two per step, one on the last" if sampler == "heun" else "one per step"
            raise Failed(f"{sampler} with {steps} steps calls the network {calls} times ({per_step}), over the budget "
                         f"of {budget}.")
        error = sampler_error(sampler, steps)
        best_sampler, best_steps, best = best_within(budget)
        verdicts.append(f"budget {budget}: {sampler} with {steps} steps, error {error:.3f} (best {best:.3f})")
        if math.isfinite(error) and error <= QUALITY_BAR * best:
            continue
        where = (f"with a budget of {budget} calls, {sampler} with {steps} steps is off the data by {error:.3f}, "
                 f"against {best:.3f} for the best choice ({best_sampler}, {best_steps} steps)")
        if not math.isfinite(error):
            raise Failed(f"with a budget of {budget} calls, {sampler} with {steps} steps gives NaN on this schedule: "
                         "pick another.")
        if sampler == "heun":
            raise Failed(f"{where}. Heun's first step on the cosine schedule with trailing spacing starts at "
                         "sigma = 20,291 and averages in a slope it multiplies by that whole step: it fails here, "
                         "as in the lesson's table.")
        if sampler in ("ddpm", "euler_ancestral"):
            raise Failed(f"{where}. Ancestral samplers add fresh noise at every step and need more steps to "
                         "average it out than this budget allows.")
        if calls < budget and sampler_error(sampler, budget) <= QUALITY_BAR * best:
            raise Failed(f"{where}. You spend only {calls} of the {budget} calls; more steps cost nothing extra "
                         "here and bring the error down.")
        raise Failed(f"{where}: more than {QUALITY_BAR} times as much.")
    return "; ".join(verdicts) + "."

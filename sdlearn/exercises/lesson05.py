"""Checks for the exercises of lesson 05, DDPM.

05.1 the clean image implied by a v-prediction, 05.2 the variational bound's weights with the
posterior variance beta~_t, 05.3 one step of DDPM's ancestral sampler over a jump of several
timesteps, checked against `sdlearn.samplers.sample_ddpm` itself. Every check runs the
student's function on seeded inputs, compares with the right answer, and names the typical
wrong answers.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.samplers import Step, sample_ddpm
from sdlearn.schedules import alphas_cumprod_from_betas, cosine_betas, linear_betas, make_schedule
from sdlearn.utils import randn_tensor


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 1, 4, 4, generator=g).clamp(-1, 1)
    eps = torch.randn(2, 1, 4, 4, generator=g)
    return x0, eps


def _same(got, expected, what):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise Failed(f"{what} should return a tensor of shape {tuple(expected.shape)}.")
    return torch.allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------- 05.1

@exercise("05.1", "x0 from a v-prediction")
def check_x0_from_v(x0_from_v):
    x0, eps = _data(53)
    for alpha_bar in (0.9, 0.5, 0.02):
        x_t = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
        v = alpha_bar ** 0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
        got = x0_from_v(x_t.clone(), v.clone(), alpha_bar)
        a, s = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
        if _same(got, (x_t - s * v) / a, "x0_from_v"):
            raise Failed("that is the formula for a noise prediction, (x_t - sqrt(1 - alpha_bar) eps) / "
                         "sqrt(alpha_bar): it reads the prediction as the noise eps. A v-model predicts "
                         "v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0: solve for x0 with x_t and v.")
        if _same(got, a * x_t + s * v, "x0_from_v"):
            raise Failed("almost: the sign of the v term is wrong. Since v = a eps - s x0, adding s v brings eps "
                         "back in; subtract it.")
        if not _same(got, x0, "x0_from_v"):
            raise Failed(f"at alpha_bar = {alpha_bar} the result is not x0. With a = sqrt(alpha_bar) and "
                         "s = sqrt(1 - alpha_bar): x_t = a x0 + s eps and v = a eps - s x0; combine them so that eps cancels.")
    return "recovers x0 exactly: x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."


# --------------------------------------------------------------------------- 05.2

def _bound_weights(betas: torch.Tensor, *, variance: str = "small", shift: str | None = None,
                   squared: bool = True) -> torch.Tensor:
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)) for t = 2..T, and its typical misreadings.

    variance  "small": sigma_t^2 = beta~_t; "large": sigma_t^2 = beta_t (the lesson's weights)
    shift     None; "denominator": 1 - alpha-bar_{t-1} where 1 - alpha-bar_t belongs;
              "posterior": beta~_t's ratio upside down; "betas": beta_{t-1} and alpha_{t-1} for beta_t and alpha_t
    squared   False: beta_t not squared
    """
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    one_minus_now, one_minus_before = 1 - alphas_cumprod[1:], 1 - alphas_cumprod[:-1]
    beta, alpha = (betas[:-1], alphas[:-1]) if shift == "betas" else (betas[1:], alphas[1:])
    if variance == "large":
        sigma2 = beta
    elif shift == "posterior":
        sigma2 = beta * one_minus_now / one_minus_before
    else:
        sigma2 = beta * one_minus_before / one_minus_now
    last = one_minus_before if shift == "denominator" else one_minus_now
    return (beta ** 2 if squared else beta) / (2 * sigma2 * alpha * last)


def _as_weights(got) -> tuple[torch.Tensor, bool]:
    """The student's weights in float64, and whether they were computed in float64."""
    if isinstance(got, (list, tuple)) or type(got).__module__ == "numpy":
        try:
            got = torch.as_tensor(got)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise Failed(f"return the weights as a tensor, got a {type(got).__name__} torch cannot read.") from exc
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return the weights as a tensor of T - 1 values, got {type(got).__name__}.")
    if not got.is_floating_point():
        raise Failed(f"the weights should be floating-point numbers, got {got.dtype}.")
    return got.detach().double(), got.dtype == torch.float64


def _close_weights(got: torch.Tensor, expected: torch.Tensor, rtol: float) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=rtol, atol=0.0))


@exercise("05.2", "the bound's weights with the other variance")
def check_elbo_weights_small_variance(elbo_weights_small_variance):
    schedules = (("linear", linear_betas(1000)), ("linear", linear_betas(1000).double()),
                 ("cosine", cosine_betas(1000)), ("linear (T = 50)", linear_betas(50, 1e-3, 0.2)))
    for name, betas in schedules:
        T = len(betas)
        got, in_float64 = _as_weights(elbo_weights_small_variance(betas.clone()))
        expected = _bound_weights(betas.double())
        # float32 loses about 3 of its 7 digits in 1 - alpha-bar_1 = beta_1 = 1e-4: 1e-3 there, 1e-4 in float64
        rtol = 1e-4 if in_float64 and betas.dtype == torch.float64 else 1e-3
        if got.shape == (T,):
            if not torch.isfinite(got[0]):
                raise Failed(f"you returned T = {T} values, and the first, t = 1, is {got[0].item()}: there "
                             "beta~_1 = beta_1 (1 - alpha-bar_0) / (1 - alpha-bar_1) = 0. The term t = 1 is L_0, "
                             "the decoder's, not a KL with a weight: return lambda_t for t = 2..T only (T - 1 values).")
            lesson = (betas.double() / (2 * (1 - betas.double()) * (1 - (1 - betas.double()).cumprod(0))))
            if _close_weights(got, lesson, rtol):
                raise Failed("that is the lesson's weight, with sigma_t^2 = beta_t, and for all T timesteps: use "
                             "beta~_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t), and return t = 2..T "
                             "(t = 1 is L_0, where beta~_1 = 0).")
            raise Failed(f"you returned T = {T} values: return lambda_t for t = 2..T only, T - 1 = {T - 1} values. "
                         "The term t = 1 is L_0, the decoder's, where beta~_1 = 0.")
        if got.shape != expected.shape:
            raise Failed(f"return one weight per timestep t = 2..T, a 1-D tensor of shape ({T - 1},) for these {T} "
                         f"betas; got shape {tuple(got.shape)}.")
        if not torch.isfinite(got).all():
            raise Failed(f"some weights are nan or inf ({name} schedule): with beta~_t every term t >= 2 is finite. "
                         "A division by 1 - alpha-bar_0 = 0 would mean alpha-bar_{t-1} went wrong: the table "
                         "alphas_cumprod[t - 1] is alpha-bar_t.")
        mistakes = {
            "that is the weight with sigma_t^2 = beta_t, the lesson's: use sigma_t^2 = beta~_t = beta_t "
            "(1 - alpha-bar_{t-1}) / (1 - alpha-bar_t).": _bound_weights(betas.double(), variance="large"),
            "beta_t is not squared: lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)), the square from "
            "the two means' difference.": _bound_weights(betas.double(), squared=False),
            "shifted by one: the factor (1 - alpha-bar_t) of lambda_t uses alpha-bar_t, not alpha-bar_{t-1} (only "
            "beta~_t's numerator has alpha-bar_{t-1}).": _bound_weights(betas.double(), shift="denominator"),
            "beta~_t's ratio is upside down: beta~_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t), smaller "
            "than beta_t.": _bound_weights(betas.double(), shift="posterior"),
            "shifted by one: you used beta_{t-1} and alpha_{t-1}. For t = 2..T they are betas[1:] and alphas[1:]; "
            "alphas_cumprod[:-1] is alpha-bar_{t-1}.": _bound_weights(betas.double(), shift="betas"),
        }
        for message, wrong in mistakes.items():
            if _close_weights(got, wrong, rtol):
                raise Failed(message)
        if _close_weights(got[1:], expected[:-1], rtol) or _close_weights(got[:-1], expected[1:], rtol):
            raise Failed("shifted by one timestep: the first value is lambda_2, with beta~_2 = beta_2 "
                         "(1 - alpha-bar_1) / (1 - alpha-bar_2); with 0-based tensors, betas[1:], "
                         "alphas_cumprod[1:] (alpha-bar_t) and alphas_cumprod[:-1] (alpha-bar_{t-1}).")
        if not _close_weights(got, expected, rtol):
            worst = ((got - expected).abs() / expected.abs()).argmax().item()
            raise Failed(f"on the {name} schedule lambda_{worst + 2} is {got[worst].item():.6g}, expected "
                         f"{expected[worst].item():.6g}: lambda_t = beta_t^2 / (2 beta~_t alpha_t (1 - alpha-bar_t)) "
                         "with beta~_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t).")
    weights = _bound_weights(linear_betas(1000).double())
    return (f"right on the linear and the cosine schedules. With beta~_t the weight simplifies to beta_t / "
            f"(2 alpha_t (1 - alpha-bar_{{t-1}})); on the linear schedule it is largest at the clean end, lambda_2 = "
            f"{weights[0].item():.2f}, {(weights[0] / weights[-1]).item():.0f} times lambda_T = "
            f"{weights[-1].item():.4f}.")


# --------------------------------------------------------------------------- 05.3

_JUMP = ("the jump from t to t_prev: beta = 1 - alpha-bar_t / alpha-bar_t_prev (alpha-bar = 1 past the end), mean = "
         "(x_t - beta / sqrt(1 - alpha-bar_t) eps) / sqrt(1 - beta), then mean + sqrt(beta~) noise with beta~ = "
         "beta (1 - alpha-bar_t_prev) / (1 - alpha-bar_t), except at the last jump (t_prev = -1)")


def _jump(x, eps, a_t, a_prev, beta, variance, noise, *, rooted: bool = True):
    """The jump's mean for `beta`, plus `noise` with `variance` (None: no noise); alpha-bar_t / a_prev is 1 - beta."""
    alpha = a_t / a_prev if beta is None else 1 - beta
    beta = 1 - alpha
    mean = (x - beta / (1 - a_t).sqrt() * eps) / alpha.sqrt()
    if variance is None:
        return mean
    return mean + (variance.sqrt() if rooted else variance) * noise


def _jump_mistakes(x, eps, t, t_prev, ac, noise) -> list:
    """The typical wrong results of one jump, each with the message that names it (None: not here)."""
    one = torch.ones((), dtype=ac.dtype)
    a_t = ac[t]
    a_prev = ac[t_prev] if t_prev >= 0 else one
    beta = 1 - a_t / a_prev
    small = beta * (1 - a_prev) / (1 - a_t)
    one_step = 1 - a_t / ac[t - 1]                           # betas[t]: the beta of one training step
    last = t_prev < 0
    last_element = (f"your last jump (t = {t} -> t_prev = -1) used alphas_cumprod[-1]: Python reads index -1 as the "
                    f"LAST element, alpha-bar_T = {ac[-1].item():.2g}, the pure-noise end, not the clean end. Past the "
                    "end alpha-bar = 1: a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else 1.")
    one_step_beta = ("you used the beta of one training step, 1 - alphas_cumprod[t] / alphas_cumprod[t - 1] "
                     f"(= betas[t]): this step jumps from t = {t} to t_prev = {t_prev}, and its beta is "
                     "1 - alpha-bar_t / alpha-bar_t_prev.")
    return [
        (last_element, _jump(x, eps, a_t, ac[-1], None, None, noise) if last else None),
        (f"your last jump (t = {t} -> t_prev = -1) used alphas_cumprod[0] as alpha-bar_t_prev: past the end of the "
         "table alpha-bar = 1 (the clean image, no noise left), not alpha-bar_0 = alphas_cumprod[0].",
         _jump(x, eps, a_t, ac[0], None, None, noise) if last else None),
        (one_step_beta, _jump(x, eps, a_t, a_prev, one_step, None if last else small, noise)),
        (one_step_beta, None if last else _jump(x, eps, a_t, a_prev, one_step, one_step * (1 - a_prev) / (1 - a_t),
                                                noise)),
        ("you used the beta of one training step (betas[t]) throughout, as if t_prev were t - 1: this step jumps "
         f"from t = {t} to t_prev = {t_prev}; its beta is 1 - alpha-bar_t / alpha-bar_t_prev.",
         None if last else _jump(x, eps, a_t, ac[t - 1], one_step, one_step * (1 - ac[t - 1]) / (1 - a_t), noise)),
        ("the mean is right, but the variance is the one-step table's beta~ (betas[t] (1 - alphas_cumprod[t - 1]) / "
         "(1 - alphas_cumprod[t])): over this jump it is beta (1 - alpha-bar_t_prev) / (1 - alpha-bar_t) with the "
         "jump's beta = 1 - alpha-bar_t / alpha-bar_t_prev.",
         None if last else _jump(x, eps, a_t, a_prev, None, one_step * (1 - ac[t - 1]) / (1 - a_t), noise)),
        ("you added noise with variance beta, the jump's beta itself (\"fixed large\"): that is the other variance "
         "the DDPM paper tried, and it works about as well, but sample_ddpm, like this check, uses the posterior's "
         "beta~ = beta (1 - alpha-bar_t_prev) / (1 - alpha-bar_t) (\"fixed small\").",
         None if last else _jump(x, eps, a_t, a_prev, None, beta, noise)),
        ("you multiplied the noise by the variance beta~: multiply it by the standard deviation, sqrt(beta~).",
         None if last else _jump(x, eps, a_t, a_prev, None, small, noise, rooted=False)),
        ("you added no noise: DDPM's ancestral sampler adds sqrt(beta~) * noise at every jump but the last, where "
         "t_prev = -1.", None if last else _jump(x, eps, a_t, a_prev, None, None, noise)),
        ("at the last jump (t_prev = -1) you added noise with variance beta = 1 - alpha-bar_t: the last jump "
         "returns the mean, with no noise (there the posterior variance beta~ is 0).",
         _jump(x, eps, a_t, one, None, beta, noise) if last else None),
    ]


def _noise_model(alphas_cumprod: torch.Tensor, shape: tuple, seed: int):
    """A stub noise predictor: its estimate of x0 is a fixed picture nudged by x. Exact, fast, nothing to train."""
    g = torch.Generator().manual_seed(seed)
    picture = torch.randn(shape, generator=g).clamp(-1, 1).to(alphas_cumprod.dtype)

    def model(x, t):
        a = alphas_cumprod[int(t)]
        guess = picture + 0.3 * torch.tanh(x)
        return (x - a.sqrt() * guess) / (1 - a).sqrt()
    return model


def _ddpm_trajectory(alphas_cumprod, num_inference_steps, spacing, seed, shape=(2, 1, 8, 8)):
    """sample_ddpm's steps with the stub model: (x_t, eps, t, t_prev, noise, x_t_prev) for each, noise as it drew it."""
    schedule = make_schedule(alphas_cumprod, num_inference_steps, timestep_spacing=spacing)
    schedule = replace(schedule, alphas_cumprod=alphas_cumprod)       # keep float64 where given
    model = _noise_model(alphas_cumprod, shape, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=alphas_cumprod.dtype)
    samples: list[torch.Tensor] = []

    def record(step: Step):
        samples.append(step.sample.clone())
    sample_ddpm(model, x.clone(), schedule, generator=generator, callback=record)

    # the same draws again, in sample_ddpm's order: the start, then noise at every step with t > 0
    replay = torch.Generator().manual_seed(seed)
    spare = torch.Generator().manual_seed(seed + 1)                   # noise a step with t = 0 does not draw
    x = torch.randn(shape, generator=replay, dtype=alphas_cumprod.dtype)
    timesteps = schedule.timesteps.round().long().tolist()
    steps = []
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        noise = randn_tensor(shape, replay if t > 0 else spare, "cpu", x.dtype)
        steps.append((x, model(x, t), t, t_prev, noise, samples[i]))
        x = samples[i]
    return steps


def _close_steps(got, expected) -> bool:
    return bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-4))


def _jump_result(got, expected: torch.Tensor) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return x_t_prev, a tensor shaped like x_t, got {type(got).__name__}.")
    if tuple(got.shape) != tuple(expected.shape):
        raise Failed(f"return x_t_prev, shaped like x_t {tuple(expected.shape)}: got {tuple(got.shape)}. Every "
                     "quantity of the jump but x_t, eps and noise is one number (alpha-bar_t is alphas_cumprod[t]).")
    return got.detach().to(expected.dtype)


@exercise("05.3", "a DDPM step over a jump")
def check_ddpm_jump(ddpm_jump):
    cosine = alphas_cumprod_from_betas(cosine_betas(1000))          # DDPMRecipe's schedule
    linear = alphas_cumprod_from_betas(linear_betas(1000))
    # cosine in float64: its first jump, 999 -> 799, has alpha-bar_t / alpha-bar_t_prev = 2.6e-8, and
    # 1 - beta computed in float32 rounds to 0; in float32 the linear schedule, and the cosine's from 750 to t = 0
    runs = (("linear", linear, "trailing", 5, 531), ("cosine", cosine.double(), "trailing", 5, 532),
            ("cosine", cosine, "leading", 4, 533))
    for name, alphas_cumprod, spacing, n, seed in runs:
        for x_t, eps, t, t_prev, noise, expected in _ddpm_trajectory(alphas_cumprod, n, spacing, seed):
            got = ddpm_jump(x_t.clone(), eps.clone(), t, t_prev, alphas_cumprod.clone(), noise.clone())
            got = _jump_result(got, expected)
            if _close_steps(got, expected):
                continue
            where = f"the jump t = {t} -> t_prev = {t_prev} ({name} schedule)"
            if t_prev < 0 and not torch.isfinite(got).all():
                raise Failed(f"{where} gave nan or inf. Most likely alphas_cumprod[t_prev] with t_prev = -1: Python "
                             "reads index -1 as the LAST element, alpha-bar_T, the pure-noise end. Past the end "
                             "alpha-bar = 1: a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else 1.")
            if not torch.isfinite(got).all():
                raise Failed(f"{where} gave nan or inf: {_JUMP}.")
            for message, wrong in _jump_mistakes(x_t, eps, t, t_prev, alphas_cumprod, noise):
                if wrong is not None and _close_steps(got, wrong):
                    raise Failed(message)
            if t_prev < 0:
                mean = _jump(x_t, eps, alphas_cumprod[t], torch.ones((), dtype=alphas_cumprod.dtype), None, None, noise)
                scale = ((got - mean) * noise).sum() / noise.pow(2).sum()
                if scale.abs() > 1e-3 and _close_steps(got, mean + scale * noise):
                    raise Failed(f"at the last jump (t_prev = -1) you added noise, {scale.item():.3g} times it: "
                                 "return the mean; at the clean end there is nothing left to add.")
            raise Failed(f"{where} differs from sample_ddpm's step: {_JUMP}.")
    return ("the same trajectories as sample_ddpm on the linear and the cosine schedules: DDPM's step works "
            "between any two timesteps, with the jump's beta.")

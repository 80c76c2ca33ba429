"""Lesson 05's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one
(the formula to compare with), so that a clearer message later is a deliberate change.
"""

import math

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 05.1 x0_from_v(x_t, v, alpha_bar)

def x0_from_v(x_t, v, alpha_bar):
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return a * x_t - s * v


def v_read_as_noise(x_t, v, alpha_bar):            # the formula for a noise prediction, as if the model predicted eps
    return (x_t - (1 - alpha_bar) ** 0.5 * v) / alpha_bar ** 0.5


def v_sign_flipped(x_t, v, alpha_bar):
    return alpha_bar ** 0.5 * x_t + (1 - alpha_bar) ** 0.5 * v


def v_coefficients_swapped(x_t, v, alpha_bar):
    return (1 - alpha_bar) ** 0.5 * x_t - alpha_bar ** 0.5 * v


def v_returns_a_number(x_t, v, alpha_bar):
    return float((alpha_bar ** 0.5 * x_t - (1 - alpha_bar) ** 0.5 * v).mean())


# --------------------------------------------------------------------------- 05.2 elbo_weights_small_variance(betas)

def elbo_weights_small_variance(betas):             # the notebook's reference solution
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    variance = betas[1:] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])      # beta~_t, t = 2..T
    return betas[1:] ** 2 / (2 * variance * alphas[1:] * (1 - alphas_cumprod[1:]))


def weights_simplified(betas):                      # beta~ cancels (1 - alpha-bar_t)
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    return betas[1:] / (2 * alphas[1:] * (1 - alphas_cumprod[:-1]))


def weights_in_python_floats(betas):                # a loop in float64, returned as a list
    weights, alpha_bar_prev = [], 1 - betas[0].item()
    for beta in betas[1:].tolist():
        alpha_bar = alpha_bar_prev * (1 - beta)
        variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
        weights.append(beta ** 2 / (2 * variance * (1 - beta) * (1 - alpha_bar)))
        alpha_bar_prev = alpha_bar
    return weights


def weights_from_log_cumsum(betas):                 # alpha-bar as exp(sum log alpha), 1 - alpha-bar as -expm1
    log_alphas_cumprod = torch.log1p(-betas).cumsum(0)
    one_minus = -torch.expm1(log_alphas_cumprod)
    return betas[1:] / (2 * (1 - betas[1:]) * one_minus[:-1])


def weights_of_the_lesson(betas):                   # sigma_t^2 = beta_t
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    return (betas / (2 * alphas * (1 - alphas_cumprod)))[1:]


def weights_with_t_1(betas):                        # all T terms: beta~_1 = 0 gives inf
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alphas_cumprod[:-1]])
    variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    return betas ** 2 / (2 * variance * alphas * (1 - alphas_cumprod))


def weights_of_the_lesson_with_t_1(betas):
    alphas = 1 - betas
    return betas / (2 * alphas * (1 - alphas.cumprod(0)))


def weights_not_squared(betas):
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    variance = betas[1:] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])
    return betas[1:] / (2 * variance * alphas[1:] * (1 - alphas_cumprod[1:]))


def weights_denominator_shifted(betas):             # (1 - alpha-bar_{t-1}) where (1 - alpha-bar_t) belongs
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    variance = betas[1:] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])
    return betas[1:] ** 2 / (2 * variance * alphas[1:] * (1 - alphas_cumprod[:-1]))


def weights_posterior_upside_down(betas):
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    variance = betas[1:] * (1 - alphas_cumprod[1:]) / (1 - alphas_cumprod[:-1])
    return betas[1:] ** 2 / (2 * variance * alphas[1:] * (1 - alphas_cumprod[1:]))


def weights_betas_shifted(betas):                   # beta_{t-1}, alpha_{t-1}
    alphas = 1 - betas
    alphas_cumprod = alphas.cumprod(0)
    variance = betas[:-1] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])
    return betas[:-1] ** 2 / (2 * variance * alphas[:-1] * (1 - alphas_cumprod[1:]))


def weights_shifted_by_one(betas):                  # lambda_2 repeated, then lambda_2 .. lambda_{T-1}
    weights = elbo_weights_small_variance(betas)
    return torch.cat([weights[:1], weights[:-1]])


def weights_as_a_row(betas):
    return elbo_weights_small_variance(betas)[None]


def weights_for_1000_steps(betas):                  # T written in
    betas = torch.cat([betas, betas[-1:].expand(1000 - len(betas))])
    return elbo_weights_small_variance(betas)


# --------------------------------------------------------------------------- 05.3 ddpm_jump(x_t, eps, t, t_prev, ...)

def ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise):       # the notebook's reference solution
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    beta = 1 - a_t / a_prev                                   # the beta of the whole jump
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    if t_prev < 0:
        return mean
    variance = beta * (1 - a_prev) / (1 - a_t)
    return mean + variance.sqrt() * noise


def jump_via_x0(x_t, eps, t, t_prev, alphas_cumprod, noise):    # as sample_ddpm writes it: x0, then eq. 7
    a_t = alphas_cumprod[t].item()
    a_prev = alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    beta = 1 - a_t / a_prev
    mean = math.sqrt(a_prev) * beta / (1 - a_t) * x0 + math.sqrt(a_t / a_prev) * (1 - a_prev) / (1 - a_t) * x_t
    return mean + math.sqrt(beta * (1 - a_prev) / (1 - a_t)) * noise   # beta~ is 0 at the last jump


def jump_with_one_step_beta(x_t, eps, t, t_prev, alphas_cumprod, noise):
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    beta = 1 - a_t / alphas_cumprod[t - 1]
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    if t_prev < 0:
        return mean
    return mean + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * noise


def jump_of_one_step(x_t, eps, t, t_prev, alphas_cumprod, noise):   # ignores t_prev except at the end
    return ddpm_jump(x_t, eps, t, t - 1 if t_prev >= 0 else -1, alphas_cumprod, noise)


def jump_with_the_tables_variance(x_t, eps, t, t_prev, alphas_cumprod, noise):
    betas = 1 - alphas_cumprod / torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])
    posterior_variance = betas[1:] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])
    mean = ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise * 0)
    if t_prev < 0:
        return mean
    return mean + posterior_variance[t - 1].sqrt() * noise


def jump_fixed_large(x_t, eps, t, t_prev, alphas_cumprod, noise):
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    beta = 1 - a_t / a_prev
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    return mean if t_prev < 0 else mean + beta.sqrt() * noise


def jump_with_the_variance(x_t, eps, t, t_prev, alphas_cumprod, noise):
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    beta = 1 - a_t / a_prev
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    return mean if t_prev < 0 else mean + beta * (1 - a_prev) / (1 - a_t) * noise


def jump_without_noise(x_t, eps, t, t_prev, alphas_cumprod, noise):
    return ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, torch.zeros_like(noise))


def jump_from_the_last_element(x_t, eps, t, t_prev, alphas_cumprod, noise):     # alphas_cumprod[-1]: alpha-bar_T
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev]
    beta = 1 - a_t / a_prev
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    if t_prev < 0:
        return mean
    return mean + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * noise


def jump_from_the_last_element_with_noise(x_t, eps, t, t_prev, alphas_cumprod, noise):   # sqrt(negative): nan
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev]
    beta = 1 - a_t / a_prev
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    return mean + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * noise


def jump_from_the_first_element(x_t, eps, t, t_prev, alphas_cumprod, noise):
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[max(t_prev, 0)]
    beta = 1 - a_t / a_prev
    mean = (x_t - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
    if t_prev < 0:
        return mean
    return mean + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * noise


def jump_fixed_large_at_the_end(x_t, eps, t, t_prev, alphas_cumprod, noise):    # beta~ is 0 there, so beta instead
    if t_prev >= 0:
        return ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise)
    beta = 1 - alphas_cumprod[t]
    return ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise) + beta.sqrt() * noise


def jump_noise_at_the_end(x_t, eps, t, t_prev, alphas_cumprod, noise):
    mean = ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise)
    return mean + 0.05 * noise if t_prev < 0 else mean


def jump_returns_a_number(x_t, eps, t, t_prev, alphas_cumprod, noise):
    return ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise).mean().item()


def jump_flattened(x_t, eps, t, t_prev, alphas_cumprod, noise):
    return ddpm_jump(x_t, eps, t, t_prev, alphas_cumprod, noise).flatten()


# --------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("exercise_id, answer", [
    ("05.1", x0_from_v),
    ("05.2", elbo_weights_small_variance),
    ("05.2", weights_simplified),
    ("05.2", weights_in_python_floats),
    ("05.2", weights_from_log_cumsum),
    ("05.3", ddpm_jump),
    ("05.3", jump_via_x0),
], ids=lambda a: a if isinstance(a, str) else a.__name__)
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("05.1", v_read_as_noise, "reads the prediction as the noise eps"),
    ("05.1", v_sign_flipped, "the sign of the v term is wrong"),
    ("05.1", v_coefficients_swapped, "combine them so that eps cancels"),
    ("05.1", v_returns_a_number, "should return a tensor of shape (2, 1, 4, 4)"),
    ("05.2", weights_of_the_lesson, "the weight with sigma_t^2 = beta_t, the lesson's: use sigma_t^2 = beta~_t"),
    ("05.2", weights_with_t_1, "The term t = 1 is L_0"),
    ("05.2", weights_of_the_lesson_with_t_1, "the lesson's weight, with sigma_t^2 = beta_t, and for all T"),
    ("05.2", weights_not_squared, "beta_t is not squared"),
    ("05.2", weights_denominator_shifted, "shifted by one: the factor (1 - alpha-bar_t)"),
    ("05.2", weights_posterior_upside_down, "beta~_t's ratio is upside down"),
    ("05.2", weights_betas_shifted, "shifted by one: you used beta_{t-1} and alpha_{t-1}"),
    ("05.2", weights_shifted_by_one, "shifted by one timestep"),
    ("05.2", weights_as_a_row, "a 1-D tensor of shape (999,)"),
    ("05.2", weights_for_1000_steps, "a 1-D tensor of shape (49,) for these 50 betas"),
    ("05.3", jump_with_one_step_beta, "you used the beta of one training step, 1 - alphas_cumprod[t]"),
    ("05.3", jump_of_one_step, "throughout, as if t_prev were t - 1"),
    ("05.3", jump_with_the_tables_variance, "the variance is the one-step table's beta~"),
    ("05.3", jump_fixed_large, "(\"fixed large\"): that is the other variance the DDPM paper tried"),
    ("05.3", jump_with_the_variance, "multiply it by the standard deviation, sqrt(beta~)"),
    ("05.3", jump_without_noise, "you added no noise"),
    ("05.3", jump_from_the_last_element, "Python reads index -1 as the LAST element"),
    ("05.3", jump_from_the_last_element_with_noise, "Python reads index -1 as the LAST element"),
    ("05.3", jump_from_the_first_element, "not alpha-bar_0 = alphas_cumprod[0]"),
    ("05.3", jump_fixed_large_at_the_end, "the last jump returns the mean, with no noise"),
    ("05.3", jump_noise_at_the_end, "you added noise, 0.05 times it"),
    ("05.3", jump_returns_a_number, "a tensor shaped like x_t, got float"),
    ("05.3", jump_flattened, "shaped like x_t (2, 1, 8, 8): got (128,)"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


def test_05_2_success_message_gives_the_ratio_of_the_ends():
    verdict = check("05.2", elbo_weights_small_variance)
    assert "largest at the clean end, lambda_2 = 0.60, 59 times lambda_T = 0.0102" in verdict.message, verdict.message


def test_05_3_cosine_schedule_is_the_recipes():
    from sdlearn.recipes import DDPMRecipe
    from sdlearn.schedules import alphas_cumprod_from_betas, cosine_betas

    assert torch.equal(DDPMRecipe().noise_schedule().alphas_cumprod, alphas_cumprod_from_betas(cosine_betas(1000)))

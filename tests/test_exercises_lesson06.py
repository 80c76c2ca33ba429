"""Lesson 06's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one
(the formula to compare with), so that a clearer message later is a deliberate change.
"""

import pytest

from sdlearn.exercises import check


# --------------------------------------------------------------------- 06.1 euler_step(x, denoised, sigma, sigma_next)

def euler_step(x, denoised, sigma, sigma_next):       # the same step written as a blend
    return denoised + sigma_next / sigma * (x - denoised)


def euler_wrong_direction(x, denoised, sigma, sigma_next):
    d = (x - denoised) / sigma
    return x + (sigma - sigma_next) * d


def euler_direction_towards_denoised(x, denoised, sigma, sigma_next):
    d = (denoised - x) / sigma                         # the sign error hidden in d instead of the step
    return x + (sigma_next - sigma) * d


def euler_direction_not_divided(x, denoised, sigma, sigma_next):
    return x + (sigma_next - sigma) * (x - denoised)


def euler_divided_by_sigma_next(x, denoised, sigma, sigma_next):
    return x + (sigma_next - sigma) * (x - denoised) / max(sigma_next, 1e-3)


def euler_jumps_to_denoised(x, denoised, sigma, sigma_next):
    return denoised


# --------------------------------------------------------------------------- 06.2 ddim_step(x_t, eps, ab, ab_prev)

def ddim_step(x_t, eps, alpha_bar, alpha_bar_prev):
    a, a_prev = alpha_bar ** 0.5, alpha_bar_prev ** 0.5
    return a_prev / a * x_t + ((1 - alpha_bar_prev) ** 0.5 - a_prev / a * (1 - alpha_bar) ** 0.5) * eps


def ddim_returns_x0(x_t, eps, alpha_bar, alpha_bar_prev):
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


def ddim_without_roots(x_t, eps, alpha_bar, alpha_bar_prev):
    x0 = (x_t - (1 - alpha_bar) * eps) / alpha_bar
    return alpha_bar_prev * x0 + (1 - alpha_bar_prev) * eps


def ddim_renoised_at_the_same_level(x_t, eps, alpha_bar, alpha_bar_prev):
    x0 = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
    return alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps


def ddim_levels_swapped(x_t, eps, alpha_bar, alpha_bar_prev):
    x0 = (x_t - (1 - alpha_bar_prev) ** 0.5 * eps) / alpha_bar_prev ** 0.5
    return alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps


# ----------------------------------------------------------------------- 06.3 heun_step(denoise, x, sigma, sigma_next)

def heun_step(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * 0.5 * (d + d_next)


def heun_euler_only(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    return x + (sigma_next - sigma) * d


def heun_second_step_from_the_euler_point(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
    return x_euler + (sigma_next - sigma) * d_next


def heun_second_slope_at_sigma(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoise(x_euler, sigma)) / sigma
    return x + (sigma_next - sigma) * (d + d_next) / 2


def heun_second_slope_at_x(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    d_next = (x - denoise(x, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


@pytest.mark.parametrize("exercise_id, answer", [
    ("06.1", euler_step),
    ("06.2", ddim_step),
    ("06.3", heun_step),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("06.1", euler_wrong_direction, "the step goes the wrong way"),
    ("06.1", euler_direction_towards_denoised, "the step goes the wrong way"),
    ("06.1", euler_direction_not_divided, "expected x + (sigma_next - sigma) * (x - denoised) / sigma"),
    ("06.1", euler_divided_by_sigma_next, "expected x + (sigma_next - sigma) * (x - denoised) / sigma"),
    ("06.1", euler_jumps_to_denoised, "expected x + (sigma_next - sigma) * (x - denoised) / sigma"),
    ("06.2", ddim_returns_x0, "Predict x0 first"),
    ("06.2", ddim_without_roots, "Predict x0 first"),
    ("06.2", ddim_renoised_at_the_same_level, "at the next noise level"),
    ("06.2", ddim_levels_swapped, "at the next noise level"),
    ("06.3", heun_euler_only, "that is the Euler step only"),
    ("06.3", heun_second_step_from_the_euler_point, "step from x (not from the Euler point)"),
    ("06.3", heun_second_slope_at_sigma, "d_next taken at the Euler point and sigma_next"),
    ("06.3", heun_second_slope_at_x, "d_next taken at the Euler point and sigma_next"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

"""Lesson 05's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one
(the formula to compare with), so that a clearer message later is a deliberate change.
"""

import math

import pytest

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 05.1 predicted_x0(x_t, eps, alpha_bar)

def predicted_x0(x_t, eps, alpha_bar):
    return (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def x0_not_rescaled(x_t, eps, alpha_bar):
    return x_t - (1 - alpha_bar) ** 0.5 * eps


def x0_without_roots(x_t, eps, alpha_bar):
    return (x_t - (1 - alpha_bar) * eps) / alpha_bar


def x0_noise_coefficient_without_root(x_t, eps, alpha_bar):
    return (x_t - (1 - alpha_bar) * eps) / alpha_bar ** 0.5


def x0_noise_added(x_t, eps, alpha_bar):
    return (x_t + (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


def x0_from_v_instead(x_t, eps, alpha_bar):        # the v-prediction formula applied to a noise prediction
    return alpha_bar ** 0.5 * x_t - (1 - alpha_bar) ** 0.5 * eps


# --------------------------------------------------------------------------- 05.2 posterior_mean(x_t, x0, ab, ab_prev)

def posterior_mean(x_t, x0, alpha_bar, alpha_bar_prev):
    alpha = alpha_bar / alpha_bar_prev
    beta = 1 - alpha
    return (math.sqrt(alpha_bar_prev) * beta * x0 + math.sqrt(alpha) * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar)


def posterior_mean_swapped(x_t, x0, alpha_bar, alpha_bar_prev):
    beta = 1 - alpha_bar / alpha_bar_prev
    coeff_x0 = alpha_bar_prev ** 0.5 * beta / (1 - alpha_bar)
    coeff_xt = (alpha_bar / alpha_bar_prev) ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coeff_x0 * x_t + coeff_xt * x0


def posterior_mean_beta_from_alpha_bar(x_t, x0, alpha_bar, alpha_bar_prev):   # beta_t = 1 - alpha-bar_t: wrong
    beta = 1 - alpha_bar
    coeff_x0 = alpha_bar_prev ** 0.5 * beta / (1 - alpha_bar)
    coeff_xt = (1 - beta) ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coeff_x0 * x0 + coeff_xt * x_t


def posterior_mean_without_roots(x_t, x0, alpha_bar, alpha_bar_prev):
    beta = 1 - alpha_bar / alpha_bar_prev
    return (alpha_bar_prev * beta * x0 + (alpha_bar / alpha_bar_prev) * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar)


# --------------------------------------------------------------------------- 05.3 x0_from_v(x_t, v, alpha_bar)

def x0_from_v(x_t, v, alpha_bar):
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return a * x_t - s * v


def v_read_as_noise(x_t, v, alpha_bar):            # lesson 05.1's formula, as if the model predicted epsilon
    return (x_t - (1 - alpha_bar) ** 0.5 * v) / alpha_bar ** 0.5


def v_sign_flipped(x_t, v, alpha_bar):
    return alpha_bar ** 0.5 * x_t + (1 - alpha_bar) ** 0.5 * v


def v_coefficients_swapped(x_t, v, alpha_bar):
    return (1 - alpha_bar) ** 0.5 * x_t - alpha_bar ** 0.5 * v


def v_returns_a_number(x_t, v, alpha_bar):
    return float((alpha_bar ** 0.5 * x_t - (1 - alpha_bar) ** 0.5 * v).mean())


@pytest.mark.parametrize("exercise_id, answer", [
    ("05.1", predicted_x0),
    ("05.2", posterior_mean),
    ("05.3", x0_from_v),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("05.1", x0_not_rescaled, "divide by sqrt(alpha_bar)"),
    ("05.1", x0_without_roots, "should give back x0 exactly: (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)"),
    ("05.1", x0_noise_coefficient_without_root, "should give back x0 exactly"),
    ("05.1", x0_noise_added, "should give back x0 exactly"),
    ("05.1", x0_from_v_instead, "should give back x0 exactly"),
    ("05.2", posterior_mean_swapped, "the two coefficients are swapped"),
    ("05.2", posterior_mean_beta_from_alpha_bar, "the mean differs from eq. 7"),
    ("05.2", posterior_mean_without_roots, "the mean differs from eq. 7"),
    ("05.3", v_read_as_noise, "reads the prediction as the noise eps"),
    ("05.3", v_sign_flipped, "the sign of the v term is wrong"),
    ("05.3", v_coefficients_swapped, "combine them so that eps cancels"),
    ("05.3", v_returns_a_number, "should return a tensor of shape (2, 1, 4, 4)"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

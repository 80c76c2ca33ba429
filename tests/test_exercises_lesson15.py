"""Lesson 15's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check

# 15.1: a scheduler and a number of steps for a budget

def budget_right():
    return "UniPC", 8


def budget_fewer_steps():                     # another right answer
    return ["UniPC", 6]


def budget_over():
    return "UniPC", 10


def budget_heun():
    return "Heun", 4


def budget_dpm():
    return "DPM-Solver++ 2M", 8


def budget_ancestral():
    return "Euler ancestral", 8


def budget_unknown_name():
    return "unipc", 8


def budget_float_steps():
    return "UniPC", 8.0


# 15.2: which schedulers need scale_model_input

def scaling_right():
    return ["Euler", "Euler ancestral", "LMS", "Heun"]


def scaling_as_set():                         # another right answer, in another order
    return {"Heun", "LMS", "Euler", "Euler ancestral"}


def scaling_euler_only():
    return ["Euler"]


def scaling_all():
    return ["DDIM", "Euler", "Euler ancestral", "LMS", "DPM-Solver++ 2M", "UniPC", "Heun"]


def scaling_inverted():
    return ["DDIM", "DPM-Solver++ 2M", "UniPC"]


def scaling_one_string():
    return "Euler"


def scaling_class_names():
    return ["EulerDiscreteScheduler"]


# 15.3: the predicted x0 from two latents

def x0_two_right(x_t, x_prev, abar_t, abar_prev):
    c = ((1 - abar_prev) / (1 - abar_t)).sqrt()
    return (x_prev - c * x_t) / (abar_prev.sqrt() - c * abar_t.sqrt())


def x0_two_by_eps(x_t, x_prev, abar_t, abar_prev):       # another right answer: through the noise
    a, b = abar_t.sqrt(), (1 - abar_t).sqrt()
    a_prev, b_prev = abar_prev.sqrt(), (1 - abar_prev).sqrt()
    eps = (a * x_prev - a_prev * x_t) / (a * b_prev - a_prev * b)
    return (x_t - b * eps) / a


def x0_two_noise_ignored(x_t, x_prev, abar_t, abar_prev):
    return x_prev / abar_prev.sqrt()


def x0_two_levels_swapped(x_t, x_prev, abar_t, abar_prev):
    return x0_two_right(x_t, x_prev, abar_prev, abar_t)


def x0_two_no_sqrt(x_t, x_prev, abar_t, abar_prev):
    c = (1 - abar_prev) / (1 - abar_t)
    return (x_prev - c * x_t) / (abar_prev - c * abar_t)


def x0_two_half_denominator(x_t, x_prev, abar_t, abar_prev):
    c = ((1 - abar_prev) / (1 - abar_t)).sqrt()
    return (x_prev - c * x_t) / abar_prev.sqrt()


# 15.4: x0 from v in the noise-level form

def epsilon_jump(x, v, sigma):
    return x - sigma * v


def unscaled_x(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return alpha_bar**0.5 * x - (1 - alpha_bar) ** 0.5 * v


def plus_v(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return alpha_bar**0.5 * (x * alpha_bar**0.5) + (1 - alpha_bar) ** 0.5 * v


def epsilon_formula(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return (x * alpha_bar**0.5 - (1 - alpha_bar) ** 0.5 * v) / alpha_bar**0.5


def scaled_input(x, v, sigma):
    return x / (sigma**2 + 1) ** 0.5


def first_sigma_only(x, v, sigma):
    from sdlearn.exercises.lesson15 import _euler

    s = float(_euler().sigmas[4])             # the sigma of the check's first case, whatever is given
    return x / (s**2 + 1) - s / (s**2 + 1) ** 0.5 * v


def x0_from_v_sigma(x, v, sigma):
    return x / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * v


WRONG = [
    ("15.1", budget_over, "over the budget of 8"),
    ("15.1", budget_unknown_name, "not one of the lesson's schedulers"),
    ("15.1", budget_float_steps, "positive whole number"),
    ("15.2", scaling_euler_only, "you left out Euler ancestral, LMS, Heun"),
    ("15.2", scaling_all, "DDIM, DPM-Solver++ 2M, UniPC keep the latents"),
    ("15.2", scaling_inverted, "DDIM, DPM-Solver++ 2M, UniPC keep the latents"),
    ("15.2", scaling_one_string, "not one string"),
    ("15.2", scaling_class_names, "not names of the lesson's schedulers"),
    ("15.3", x0_two_noise_ignored, "as if x_prev held no noise"),
    ("15.3", x0_two_levels_swapped, "the two noise levels are swapped"),
    ("15.3", x0_two_no_sqrt, "the square roots are missing"),
    ("15.3", x0_two_half_denominator, "divides by the whole bracket"),
    ("15.4", epsilon_jump, "the jump for a noise-predicting model"),
    ("15.4", unscaled_x, "you used x itself as x_t"),
    ("15.4", plus_v, "the sign of the v term"),
    ("15.4", epsilon_formula, "the same as (x_t - sqrt(1 - abar) eps) / sqrt(abar)"),
    ("15.4", scaled_input, "that is x_t"),
    ("15.4", first_sigma_only, "use the sigma you are given"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.parametrize("exercise_id, answer", [("15.2", scaling_as_set), ("15.3", x0_two_by_eps),
                                                 ("15.4", x0_from_v_sigma)])
def test_other_right_answers_pass(exercise_id, answer):
    """Right answers written differently from the lesson's solutions pass too."""
    verdict = check(exercise_id, answer)
    assert verdict.passed, repr(verdict)


# 15.1 generates images (the reference: 4 images, 50 steps; a few seconds on a quiet 2-core CPU)
MEASURED = [
    (budget_right, None), (budget_fewer_steps, None),
    (budget_heun, "Heun fails on this schedule"),
    (budget_dpm, "not good enough"),
    (budget_ancestral, "lands on another image"),
]


@pytest.mark.slow
@pytest.mark.parametrize("answer, message", MEASURED, ids=[m[0].__name__ for m in MEASURED])
def test_15_1_measures_the_choice(answer, message):
    verdict = check("15.1", answer)
    if message is None:
        assert verdict.passed, verdict.message
    else:
        assert not verdict.passed
        assert message in verdict.message, verdict.message

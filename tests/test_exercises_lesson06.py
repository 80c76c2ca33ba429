"""Lesson 06's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check
from sdlearn.exercises.lesson06 import QUALITY_BAR, best_within, sampler_error


# --------------------------------------------------------------------------- 06.1 ddim_step(x_t, eps, ab, ab_prev)

def _sigma(alpha_bar):
    return math.sqrt((1 - alpha_bar) / alpha_bar)


def ddim_step(x_t, eps, alpha_bar, alpha_bar_prev):               # the exercise's route: Euler in sigma-form
    x = x_t / math.sqrt(alpha_bar)
    x = x + (_sigma(alpha_bar_prev) - _sigma(alpha_bar)) * eps
    return math.sqrt(alpha_bar_prev) * x


def ddim_step_direct(x_t, eps, alpha_bar, alpha_bar_prev):        # DDIM's own formula, also right
    x0 = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


def ddim_step_float32(x_t, eps, alpha_bar, alpha_bar_prev):
    return ddim_step(x_t.float(), eps.float(), alpha_bar, alpha_bar_prev)


def ddim_left_in_sigma_form(x_t, eps, alpha_bar, alpha_bar_prev):
    return x_t / math.sqrt(alpha_bar) + (_sigma(alpha_bar_prev) - _sigma(alpha_bar)) * eps


def ddim_converted_back_at_the_old_level(x_t, eps, alpha_bar, alpha_bar_prev):
    return math.sqrt(alpha_bar) * ddim_left_in_sigma_form(x_t, eps, alpha_bar, alpha_bar_prev)


def ddim_sigma_without_root(x_t, eps, alpha_bar, alpha_bar_prev):
    def variance_ratio(a):
        return (1 - a) / a
    x = x_t / math.sqrt(alpha_bar) + (variance_ratio(alpha_bar_prev) - variance_ratio(alpha_bar)) * eps
    return math.sqrt(alpha_bar_prev) * x


def ddim_sigma_as_noise_std(x_t, eps, alpha_bar, alpha_bar_prev):
    x = x_t / math.sqrt(alpha_bar) + (math.sqrt(1 - alpha_bar_prev) - math.sqrt(1 - alpha_bar)) * eps
    return math.sqrt(alpha_bar_prev) * x


def ddim_direction_divided_by_sigma(x_t, eps, alpha_bar, alpha_bar_prev):
    x = x_t / math.sqrt(alpha_bar) + (_sigma(alpha_bar_prev) - _sigma(alpha_bar)) * eps / _sigma(alpha_bar)
    return math.sqrt(alpha_bar_prev) * x


def ddim_returns_x0(x_t, eps, alpha_bar, alpha_bar_prev):
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


# --------------------------------------------------------------------- 06.2 lms2_weights(sigma_prev, sigma, sigma_next)

def lms2_weights(sigma_prev, sigma, sigma_next):
    h, previous = sigma_next - sigma, sigma - sigma_prev
    return h + h * h / (2 * previous), -h * h / (2 * previous)


def lms2_weights_from_the_integral(sigma_prev, sigma, sigma_next):  # the Lagrange basis integrated exactly
    def integral_of_line(through, zero_at):
        # integral over [sigma, sigma_next] of (tau - zero_at) / (through - zero_at)
        return ((sigma_next - zero_at) ** 2 - (sigma - zero_at) ** 2) / (2 * (through - zero_at))
    return [integral_of_line(sigma, sigma_prev), integral_of_line(sigma_prev, sigma)]


def lms2_equal_steps(sigma_prev, sigma, sigma_next):
    h = sigma_next - sigma
    return 1.5 * h, -0.5 * h


def lms2_swapped(sigma_prev, sigma, sigma_next):
    return lms2_weights(sigma_prev, sigma, sigma_next)[::-1]


def lms2_per_unit_step(sigma_prev, sigma, sigma_next):
    w, w_prev = lms2_weights(sigma_prev, sigma, sigma_next)
    return w / (sigma_next - sigma), w_prev / (sigma_next - sigma)


def lms2_step_the_wrong_way(sigma_prev, sigma, sigma_next):
    w, w_prev = lms2_weights(sigma_prev, sigma, sigma_next)
    return -w, -w_prev


def lms2_euler(sigma_prev, sigma, sigma_next):
    return sigma_next - sigma, 0.0


# ----------------------------------------------------------------------------------- 06.3 choose_sampler(budget)

def choose_lms(budget):
    return "lms", budget


def choose_euler(budget):
    return "euler", budget


def choose_ddim(budget):
    return ("ddim", torch.tensor(budget))


def choose_heun_within_budget(budget):
    return "heun", (budget + 1) // 2


def choose_heun_too_many_steps(budget):
    return "heun", budget


def choose_ddpm(budget):
    return "ddpm", budget


def choose_euler_ancestral(budget):
    return "euler_ancestral", budget


def choose_lms_too_many(budget):
    return "lms", budget + 1


def choose_euler_underspent(budget):
    return "euler", budget - 1


def choose_lms_half(budget):
    return "lms", budget // 2


def choose_dpm_solver(budget):
    return "dpm_solver", budget


def choose_only_a_name(budget):
    return "lms"


@pytest.mark.parametrize("exercise_id, answer", [
    ("06.1", ddim_step),
    ("06.1", ddim_step_direct),
    ("06.1", ddim_step_float32),
    ("06.2", lms2_weights),
    ("06.2", lms2_weights_from_the_integral),
    ("06.3", choose_lms),
    ("06.3", choose_euler),
    ("06.3", choose_ddim),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("06.1", ddim_left_in_sigma_form, "Convert back"),
    ("06.1", ddim_converted_back_at_the_old_level, "the new level's alpha-bar"),
    ("06.1", ddim_sigma_without_root, "square root of (1 - alpha_bar) / alpha_bar"),
    ("06.1", ddim_sigma_as_noise_std, "sqrt(1 - alpha_bar) is the noise's standard deviation in x_t"),
    ("06.1", ddim_direction_divided_by_sigma, "not eps / sigma"),
    ("06.1", ddim_returns_x0, "Three moves"),
    ("06.2", lms2_equal_steps, "Adams-Bashforth weights for equal steps"),
    ("06.2", lms2_swapped, "swapped"),
    ("06.2", lms2_per_unit_step, "as multiples of the step"),
    ("06.2", lms2_step_the_wrong_way, "signs are flipped"),
    ("06.2", lms2_euler, "expected weights"),
    ("06.3", choose_heun_within_budget, "Heun's first step on the cosine schedule"),
    ("06.3", choose_heun_too_many_steps, "calls the network 9 times (two per step, one on the last), over the budget"),
    ("06.3", choose_ddpm, "Ancestral samplers add fresh noise"),
    ("06.3", choose_euler_ancestral, "Ancestral samplers add fresh noise"),
    ("06.3", choose_lms_too_many, "over the budget of 5"),
    ("06.3", choose_euler_underspent, "You spend only 4 of the 5 calls"),
    ("06.3", choose_lms_half, "You spend only 2 of the 5 calls"),
    ("06.3", choose_dpm_solver, "not one of the samplers"),
    ("06.3", choose_only_a_name, "return a pair"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


def test_the_budget_check_measures_what_the_lesson_reports():
    """On the known case the ranking at 5 and 10 calls is the lesson's: LMS first, Heun far behind."""
    for budget in (5, 10):
        sampler, steps, best = best_within(budget)
        assert (sampler, steps) == ("lms", budget)
        assert sampler_error("heun", (budget + 1) // 2) > 5 * best
        assert sampler_error("euler", budget) <= QUALITY_BAR * best < sampler_error("ddpm", budget)
    assert sampler_error("euler", 300) < 0.01          # the error vanishes with many steps: the measure is sound

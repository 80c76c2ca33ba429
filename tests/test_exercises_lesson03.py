"""Lesson 03's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import pytest

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 03.1 make_noisy(x0, noise, sigma)

def make_noisy(x0, noise, sigma):
    return x0 + sigma[:, None, None, None] * noise             # indexing instead of .view: also right


def noisy_with_variance(x0, noise, sigma):
    return x0 + sigma.view(-1, 1, 1, 1) ** 2 * noise


def noisy_unscaled(x0, noise, sigma):
    return x0 + noise


def noisy_sigma_not_reshaped(x0, noise, sigma):
    return x0 + sigma * noise                                  # (3,) lines up with the last axis, of size 5


def noisy_variance_preserving(x0, noise, sigma):
    s = sigma.view(-1, 1, 1, 1)
    return (x0 + s * noise) / (1 + s ** 2) ** 0.5             # lesson 04's scaling, not this lesson's


def noisy_sigma_on_the_wrong_axis(x0, noise, sigma):
    return x0 + sigma.view(1, -1, 1, 1) * noise                # (3, 3, 5, 5): every image gets every level


# --------------------------------------------------------------------------- 03.2 denoised_estimate(x, noise, sigma)

def denoised_estimate(x, predicted_noise, sigma):
    return x - sigma.view(-1, 1, 1, 1) * predicted_noise


def denoised_without_sigma(x, predicted_noise, sigma):
    return x - predicted_noise


def denoised_adding_noise(x, predicted_noise, sigma):
    return x + sigma.view(-1, 1, 1, 1) * predicted_noise


def denoised_with_variance(x, predicted_noise, sigma):
    return x - sigma.view(-1, 1, 1, 1) ** 2 * predicted_noise


def denoised_dividing(x, predicted_noise, sigma):
    return x - predicted_noise / sigma.view(-1, 1, 1, 1)


def denoised_sigma_not_reshaped(x, predicted_noise, sigma):
    return x - sigma * predicted_noise


# --------------------------------------------------------------------------- 03.3 score_from_noise(noise, sigma)

def score_from_noise(predicted_noise, sigma):
    return -predicted_noise / sigma.view(-1, 1, 1, 1)


def score_sign_flipped(predicted_noise, sigma):
    return predicted_noise / sigma.view(-1, 1, 1, 1)


def score_over_variance(predicted_noise, sigma):
    return -predicted_noise / sigma.view(-1, 1, 1, 1) ** 2


def score_times_sigma(predicted_noise, sigma):
    return -predicted_noise * sigma.view(-1, 1, 1, 1)


def score_sigma_not_reshaped(predicted_noise, sigma):
    return -predicted_noise / sigma


def score_is_the_noise(predicted_noise, sigma):
    return -predicted_noise


@pytest.mark.parametrize("exercise_id, answer", [
    ("03.1", make_noisy),
    ("03.2", denoised_estimate),
    ("03.3", score_from_noise),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("03.1", noisy_with_variance, "not by sigma squared"),
    ("03.1", noisy_unscaled, "every image got noise of level 1"),
    ("03.1", noisy_sigma_not_reshaped, "reshape it to (B, 1, 1, 1)"),
    ("03.1", noisy_variance_preserving, "expected x0 + sigma * noise"),
    ("03.1", noisy_sigma_on_the_wrong_axis, "shape (3, 1, 5, 5), got (3, 3, 5, 5)"),
    ("03.2", denoised_without_sigma, "scale it by sigma before subtracting"),
    ("03.2", denoised_adding_noise, "you added the noise"),
    ("03.2", denoised_with_variance, "not by sigma squared"),
    ("03.2", denoised_dividing, "should give back x0 exactly"),
    ("03.2", denoised_sigma_not_reshaped, "reshape it to (B, 1, 1, 1)"),
    ("03.3", score_sign_flipped, "the sign is flipped"),
    ("03.3", score_over_variance, "divide by sigma once"),
    ("03.3", score_times_sigma, "do not multiply"),
    ("03.3", score_sigma_not_reshaped, "reshape it to (B, 1, 1, 1)"),
    ("03.3", score_is_the_noise, "expected -predicted_noise / sigma"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message

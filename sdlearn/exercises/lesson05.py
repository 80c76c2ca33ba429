"""Checks for the exercises of lesson 05, DDPM."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 1, 4, 4, generator=g).clamp(-1, 1)
    eps = torch.randn(2, 1, 4, 4, generator=g)
    return x0, eps


def _same(got, expected, what):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise Failed(f"{what} should return a tensor of shape {tuple(expected.shape)}.")
    return torch.allclose(got, expected, atol=1e-5)


@exercise("05.1", "the clean image implied by a noise prediction")
def check_predicted_x0(predicted_x0):
    x0, eps = _data(51)
    for alpha_bar in (0.9, 0.3, 0.01):
        x_t = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
        got = predicted_x0(x_t.clone(), eps.clone(), alpha_bar)
        if _same(got, x_t - (1 - alpha_bar) ** 0.5 * eps, "predicted_x0"):
            raise Failed("after removing the noise, divide by sqrt(alpha_bar): the signal was scaled down too.")
        if not _same(got, x0, "predicted_x0"):
            raise Failed(f"with the true noise, alpha_bar = {alpha_bar} should give back x0 exactly: "
                         "(x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar).")
    return "recovers x0 exactly at three noise levels."


@exercise("05.2", "the posterior mean")
def check_posterior_mean(posterior_mean):
    x0, x_t = _data(52)
    for a, a_prev in ((0.5, 0.6), (0.05, 0.08), (0.99, 0.995)):
        beta = 1 - a / a_prev
        expected = (a_prev ** 0.5 * beta / (1 - a)) * x0 + ((a / a_prev) ** 0.5 * (1 - a_prev) / (1 - a)) * x_t
        got = posterior_mean(x_t.clone(), x0.clone(), a, a_prev)
        if not _same(got, expected, "posterior_mean"):
            swapped = (a_prev ** 0.5 * beta / (1 - a)) * x_t + ((a / a_prev) ** 0.5 * (1 - a_prev) / (1 - a)) * x0
            if _same(got, swapped, "posterior_mean"):
                raise Failed("the two coefficients are swapped: the one with beta_t multiplies x0.")
            raise Failed(f"for alpha_bar = {a}, alpha_bar_prev = {a_prev} the mean differs from eq. 7.")
    return "equal to eq. 7 of the DDPM paper at three timesteps."


@exercise("05.3", "x0 from a v-prediction")
def check_x0_from_v(x0_from_v):
    x0, eps = _data(53)
    for alpha_bar in (0.9, 0.5, 0.02):
        x_t = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
        v = alpha_bar ** 0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
        got = x0_from_v(x_t.clone(), v.clone(), alpha_bar)
        a, s = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
        if _same(got, (x_t - s * v) / a, "x0_from_v"):
            raise Failed("that is exercise 05.1's formula, which reads the prediction as the noise eps. A v-model "
                         "predicts v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0: solve for x0 with x_t and v.")
        if _same(got, a * x_t + s * v, "x0_from_v"):
            raise Failed("almost: the sign of the v term is wrong. Since v = a eps - s x0, adding s v brings eps "
                         "back in; subtract it.")
        if not _same(got, x0, "x0_from_v"):
            raise Failed(f"at alpha_bar = {alpha_bar} the result is not x0. With a = sqrt(alpha_bar) and "
                         "s = sqrt(1 - alpha_bar): x_t = a x0 + s eps and v = a eps - s x0; combine them so that eps cancels.")
    return "recovers x0 exactly: x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."

"""Checks for the exercises of lesson 06, samplers."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise


def _tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)


def _close(got, expected, what):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise Failed(f"{what} should return a tensor of shape {tuple(expected.shape)}.")
    return torch.allclose(got, expected, atol=1e-5)


@exercise("06.1", "an Euler step")
def check_euler_step(euler_step):
    x, denoised = _tensors(61)
    sigma, sigma_next = 2.0, 1.2
    d = (x - denoised) / sigma
    got = euler_step(x.clone(), denoised.clone(), sigma, sigma_next)
    if _close(got, x + (sigma - sigma_next) * d, "euler_step"):
        raise Failed("the step goes the wrong way: sigma_next - sigma is negative, and x moves towards denoised.")
    if not _close(got, x + (sigma_next - sigma) * d, "euler_step"):
        raise Failed("expected x + (sigma_next - sigma) * (x - denoised) / sigma.")
    if not _close(euler_step(x.clone(), denoised.clone(), sigma, 0.0), denoised, "euler_step"):
        raise Failed("a step to sigma_next = 0 should land exactly on the denoised image.")
    return "and a step to sigma = 0 lands on the denoised image, as it should."


@exercise("06.2", "a DDIM step")
def check_ddim_step(ddim_step):
    x0, eps = _tensors(62)
    a, a_prev = 0.3, 0.6
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    got = ddim_step(x_t.clone(), eps.clone(), a, a_prev)
    if not _close(got, a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps, "ddim_step"):
        raise Failed("with the true noise, the step should give sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps: the same "
                     "image and noise at the next noise level. Predict x0 first.")
    return "moves an exactly known image to the next noise level exactly."


@exercise("06.3", "a Heun step")
def check_heun_step(heun_step):
    x, target = _tensors(63)

    def denoise(z, sigma):  # a made-up denoiser that depends on the noise level
        return target + 0.1 * sigma * torch.tanh(z)

    sigma, sigma_next = 1.5, 0.8
    d = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
    expected = x + (sigma_next - sigma) * (d + d_next) / 2
    got = heun_step(denoise, x.clone(), sigma, sigma_next)
    if _close(got, x_euler, "heun_step"):
        raise Failed("that is the Euler step only; evaluate the direction at the Euler point and average the two.")
    if _close(got, x_euler + (sigma_next - sigma) * d_next, "heun_step"):
        raise Failed("step from x (not from the Euler point) with the average (d + d_next) / 2.")
    if not _close(got, expected, "heun_step"):
        raise Failed("expected x + (sigma_next - sigma) * (d + d_next) / 2, with d_next taken at the Euler point and sigma_next.")
    return "equal to the reference Heun step."

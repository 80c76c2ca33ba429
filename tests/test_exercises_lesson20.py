"""Lesson 20's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check

# 20.1: Adam's update


def adam_update(param, grad, exp_avg, exp_avg_sq, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** t)
    v_hat = exp_avg_sq / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), exp_avg, exp_avg_sq


def adam_with_torch_ops(param, grad, exp_avg, exp_avg_sq, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    # a different but correct order: bias corrections folded into the step size, as torch does
    exp_avg = exp_avg.lerp(grad, 1 - betas[0])
    exp_avg_sq = exp_avg_sq.mul(betas[1]).addcmul(grad, grad, value=1 - betas[1])
    denom = exp_avg_sq.sqrt() / (1 - betas[1] ** t) ** 0.5 + eps
    return param.addcdiv(exp_avg, denom, value=-lr / (1 - betas[0] ** t)), exp_avg, exp_avg_sq


def _adam_variant(bias1=True, bias2=True, eps_inside=False, swapped=False, t_shift=0):
    def update(param, grad, exp_avg, exp_avg_sq, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        beta1, beta2 = betas
        if swapped:
            exp_avg = (1 - beta1) * exp_avg + beta1 * grad
            exp_avg_sq = (1 - beta2) * exp_avg_sq + beta2 * grad * grad
        else:
            exp_avg = beta1 * exp_avg + (1 - beta1) * grad
            exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
        t = t + t_shift
        m_hat = exp_avg / (1 - beta1 ** t) if bias1 else exp_avg
        v_hat = exp_avg_sq / (1 - beta2 ** t) if bias2 else exp_avg_sq
        if eps_inside:
            return param - lr * m_hat / (v_hat + eps).sqrt(), exp_avg, exp_avg_sq
        return param - lr * m_hat / (v_hat.sqrt() + eps), exp_avg, exp_avg_sq
    return update


def adam_in_place(param, grad, exp_avg, exp_avg_sq, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    exp_avg.mul_(betas[0]).add_((1 - betas[0]) * grad)
    exp_avg_sq.mul_(betas[1]).add_((1 - betas[1]) * grad * grad)
    m_hat = exp_avg / (1 - betas[0] ** t)
    v_hat = exp_avg_sq / (1 - betas[1] ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), exp_avg, exp_avg_sq


def adam_only_param(param, grad, exp_avg, exp_avg_sq, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    return adam_update(param, grad, exp_avg, exp_avg_sq, t, lr, betas, eps)[0]


@pytest.mark.parametrize("answer", [adam_update, adam_with_torch_ops])
def test_20_1_accepts_adam(answer):
    assert check("20.1", answer).passed


@pytest.mark.parametrize("answer, message", [
    (_adam_variant(bias1=False, bias2=False), "no bias correction"),
    (_adam_variant(bias2=False), "only the first average"),
    (_adam_variant(bias1=False), "only the second average"),
    (_adam_variant(eps_inside=True), "eps is inside the square root"),
    (_adam_variant(swapped=True), "weight the new gradient by beta"),
    (_adam_variant(t_shift=1), "t one too high"),
    (_adam_variant(t_shift=-1), "NaN or inf"),
    (adam_in_place, "changed a tensor it was given"),
    (adam_only_param, "return three tensors"),
])
def test_20_1_names_the_mistake(answer, message):
    result = check("20.1", answer)
    assert not result.passed and message in result.message


# 20.2: the perceptual distance


def perceptual_distance(features_x, features_y):
    total = 0
    for a, b in zip(features_x, features_y):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (a - b).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


def _distance_variant(normalise="channels", space="mean", channels="sum", root=False):
    def distance(features_x, features_y):
        total = 0
        for a, b in zip(features_x, features_y):
            if normalise == "channels":
                a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
                b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            elif normalise == "whole":
                a = a / a.flatten(1).norm(dim=1)[:, None, None, None]
                b = b / b.flatten(1).norm(dim=1)[:, None, None, None]
            squared = (a - b).pow(2)
            per_position = squared.sum(dim=1) if channels == "sum" else squared.mean(dim=1)
            layer = per_position.mean(dim=(1, 2)) if space == "mean" else per_position.sum(dim=(1, 2))
            total = total + (layer.sqrt() if root else layer)
        return total
    return distance


def normalise_in_place(features_x, features_y):
    for a in features_x + features_y:
        a /= a.norm(dim=1, keepdim=True) + 1e-10
    return perceptual_distance(features_x, features_y)


def one_number(features_x, features_y):
    return perceptual_distance(features_x, features_y).mean()


def test_20_2_accepts_the_distance():
    assert check("20.2", perceptual_distance).passed


@pytest.mark.parametrize("answer, message", [
    (_distance_variant(normalise=None), "not normalised"),
    (_distance_variant(normalise="whole"), "norm of the whole feature map"),
    (_distance_variant(space="sum"), "summed over the positions"),
    (_distance_variant(channels="mean"), "averaged over the channels"),
    (_distance_variant(root=True), "square root per layer"),
    (normalise_in_place, "changed the feature maps"),
    (one_number, "shape (3,)"),
])
def test_20_2_names_the_mistake(answer, message):
    result = check("20.2", answer)
    assert not result.passed and message in result.message


# 20.3: a loss-guided step


def guided_estimate(denoised, sigma, loss_fn, scale):
    x0 = denoised.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x0), x0)
    return denoised - scale * sigma ** 2 / (1 + sigma ** 2) * grad


def guided_with_backward(denoised, sigma, loss_fn, scale):
    x0 = denoised.clone().requires_grad_(True)
    loss_fn(x0).backward()
    weight = 1 - 1 / (1 + sigma ** 2)
    return (denoised - scale * weight * x0.grad).detach()


def _guided_variant(weight, sign=-1):
    def guided(denoised, sigma, loss_fn, scale):
        x0 = denoised.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x0), x0)
        return denoised + sign * scale * weight(sigma) * grad
    return guided


def guided_in_place(denoised, sigma, loss_fn, scale):
    x0 = denoised.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x0), x0)
    denoised -= scale * sigma ** 2 / (1 + sigma ** 2) * grad
    return denoised


@pytest.mark.parametrize("answer", [guided_estimate, guided_with_backward])
def test_20_3_accepts_the_push(answer):
    assert check("20.3", answer).passed


@pytest.mark.parametrize("answer, message", [
    (_guided_variant(lambda s: s ** 2 / (1 + s ** 2), sign=+1), "goes up the loss"),
    (_guided_variant(lambda s: 1.0), "not scaled with the noise level"),
    (_guided_variant(lambda s: s ** 2), "the weight is sigma**2"),
    (_guided_variant(lambda s: s), "the weight is sigma:"),
    (_guided_variant(lambda s: 1 / (1 + s ** 2)), "strongest at the end"),
    (guided_in_place, "in place"),
])
def test_20_3_names_the_mistake(answer, message):
    result = check("20.3", answer)
    assert not result.passed and message in result.message

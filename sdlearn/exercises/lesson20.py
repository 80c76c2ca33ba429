"""Checks for the exercises of lesson 20, the optimizer view.

20.1 Adam's update with bias correction, 20.2 the perceptual distance from feature maps,
20.3 one push of loss guidance. Every check runs the student's function on seeded inputs,
compares with the right answer (torch.optim.Adam, sdlearn.losses.PerceptualDistance,
sdlearn.guidance.loss_guided_estimate), and names the typical wrong answers.
"""

from __future__ import annotations

from functools import partial

import torch

from sdlearn.exercises import Failed, as_tensor, exercise, name_the_mistake, same_tensor

_close = partial(same_tensor, rtol=1e-5, atol=1e-6)
_name_the_mistake = partial(name_the_mistake, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 20.1

def _gradients(n_steps: int, seed: int) -> list[torch.Tensor]:
    """Gradients of very different sizes per coordinate, and a sign change, as a real run has."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1e-3, 0.1, 1.0, 10.0, 100.0, 1.0])
    return [scale * torch.randn(6, generator=g) + (0.5 if k < n_steps // 2 else -0.5) for k in range(n_steps)]


def _adam_reference(param, grads, lr, betas, eps, *, bias_correction=(True, True), eps_inside=False,
                    one_minus=True, step_from=1) -> list[torch.Tensor]:
    """Adam's trajectory, with optional typical mistakes."""
    beta1, beta2 = betas
    p = param.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for k, grad in enumerate(grads):
        t = k + step_from
        if one_minus:
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
        else:
            m = (1 - beta1) * m + beta1 * grad
            v = (1 - beta2) * v + beta2 * grad * grad
        m_hat = m / (1 - beta1 ** t) if bias_correction[0] else m
        v_hat = v / (1 - beta2 ** t) if bias_correction[1] else v
        if eps_inside:
            p = p - lr * m_hat / (v_hat + eps).sqrt()
        else:
            p = p - lr * m_hat / (v_hat.sqrt() + eps)
        out.append(p.clone())
    return out


def _run_student_adam(adam_update, param, grads, lr, betas, eps) -> list[torch.Tensor]:
    p = param.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    out = []
    for t, grad in enumerate(grads, start=1):
        kept = (p.clone(), grad.clone(), m.clone(), v.clone())
        result = adam_update(p, grad, m, v, t, lr=lr, betas=betas, eps=eps)
        if not isinstance(result, tuple) or len(result) != 3:
            raise Failed("return three tensors, (param, exp_avg, exp_avg_sq): the new parameter and the two "
                         "running averages the next step needs.")
        if not all(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True) for a, b in zip((p, grad, m, v), kept)):
            raise Failed("your function changed a tensor it was given: compute the new values and return "
                         "them, leave param, grad, exp_avg and exp_avg_sq as they are.")
        p, m, v = (as_tensor(x, name, param.shape) for x, name in zip(result, ("param", "exp_avg", "exp_avg_sq")))
        if not torch.isfinite(p).all():
            raise Failed(f"step {t} gives NaN or inf: the step count t starts at 1 (t = 0 makes 1 - beta**t zero "
                         f"and the bias correction divides by it).")
        out.append(p)
    return out


def _torch_adam(param, grads, lr, betas, eps) -> list[torch.Tensor]:
    p = param.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps)
    out = []
    for grad in grads:
        p.grad = grad.clone()
        optimizer.step()
        out.append(p.detach().clone())
    return out


@exercise("20.1", "Adam's update with bias correction")
def check_adam_update(adam_update):
    for lr, betas, eps, seed in ((0.1, (0.9, 0.999), 1e-8, 201), (0.01, (0.5, 0.9), 1e-3, 202)):
        param = torch.linspace(-1, 1, 6)
        grads = _gradients(8, seed)
        expected = _torch_adam(param, grads, lr, betas, eps)
        got = _run_student_adam(adam_update, param, grads, lr, betas, eps)
        wrong = {
            "no bias correction: both averages start at 0, so the first steps are far too small (by about "
            "(1 - beta1) / sqrt(1 - beta2)). Divide exp_avg by 1 - beta1**t and exp_avg_sq by 1 - beta2**t.":
                _adam_reference(param, grads, lr, betas, eps, bias_correction=(False, False)),
            "only the first average is bias-corrected: divide exp_avg_sq by 1 - beta2**t too (it starts at 0 as well).":
                _adam_reference(param, grads, lr, betas, eps, bias_correction=(True, False)),
            "only the second average is bias-corrected: divide exp_avg by 1 - beta1**t too.":
                _adam_reference(param, grads, lr, betas, eps, bias_correction=(False, True)),
            "eps is inside the square root: Adam divides by sqrt(v_hat) + eps.":
                _adam_reference(param, grads, lr, betas, eps, eps_inside=True),
            "the averages weight the new gradient by beta: it is beta * old + (1 - beta) * new, so that beta "
            "close to 1 means a long memory.": _adam_reference(param, grads, lr, betas, eps, one_minus=False),
            "the bias correction uses t one too high (counted from 2?): the first step has t = 1.":
                _adam_reference(param, grads, lr, betas, eps, step_from=2),
        }
        for k, (g, e) in enumerate(zip(got, expected)):
            if not _close(g, e):
                for message, trajectory in wrong.items():
                    if _close(g, trajectory[k]):
                        raise Failed(message)
                raise Failed(f"step {k + 1} (lr {lr}, betas {betas}, eps {eps}) differs from torch.optim.Adam: "
                             f"largest difference {(g - e).abs().max().item():.3g}.")
    return "eight steps agree with torch.optim.Adam for two settings."


# --------------------------------------------------------------------------- 20.2

def _feature_maps(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two images' activations at two layers, (N, C, H, W) each, non-negative as after a ReLU."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4, 6, 6), (3, 8, 3, 3), (3, 5, 1, 1)]
    fx = [torch.rand(shape, generator=g) * (1 + 3 * k) for k, shape in enumerate(shapes)]
    fy = [torch.rand(shape, generator=g) * (1 + 3 * k) for k, shape in enumerate(shapes)]
    return fx, fy


def _distance(fx, fy, *, normalise="channels", space="mean", channels="sum", root=False, eps=1e-10):
    total = 0
    for a, b in zip(fx, fy):
        if normalise == "channels":
            a = a / (a.norm(dim=1, keepdim=True) + eps)
            b = b / (b.norm(dim=1, keepdim=True) + eps)
        elif normalise == "whole":
            a = a / (a.flatten(1).norm(dim=1)[:, None, None, None] + eps)
            b = b / (b.flatten(1).norm(dim=1)[:, None, None, None] + eps)
        squared = (a - b).pow(2)
        per_position = squared.sum(dim=1) if channels == "sum" else squared.mean(dim=1)
        layer = per_position.mean(dim=(1, 2)) if space == "mean" else per_position.sum(dim=(1, 2))
        total = total + (layer.sqrt() if root else layer)
    return total


@exercise("20.2", "the perceptual distance")
def check_perceptual_distance(perceptual_distance):
    fx, fy = _feature_maps(203)
    kept = [t.clone() for t in fx + fy]
    got = perceptual_distance(fx, fy)
    if not all(torch.equal(a, b) for a, b in zip(fx + fy, kept)):
        raise Failed("your function changed the feature maps it was given: normalise copies (a / norm makes one).")
    got = as_tensor(got, "the distances, one per image", (3,))
    expected = _distance(fx, fy)
    _name_the_mistake(got, {
        "the features are not normalised: divide each layer's activations by their norm over the channels at each "
        "position (dim=1, keepdim=True), so that a layer counts by the pattern it sees, not how strongly it fires.":
            _distance(fx, fy, normalise=None),
        "you normalised each layer by the norm of the whole feature map: normalise per position, over the channels "
        "only (a.norm(dim=1, keepdim=True)).": _distance(fx, fy, normalise="whole"),
        "you summed over the positions: take the mean over height and width, so that a layer with many positions "
        "does not outweigh one with few.": _distance(fx, fy, space="sum"),
        "you averaged over the channels: the squared difference of the unit vectors is summed over the channels "
        "(it is the squared distance between them), then averaged over the positions.":
            _distance(fx, fy, channels="mean"),
        "you took a square root per layer: LPIPS adds the squared distances of the layers as they are.":
            _distance(fx, fy, root=True),
    })
    if not _close(got, expected):
        raise Failed("the distances differ from: per layer, unit-normalise over the channels, square the "
                     "difference, sum over channels, average over positions; then add the layers.")
    from sdlearn.losses import PerceptualDistance
    from sdlearn.metrics import shipped_classifier

    measure = PerceptualDistance(shipped_classifier())
    g = torch.Generator().manual_seed(204)
    x, y = torch.rand(2, 1, 28, 28, generator=g), torch.rand(2, 1, 28, 28, generator=g)
    with torch.no_grad():
        activations_x = list(measure.activations(x).values())
        activations_y = list(measure.activations(y).values())
        got = as_tensor(perceptual_distance(activations_x, activations_y), "the distances", (2,))
        expected = measure(x, y)
    if not _close(got, expected, rtol=1e-4, atol=1e-6):
        raise Failed("right on the small example but not on the shipped classifier's features: make sure every "
                     "layer (also the one with a single position) is handled the same way.")
    return "equal to sdlearn.losses.PerceptualDistance on the shipped classifier's features."


# --------------------------------------------------------------------------- 20.3

def _guidance_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    denoised = torch.randn(3, 1, 4, 4, generator=g)
    target = torch.randn(3, 1, 4, 4, generator=g)

    def loss_fn(x0):
        return (x0 - target).pow(2).sum() + x0.mean(dim=(1, 2, 3)).pow(2).sum()

    return denoised, loss_fn


@exercise("20.3", "a loss-guided step")
def check_loss_guided_estimate(guided_estimate):
    from sdlearn.guidance import loss_guided_estimate

    for sigma, scale, seed in ((2.0, 0.1, 205), (0.5, 0.3, 206), (30.0, 0.05, 207)):
        denoised, loss_fn = _guidance_case(seed)
        kept = denoised.clone()
        got = guided_estimate(denoised, sigma, loss_fn, scale)
        if not torch.equal(denoised, kept):
            raise Failed("your function changed `denoised` in place: return a new tensor.")
        got = as_tensor(got, "the guided estimate", denoised.shape)
        expected = loss_guided_estimate(denoised, torch.tensor(sigma), loss_fn, scale)
        x0 = denoised.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x0), x0)
        weight = sigma ** 2 / (1 + sigma ** 2)
        _name_the_mistake(got, {
            "the push goes up the loss: subtract the gradient, D - scale * weight * grad.":
                denoised + scale * weight * grad,
            "the push is not scaled with the noise level: multiply by sigma**2 / (1 + sigma**2), which is 1 while "
            "the image is noise and fades to 0 as sigma goes to 0.": denoised - scale * grad,
            "the weight is sigma**2: that is the score's own scaling, and it grows without bound at high noise. "
            "Use sigma**2 / (1 + sigma**2).": denoised - scale * sigma ** 2 * grad,
            "the weight is sigma: use sigma**2 / (1 + sigma**2).": denoised - scale * sigma * grad,
            "the weight is 1 / (1 + sigma**2), which is strongest at the end: use sigma**2 / (1 + sigma**2).":
                denoised - scale * grad / (1 + sigma ** 2),
        })
        if not _close(got, expected):
            raise Failed(f"at sigma {sigma} and scale {scale} the estimate differs from D - scale * sigma**2 / "
                         f"(1 + sigma**2) * grad loss_fn(D): largest difference {(got - expected).abs().max():.3g}.")
    return "equal to sdlearn.guidance.loss_guided_estimate at three noise levels."

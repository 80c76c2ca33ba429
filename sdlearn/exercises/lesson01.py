"""Checks for the exercises of lesson 01, the magic function."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.gradients import autograd_grad
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier


def _expect_tensor(value, shape, what: str, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise Failed(f"{what} should return a torch.Tensor, got {type(value).__name__}.")
    if tuple(value.shape) != tuple(shape):
        raise Failed(f"{what} should return shape {tuple(shape)}, got {tuple(value.shape)}.")
    return value.detach().to(dtype=like.dtype, device=like.device)


@exercise("01.1", "probability of being a digit")
def check_digit_probability(digit_probability):
    g = torch.Generator().manual_seed(11)
    logits = torch.cat([
        3 * torch.randn(4, 11, generator=g),
        torch.tensor([[0.0] * 10 + [30.0]]),      # the classifier is sure this is noise
        torch.tensor([[0.0] * 10 + [1000.0]]),    # ... and so sure that exp() overflows
        torch.full((1, 11), -1000.0),             # every logit tiny: P(digit) = 10/11
    ])
    expected = logits.softmax(-1)[:, :10].sum(-1)
    got = _expect_tensor(digit_probability(logits), (7,), "digit_probability(logits) for 7 images", logits)
    if torch.allclose(got, logits.softmax(-1)[:, 10], atol=1e-5):
        raise Failed("you returned the probability of 'not a digit' (class 10); the question asks for the opposite.")
    if not torch.isfinite(got).all():
        raise Failed("some probabilities are NaN or inf (try a logit of 1000): use torch.softmax, which subtracts "
                     "the largest logit before exponentiating.")
    if not torch.allclose(got[:4], expected[:4], atol=1e-5) or not torch.allclose(got[5:], expected[5:], atol=1e-5):
        raise Failed("the values are not the total probability of the ten digit classes. Remember the softmax runs "
                     "over all 11 classes (dim=-1).")
    if not torch.allclose(got[4], expected[4], rtol=1e-3, atol=0):
        raise Failed(f"for an image the classifier calls noise, P(digit) is about {expected[4]:.1e}, but you return "
                     f"{got[4]:.1e}: 1 - P(not a digit) rounds to 0 in float32. Add up the ten digit probabilities.")
    return "the probabilities match, also for images that are almost surely noise."


@exercise("01.2", "one gradient-ascent step")
def check_ascent_step(ascent_step):
    g = torch.Generator().manual_seed(12)
    x = torch.rand(1, 8, 8, generator=g)
    grad = 0.01 * torch.randn(1, 8, 8, generator=g)
    step = 0.1
    rms = grad.pow(2).mean().sqrt()
    expected = (x + step * grad / rms).clamp(0, 1)
    got = _expect_tensor(ascent_step(x.clone(), grad.clone(), step), x.shape, "ascent_step(x, grad, step_size)", x)
    if torch.allclose(got, (x - step * grad / rms).clamp(0, 1), atol=1e-6):
        raise Failed("you stepped down the gradient: ascent adds step_size * direction, it does not subtract it.")
    if torch.allclose(got, x + step * grad / rms, atol=1e-6) and not torch.allclose(got, expected):
        raise Failed("the step is right but pixels left [0, 1]: clamp the result.")
    if torch.allclose(got, (x + step * grad).clamp(0, 1), atol=1e-6):
        raise Failed("divide the gradient by its root-mean-square first, so that step_size is a change in pixel units.")
    if not torch.allclose(got, expected, atol=1e-6):
        raise Failed("expected clamp(x + step_size * grad / rms(grad), 0, 1) with rms(grad) = sqrt(mean(grad**2)).")
    return "your step matches the reference to 1e-6."


@exercise("01.3", "the gradient of a class's log-probability")
def check_input_gradient(input_gradient):
    with torch.random.fork_rng():  # build the test model without touching the student's random state
        torch.manual_seed(13)
        model = SmallClassifier(ClassifierConfig(n_classes=11)).eval()
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(13))
    k = 3
    expected = autograd_grad(lambda xb: model(xb).log_softmax(-1)[:, k], x)
    got = _expect_tensor(input_gradient(model, x.clone(), k), x.shape, "input_gradient(model, x, k)", x)
    if torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
        return "your gradient matches autograd's on a fresh model."
    other = autograd_grad(lambda xb: model(xb)[:, k], x)
    if torch.allclose(got, other, rtol=1e-4, atol=1e-6):
        raise Failed("that is the gradient of the raw logit; take log_softmax over the classes first.")
    raise Failed("the gradient differs from the reference. Make x require grad, compute "
                 "model(x[None]).log_softmax(-1)[0, k], call backward() and return x.grad.")

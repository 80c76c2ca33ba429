"""Checks for the exercises of lesson 01, the magic function."""

from __future__ import annotations

from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.gradients import gradient_ascent
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


def _buggy_ascend(score, x, step_size, n_steps):
    """The loop of exercise 01.2 as the lesson shows it: x.grad is never reset."""
    x = x.clone().requires_grad_(True)
    for _ in range(n_steps):
        score(x[None]).sum().backward()
        with torch.no_grad():
            g = x.grad
            x += step_size * g / g.pow(2).mean().sqrt()
            x.clamp_(0, 1)
    return x.detach()


@exercise("01.2", "find the bug in an ascent loop")
def check_ascend(ascend):
    with torch.random.fork_rng():  # build the test model without touching the student's random state
        torch.manual_seed(12)
        model = SmallClassifier(ClassifierConfig(n_classes=11)).eval()
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(12)
    x = torch.rand(1, 28, 28, generator=g)
    target = torch.rand(1, 28, 28, generator=g)
    scores = {
        "log P(3) under a freshly initialised classifier": lambda xb: model(xb).log_softmax(-1)[:, 3],
        "closeness to a fixed image, -mean((x - target)^2)": lambda xb: -(xb - target).pow(2).mean(dim=(1, 2, 3)),
    }
    step_size, n_steps = 0.05, 8
    for name, score in scores.items():
        given = x.clone()
        got = _expect_tensor(ascend(score, given, step_size, n_steps), x.shape, "ascend(score, x, step_size, n_steps)",
                             x)
        if not torch.equal(given, x):
            raise Failed("your function changed the x it was given; work on a copy (x.clone()).")
        expected = gradient_ascent(score, x, step_size=step_size, n_steps=n_steps, record_every=n_steps).x
        if torch.allclose(got, expected, atol=1e-5):
            continue
        if torch.allclose(got, _buggy_ascend(score, x, step_size, n_steps), atol=1e-5):
            raise Failed("that is still the loop's old result. backward() adds the new gradient to x.grad instead of "
                         "replacing it, so from the second step on each step follows the sum of all the gradients so "
                         "far. Reset x.grad after each step (x.grad = None), or take the gradient with "
                         "torch.autograd.grad.")
        one_step = gradient_ascent(score, x, step_size=step_size, n_steps=1).x
        if torch.allclose(got, one_step, atol=1e-5):
            raise Failed("your loop takes one step only: the image after n_steps steps is expected.")
        raise Failed(f"for the score {name} your image differs from gradient_ascent(score, x, step_size=0.05, "
                     "n_steps=8).x. Only the gradient was wrong: keep the step as it was (divided by the "
                     "root-mean-square of the gradient, then clamped to [0, 1]).")
    return "the same images as gradient_ascent, for a classifier's score and for a simple one."


def roughness(x: torch.Tensor) -> torch.Tensor:
    """The lesson's measure: mean absolute difference between horizontally neighbouring pixels, one per image."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(-3, -2, -1))


@lru_cache(maxsize=1)
def _judge_test_images() -> dict:
    from sdlearn.data import load_digits

    digits, _ = load_digits(size=28)
    g = torch.Generator().manual_seed(13)
    speckled = (digits[:500] + 0.2 * torch.randn(digits[:500].shape, generator=g)).clamp(0, 1)
    noise = torch.cat([torch.rand(200, 1, 28, 28, generator=g),
                       (0.5 + 0.3 * torch.randn(200, 1, 28, 28, generator=g)).clamp(0, 1)])
    return {"real": digits, "speckled": speckled, "noise": noise}


def _verdicts(judge, images: torch.Tensor) -> torch.Tensor:
    got = judge(images.clone())
    if isinstance(got, (list, tuple)):
        got = torch.tensor(got)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (len(images),):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise Failed(f"return one True or False per image, shape ({len(images)},) for {len(images)} images; "
                     f"got {shape}.")
    if got.dtype != torch.bool:
        if not ((got == 0) | (got == 1)).all():
            raise Failed("return True or False per image (a comparison such as roughness(x) < threshold), not the "
                         "measurement itself.")
        got = got.bool()
    return got


@exercise("01.3", "a judge of handwriting")
def check_looks_like_handwriting(looks_like_handwriting):
    sets = _judge_test_images()
    accepted = {name: _verdicts(looks_like_handwriting, images) for name, images in sets.items()}
    real_kept = accepted["real"].float().mean().item()
    speckle_kept = accepted["speckled"].float().mean().item()
    noise_kept = accepted["noise"].float().mean().item()
    real_range = roughness(sets["real"])
    speckle_range = roughness(sets["speckled"])
    if real_kept < 0.01 and noise_kept > 0.99:
        raise Failed("it accepts noise and rejects the real digits: the comparison is the wrong way round. Pen "
                     "strokes are smooth, so handwriting has the low roughness.")
    if real_kept < 0.99:
        raise Failed(f"it rejects {1 - real_kept:.0%} of the 1,797 real digits: too strict. Look at the spread of "
                     f"the real digits' roughness, not only its mean (it reaches {real_range.max():.3f}).")
    if noise_kept > 0.01:
        raise Failed(f"it accepts {noise_kept:.0%} of the noise images: too lenient.")
    if speckle_kept > 0.01:
        raise Failed(f"it accepts {speckle_kept:.0%} of the 500 digits with speckle added (their roughness runs from "
                     f"{speckle_range.min():.3f} to {speckle_range.max():.3f}): too lenient. Speckle like the ascent's "
                     "should not pass for handwriting.")
    return (f"keeps {real_kept:.1%} of the real digits and rejects {1 - speckle_kept:.0%} of the speckled digits and "
            f"{1 - noise_kept:.0%} of the noise images, without asking a classifier.")

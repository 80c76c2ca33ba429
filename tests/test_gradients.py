import numpy as np
import pytest
import torch

from sdlearn.gradients import (CallCounter, autograd_grad, finite_difference_grad, gradient_ascent,
                               gradient_check, relative_error)

W = torch.linspace(-1, 1, 12, dtype=torch.float64).view(3, 4)


def smooth(xb):
    """A smooth function of a (3, 4) input with a known gradient: sum(W x^2) + sum(sin x)."""
    return (W * xb ** 2).sum(dim=(1, 2)) + torch.sin(xb).sum(dim=(1, 2))


def exact_grad(x):
    return 2 * W * x + torch.cos(x)


X = torch.linspace(-2, 2, 12, dtype=torch.float64).view(3, 4)


@pytest.mark.parametrize("batched", [False, True])
def test_central_difference_matches_the_exact_gradient(batched):
    grad = finite_difference_grad(smooth, X, eps=1e-5, method="central", batched=batched)
    torch.testing.assert_close(grad, exact_grad(X), atol=1e-8, rtol=0)


def test_forward_difference_is_first_order():
    errors = [(finite_difference_grad(smooth, X, eps=e, method="forward") - exact_grad(X)).abs().max()
              for e in (1e-3, 5e-4)]
    assert 1.8 < errors[0] / errors[1] < 2.2


def test_central_difference_is_second_order():
    errors = [(finite_difference_grad(smooth, X, eps=e) - exact_grad(X)).abs().max() for e in (1e-2, 5e-3)]
    assert 3.6 < errors[0] / errors[1] < 4.4


def test_batched_and_naive_agree_and_count_calls():
    naive, batched = CallCounter(smooth), CallCounter(smooth)
    a = finite_difference_grad(naive, X, eps=1e-4, batched=False)
    b = finite_difference_grad(batched, X, eps=1e-4, batched=True, batch_size=5)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert (naive.calls, naive.inputs) == (24, 24)
    assert (batched.calls, batched.inputs) == (6, 24)  # ceil(12 / 5) = 3 chunks, two calls each


def test_autograd_matches_exact_and_leaves_x_alone():
    x = X.clone()
    grad = autograd_grad(smooth, x)
    torch.testing.assert_close(grad, exact_grad(X), atol=1e-12, rtol=0)
    assert not x.requires_grad and torch.equal(x, X)


def test_gradient_check_passes_correct_and_fails_wrong_gradients():
    good = gradient_check(smooth, X)
    assert good.passed and good.max_rel_error < 1e-7
    bad = gradient_check(smooth, X, grad=2 * W * X)  # forgot the cos term
    assert not bad.passed and bad.max_rel_error > 0.1
    assert "FAILED" in repr(bad)


def test_relative_error_is_scale_free():
    a = torch.tensor([1.0, 1000.0])
    b = torch.tensor([1.1, 1100.0])
    torch.testing.assert_close(relative_error(a, b), torch.tensor([0.1 / 1.1, 100 / 1100.0]))


def test_gradient_ascent_raises_the_score_and_respects_the_clamp():
    def closeness(xb):  # highest at a target image with values outside [0, 1] in places
        target = torch.full((1, 4, 4), 1.5)
        return -((xb - target) ** 2).sum(dim=(1, 2, 3))

    x0 = torch.zeros(1, 4, 4)
    run = gradient_ascent(closeness, x0, step_size=0.1, n_steps=20, record_every=5)
    assert len(run.frames) == 5 and len(run.scores) == 5
    assert all(later >= earlier for earlier, later in zip(run.scores, run.scores[1:]))
    assert run.scores[-1] > run.scores[0]
    assert run.x.max() <= 1.0 and torch.allclose(run.x, torch.ones(1, 4, 4))
    assert torch.equal(x0, torch.zeros(1, 4, 4))


def test_gradient_ascent_without_normalising_takes_plain_gradient_steps():
    def linear(xb):
        return (3.0 * xb).sum(dim=(1, 2))
    run = gradient_ascent(linear, torch.zeros(2, 2), step_size=0.01, n_steps=2, normalize=False, clamp=None)
    torch.testing.assert_close(run.x, torch.full((2, 2), 0.06))


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((3, 4)), TypeError, "must be a torch.Tensor"),
    (torch.zeros(3, 4, dtype=torch.int64), TypeError, "floating-point"),
    (torch.zeros(0), ValueError, "empty"),
])
def test_bad_inputs_are_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        finite_difference_grad(smooth, bad)
    with pytest.raises(error, match=match):
        autograd_grad(smooth, bad)


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        finite_difference_grad(smooth, X, eps=eps)


def test_a_non_scalar_score_is_a_clear_error():
    def logits(xb):
        return xb.flatten(1)  # (B, 12): not one number per input
    with pytest.raises(ValueError, match="one number per input"):
        autograd_grad(logits, X)
    with pytest.raises(ValueError, match="one number per input"):
        finite_difference_grad(logits, X)
    with pytest.raises(ValueError, match="one number per input"):
        gradient_ascent(logits, X, step_size=0.1, n_steps=1)

"""sdlearn.optim against torch.optim: the same parameter trajectory, and clear errors for bad input.

Tolerance: 1e-6 absolute on every parameter after every step (in practice they agree exactly:
the same operations in the same order).
"""

import math

import pytest
import torch

from sdlearn import optim

TOL = 1e-6
STEPS = 40


def _trajectory(make_optimizer, steps: int = STEPS) -> torch.Tensor:
    """Train a small network with noisy regression batches; the parameters after every step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimizer = make_optimizer(net.parameters())
    data = torch.Generator().manual_seed(1)
    path = []
    for _ in range(steps):
        x = torch.randn(32, 6, generator=data)
        y = torch.stack([x[:, 0].sin(), x[:, 1] * x[:, 2]], dim=1)
        loss = torch.nn.functional.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        path.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return torch.stack(path)


CASES = {
    "sgd": ({"lr": 0.1}, {"lr": 0.1}),
    "sgd-weight-decay": ({"lr": 0.1, "weight_decay": 0.05}, {"lr": 0.1, "weight_decay": 0.05}),
    "momentum": ({"lr": 0.05, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9}),
    "momentum-dampened": ({"lr": 0.05, "momentum": 0.6, "dampening": 0.6}, {"lr": 0.05, "momentum": 0.6, "dampening": 0.6}),
    "nesterov": ({"lr": 0.05, "momentum": 0.9, "nesterov": True}, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
}
RMS_CASES = {
    "rmsprop": ({"lr": 0.01}, {"lr": 0.01}),
    "rmsprop-alpha-eps-decay": ({"lr": 0.003, "alpha": 0.9, "eps": 1e-4, "weight_decay": 0.01},
                                {"lr": 0.003, "alpha": 0.9, "eps": 1e-4, "weight_decay": 0.01}),
}
ADAM_CASES = {
    "adam": ({"lr": 0.01}, {"lr": 0.01}),
    "adam-betas-eps-decay": ({"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.1},
                             {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.1}),
}


def _cases():
    for name, (mine, reference) in CASES.items():
        yield pytest.param(optim.SGD, mine, torch.optim.SGD, reference, id=name)
    for name, (mine, reference) in RMS_CASES.items():
        yield pytest.param(optim.RMSProp, mine, torch.optim.RMSprop, reference, id=name)
    for name, (mine, reference) in ADAM_CASES.items():
        yield pytest.param(optim.Adam, mine, torch.optim.Adam, reference, id=name)


@pytest.mark.parametrize("ours, our_kwargs, theirs, their_kwargs", list(_cases()))
def test_trajectory_matches_torch_optim(ours, our_kwargs, theirs, their_kwargs):
    mine = _trajectory(lambda params: ours(params, **our_kwargs))
    reference = _trajectory(lambda params: theirs(params, **their_kwargs))
    assert (mine - reference).abs().max().item() <= TOL
    assert (mine[-1] - mine[0]).abs().max().item() > 1e-3          # the parameters did move


def test_adam_first_step_is_lr_times_the_sign_thanks_to_bias_correction():
    # With bias correction m_hat / sqrt(v_hat) = g / |g| at step 1, so every coordinate moves by lr.
    p = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    optimizer = optim.Adam([p], lr=0.1, eps=0.0)
    p.grad = torch.tensor([1e-4, -50.0, 3.0])
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 2.9]), rtol=0, atol=1e-6)


def test_step_skips_tensors_without_a_gradient_and_zero_grad_clears_them():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    optimizer = optim.SGD([a, b], lr=0.5)
    (a.sum() * 2).backward()
    optimizer.step()
    assert torch.equal(a.detach(), torch.zeros(3)) and torch.equal(b.detach(), torch.ones(2))
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_learning_rate_can_change_between_steps():
    p = torch.zeros(1, requires_grad=True)
    optimizer = optim.SGD([p], lr=1.0)
    for lr in (1.0, 0.5, 0.25):
        optimizer.lr = lr
        p.grad = torch.ones(1)
        optimizer.step()
    assert p.item() == pytest.approx(-1.75)


def test_a_non_leaf_tensor_is_refused_with_the_fix():
    x = torch.rand(4, requires_grad=True)
    with pytest.raises(ValueError, match="not a leaf tensor.*detach"):
        optim.Adam([x * 2], lr=0.1)


def test_a_tensor_that_does_not_require_grad_is_refused():
    with pytest.raises(ValueError, match="requires_grad_"):
        optim.SGD([torch.rand(4)], lr=0.1)


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, "0.1"])
def test_a_learning_rate_that_is_not_a_positive_number_is_refused(lr):
    x = torch.rand(4, requires_grad=True)
    for make in (optim.SGD, optim.RMSProp, optim.Adam):
        with pytest.raises(ValueError, match="learning rate must be a finite number > 0"):
            make([x], lr=lr)
    optimizer = optim.SGD([x], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optimizer.lr = lr


def test_other_bad_settings_are_refused():
    x = torch.rand(4, requires_grad=True)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD(x, lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([x], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([x], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta2"):
        optim.Adam([x], lr=0.1, betas=(0.9, 1.5))
    with pytest.raises(TypeError, match="floating-point"):
        optim.SGD([torch.ones(3, dtype=torch.long)], lr=0.1)

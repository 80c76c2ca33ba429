"""Teaching optimizers: SGD, momentum, RMSProp and Adam written out, each equal to torch.optim's.

Every optimizer here is a small class with the two methods a training loop calls:

    optimizer = Adam([x], lr=0.05)
    for _ in range(n_steps):
        loss = f(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

They are built one from the other, as lesson 20 builds them:

- `SGD`      p <- p - lr g                                    (Robbins and Monro, 1951)
- momentum   `SGD(momentum=mu)`: b <- mu b + (1 - dampening) g, p <- p - lr b   (Polyak, 1964)
- `RMSProp`  s <- alpha s + (1 - alpha) g^2, p <- p - lr g / (sqrt(s) + eps)     (Hinton, 2012)
- `Adam`     momentum on g and RMSProp's s together, both bias-corrected         (Kingma and Ba, 2015)

Each one updates its parameters in place with the same arithmetic, in the same order, as
`torch.optim.SGD`, `RMSprop` and `Adam` with the matching arguments, so the two give the same
trajectory to float32 rounding (tests/test_optim.py). What they leave out is what a course does
not need: parameter groups, state dicts, fused and foreach kernels, closures.

`lr` is a plain attribute: a loop may change it between steps (a learning-rate schedule, or
a sampler whose step size is set by the noise levels). `sample_with_optimizer`, at the end, is such
a sampler: Euler's method written as gradient descent on -log p, driven by any of these optimizers.
"""

from __future__ import annotations

from typing import Iterable

import torch

from sdlearn.samplers import Callback, Step, check_sampler_input, denoise
from sdlearn.schedules import Schedule


class Optimizer:
    """What every optimizer here shares: the parameters, `lr`, per-parameter state and `zero_grad`.

    params   leaf tensors that require grad (a model's `.parameters()`, or an image `x` made with
             `x.requires_grad_()`); a tensor computed from others is refused, because `backward()`
             does not keep its `.grad` and changing it in place would not change what it was computed from
    lr       the learning rate, > 0
    state    one dict per parameter, filled by `update` (momentum buffers, running averages, the step count)
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float):
        if isinstance(params, torch.Tensor):
            raise TypeError("params must be an iterable of tensors, such as model.parameters() or [x], "
                            "not a single tensor: wrap it in a list")
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters: pass model.parameters() or a list of tensors")
        for i, p in enumerate(self.params):
            _check_parameter(p, i)
        self.lr = lr
        self.state: list[dict] = [{} for _ in self.params]

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        if not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"the learning rate must be a finite number > 0, got {value!r}")
        self._lr = float(value)

    def zero_grad(self) -> None:
        """Forget the gradients: `backward()` adds to `.grad`, so each step must start from None."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            self.update(p, p.grad, state)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.settings().items())
        return f"{type(self).__name__}({len(self.params)} tensors, {settings})"

    def settings(self) -> dict:
        return {"lr": self.lr}


def _check_parameter(p, i: int) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"parameter {i} is a {type(p).__name__}, not a tensor")
    if not p.is_floating_point():
        raise TypeError(f"parameter {i} has dtype {p.dtype}; only floating-point tensors can be optimized")
    if not p.is_leaf:
        raise ValueError(f"parameter {i} is not a leaf tensor: it was computed from other tensors "
                         f"(grad_fn={type(p.grad_fn).__name__}), so backward() leaves its .grad empty and an "
                         f"in-place update would not reach what it came from. Optimize a leaf instead: "
                         f"x = x.detach().clone().requires_grad_()")
    if not p.requires_grad:
        raise ValueError(f"parameter {i} does not require grad, so backward() will never give it a gradient: "
                         f"call .requires_grad_() on it first")


def _check_fraction(name: str, value: float, *, closed: bool = True) -> float:
    ok = 0 <= value <= 1 if closed else 0 <= value < 1
    if not ok:
        raise ValueError(f"{name} must lie in [0, 1{']' if closed else ')'}, got {value!r}")
    return float(value)


def _check_non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (heavy-ball) momentum, as `torch.optim.SGD`.

    g             the gradient, plus weight_decay * p
    b             the momentum buffer: g at the first step, then momentum * b + (1 - dampening) * g
    nesterov      step along g + momentum * b instead of b (look ahead; needs dampening 0)
    With momentum 0 the step is p <- p - lr g. With dampening = momentum, b is an exponential
    moving average of the gradients, so a steady gradient gives the same step as without momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_fraction("momentum", momentum, closed=False)
        self.dampening = _check_fraction("dampening", dampening)
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        self.nesterov = nesterov

    def update(self, p, grad, state):
        # 1. the gradient, with L2 weight decay folded in
        if self.weight_decay != 0:
            grad = grad.add(p, alpha=self.weight_decay)
        # 2. the momentum buffer: a running (decaying) sum of past gradients
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
            buffer = state["momentum_buffer"]
            grad = grad.add(buffer, alpha=self.momentum) if self.nesterov else buffer
        # 3. the step
        p.add_(grad, alpha=-self.lr)

    def settings(self):
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}


class RMSProp(Optimizer):
    """RMSProp (Hinton's lecture 6e, 2012), as `torch.optim.RMSprop` with centered=False, momentum=0.

    s     square_avg, a running average of g^2: alpha * s + (1 - alpha) * g^2
    The step divides g by sqrt(s) + eps: each coordinate moves about lr, whatever its gradient's scale.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.alpha = _check_fraction("alpha", alpha)
        self.eps = _check_non_negative("eps", eps)
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)

    def update(self, p, grad, state):
        if self.weight_decay != 0:
            grad = grad.add(p, alpha=self.weight_decay)
        # 1. the running average of the squared gradient
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        square_avg = state["square_avg"]
        square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        # 2. the step, divided per coordinate by the gradient's running RMS
        p.addcdiv_(grad, square_avg.sqrt().add_(self.eps), value=-self.lr)

    def settings(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015, Algorithm 1), as `torch.optim.Adam` with amsgrad=False.

    m_t       exp_avg, momentum's average of g:     beta1 m + (1 - beta1) g
    v_t       exp_avg_sq, RMSProp's average of g^2: beta2 v + (1 - beta2) g^2
    m_hat     m_t / (1 - beta1^t), v_hat = v_t / (1 - beta2^t): both averages start at 0, so without
              the correction the first steps would be far too small
    step      p <- p - lr m_hat / (sqrt(v_hat) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_fraction("beta1", betas[0], closed=False), _check_fraction("beta2", betas[1], closed=False))
        self.eps = _check_non_negative("eps", eps)
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)

    def update(self, p, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            grad = grad.add(p, alpha=self.weight_decay)
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        # 1. the two running averages
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # 2. bias correction, folded into the step size and the denominator
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = self.lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
        # 3. the step
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def settings(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSProp, "adam": Adam}


# --------------------------------------------------------------------------- a sampler as an optimizer

@torch.no_grad()
def sample_with_optimizer(model, x, schedule: Schedule, make_optimizer, *, prediction_type: str = "epsilon",
                          generator=None, callback: Callback | None = None) -> torch.Tensor:
    """Euler's method written as gradient descent on -log p, driven by any `sdlearn.optim` optimizer.

    x           the parameter the optimizer moves, at noise level sigma_i (as in `sample_euler`)
    grad        (x - D(x; sigma_i)) / sigma_i = -sigma_i * score: the predicted noise, the gradient of
                -log p_sigma(x) scaled by sigma_i so that it has about unit size at every noise level
    lr          sigma_i - sigma_{i+1}, set before each step
    `make_optimizer(params, lr)` builds the optimizer, e.g. `functools.partial(SGD, momentum=0.5,
    dampening=0.5)`. With plain `SGD` each step is x <- x - (sigma_i - sigma_{i+1}) d, exactly
    `sample_euler`; momentum or Adam change the direction (and Adam the size) of each step, while
    the model is still asked about x at the schedule's noise level sigma_{i+1}.
    """
    check_sampler_input(x, schedule, prediction_type)
    sigmas = schedule.sigmas
    x = x.detach().clone().requires_grad_()
    optimizer = make_optimizer([x], lr=(sigmas[0] - sigmas[1]).item())
    for i in range(schedule.num_inference_steps):
        sigma = sigmas[i]
        # 1. denoise; the predicted noise is the gradient the optimizer sees
        denoised = denoise(model, x.detach(), schedule, i, sigma, prediction_type)
        x.grad = (x.detach() - denoised) / sigma
        # 2. one optimizer step with the schedule's step size
        optimizer.lr = (sigma - sigmas[i + 1]).item()
        optimizer.step()
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x.detach().clone(),
                              pred_x0=denoised))
    return x.detach()

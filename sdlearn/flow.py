"""Flow matching (rectified flow): the straight path, SD3's timestep shift, and Euler's method in flow time.

Flow matching (Lipman et al., 2023; Liu et al., 2023; Esser et al., 2024, SD3) uses the straight path

    x_t = (1 - t) x0 + t noise,   t in [0, 1] (t = 1 is pure noise),

and trains the network to predict its velocity dx_t/dt = noise - x0 (`sdlearn.losses.flow_matching_loss`).
The network sees the time as t * num_train_timesteps, as diffusers' `FlowMatchEulerDiscreteScheduler`
gives it; there the time is called sigma, because it is also the noise's share of x_t.

    schedule = make_flow_schedule(25, shift=3.0)        # or flow_schedule_from_config(scheduler_config, 25)
    latents = sample_flow_euler(model, noise, schedule)

`make_flow_schedule` and `sample_flow_euler` compute what the scheduler's `set_timesteps` and `step`
compute (tests/test_flow_matching.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdlearn.samplers import Callback, Step
from sdlearn.schedules import check_steps


def _check_flow_time(t: torch.Tensor) -> None:
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"flow-matching time runs from 0 (clean) to 1 (pure noise), got values in "
                         f"[{t.min().item():g}, {t.max().item():g}]: divide timesteps by num_train_timesteps")


def _check_shift(shift: float) -> float:
    if not shift > 0:
        raise ValueError(f"the timestep shift must be > 0 (1 leaves the schedule as it is; SD3 uses 3.0), got {shift!r}")
    return float(shift)


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with one t in [0, 1] per image (B,)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    _check_flow_time(t)
    t = t.reshape(-1, *([1] * (x0.ndim - 1)))                                 # (B, 1, 1, 1)
    return (1 - t) * x0 + t * noise


def shift_flow_time(t, shift: float):
    """SD3's timestep shift, shift * t / (1 + (shift - 1) * t): more of the steps at high noise when shift > 1.

    Larger images keep their structure under more noise (more pixels average it away), so SD3 and
    Flux spend more of their steps near t = 1; shift 1 changes nothing.
    """
    shift = _check_shift(shift)
    return shift * t / (1 + (shift - 1) * t)


@dataclass
class FlowSchedule:
    """The times of a flow-matching sampler, as `FlowMatchEulerDiscreteScheduler.set_timesteps` makes them.

    sigmas      (n + 1,) the flow times t from about 1 down to 0, the last one 0
    timesteps   (n,) what the network is given: sigmas[:-1] * num_train_timesteps
    """
    timesteps: torch.Tensor
    sigmas: torch.Tensor
    num_inference_steps: int
    shift: float
    num_train_timesteps: int


def make_flow_schedule(num_inference_steps: int | None = None, *, shift: float = 1.0,
                       num_train_timesteps: int = 1000, sigmas=None) -> FlowSchedule:
    """The flow times diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift)` uses for n steps.

    1. the training times 1000/1000, 999/1000, ..., 1/1000, shifted; the first and the last are
       the range (so the smallest time is shifted once here and again in step 3, as diffusers does);
    2. n times evenly spaced over that range;
    3. shifted, and a final 0 appended.

    With `sigmas` (the times to take steps from, decreasing, in (0, 1]) steps 1 and 2 are skipped,
    as `scheduler.set_timesteps(sigmas=...)` does: `sigmas=[1.0, 0.5]` is two steps that meet halfway.
    """
    if sigmas is not None:
        times = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
        if num_inference_steps is None:
            num_inference_steps = len(times)
        if len(times) == 0 or len(times) != num_inference_steps:
            raise ValueError(f"sigmas must hold one time per step ({num_inference_steps}), got {len(times)}")
        if not (times.isfinite().all() and (times > 0).all() and (times <= 1).all()
                and (len(times) == 1 or (times[1:] < times[:-1]).all())):
            raise ValueError(f"sigmas must be decreasing flow times in (0, 1] (the last step goes to 0 by itself), "
                             f"got {times.tolist()}")
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a whole number >= 1, got {num_inference_steps!r}")
    check_steps(num_train_timesteps)
    shift = _check_shift(shift)
    if sigmas is not None:
        sigmas = times.numpy()
    else:
        train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
        train_sigmas = torch.from_numpy(train) / num_train_timesteps
        train_sigmas = shift * train_sigmas / (1 + (shift - 1) * train_sigmas)
        sigma_max, sigma_min = train_sigmas[0].item(), train_sigmas[-1].item()
        times = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, num_inference_steps)
        sigmas = times / num_train_timesteps
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas = torch.from_numpy(sigmas).to(torch.float32)
    timesteps = sigmas * num_train_timesteps
    return FlowSchedule(timesteps=timesteps, sigmas=torch.cat([sigmas, torch.zeros(1)]),
                        num_inference_steps=num_inference_steps, shift=shift, num_train_timesteps=num_train_timesteps)


FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def flow_schedule_from_config(config: dict, num_inference_steps: int) -> FlowSchedule:
    """A `FlowSchedule` from a diffusers scheduler config (a dict, as in scheduler_config.json)."""
    kind = config.get("_class_name")
    if kind != FLOW_SCHEDULER:
        raise ValueError(f"this is a {kind or 'scheduler'} config, not a {FLOW_SCHEDULER} one: a model trained for "
                         f"noise or v prediction cannot be sampled as a flow (use sdlearn.schedules.make_schedule "
                         f"and the DDPM-family samplers for it)")
    unsupported = [key for key in ("use_dynamic_shifting", "use_karras_sigmas", "use_exponential_sigmas",
                                   "use_beta_sigmas", "invert_sigmas", "stochastic_sampling", "shift_terminal")
                   if config.get(key)]
    if unsupported:
        raise ValueError(f"the flow schedule follows FlowMatchEulerDiscreteScheduler with a fixed shift; this config "
                         f"also sets {', '.join(unsupported)}, which it does not implement")
    return make_flow_schedule(num_inference_steps, shift=config.get("shift", 1.0),
                              num_train_timesteps=config.get("num_train_timesteps", 1000))


@torch.no_grad()
def sample_flow_euler(model, x, schedule: FlowSchedule, *, generator=None,
                      callback: Callback | None = None) -> torch.Tensor:
    """Euler's method on a flow-matching model's ODE, as `FlowMatchEulerDiscreteScheduler.step` takes it.

    x          x_t at flow time t = sigmas[i] (start: pure noise, t about 1)
    v          the model's velocity, dx_t/dt = noise - x0, at timestep sigmas[i] * num_train_timesteps
    step       x <- x + (sigmas[i + 1] - sigmas[i]) v: towards t = 0, the image
    pred_x0    x - t v: where the straight line through x with slope v reaches t = 0
    """
    if not isinstance(schedule, FlowSchedule):
        raise TypeError(f"sample_flow_euler needs a FlowSchedule (sdlearn.schedules.make_flow_schedule or "
                        f"flow_schedule_from_config), got {type(schedule).__name__}: a DDPM-family schedule "
                        f"belongs to a noise- or v-prediction model and the other samplers")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    sigmas = schedule.sigmas
    for i in range(schedule.num_inference_steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        v = model(x, schedule.timesteps[i].to(x.device))
        pred_x0 = x - t * v
        x = x + (t_next - t) * v
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=pred_x0))
    return x

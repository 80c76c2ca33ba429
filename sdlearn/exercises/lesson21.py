"""Checks for the exercises of lesson 21, flow matching.

21.1 the flow-matching loss, 21.2 one Euler step in flow time, 21.3 SD3's shifted timestep.
Every check runs the student's function on seeded inputs, compares with the right answer
(sdlearn.losses.flow_matching_loss, FlowMatchEulerDiscreteScheduler.step, sdlearn.flow.shift_flow_time),
and names the typical wrong answers.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, as_number, as_tensor, exercise, name_the_mistake, same_tensor

_close = partial(same_tensor, rtol=1e-5, atol=1e-6)
_name_the_mistake = partial(name_the_mistake, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 21.1

class _Recorder(torch.nn.Module):
    """A fixed small network of (x_t, timestep) that remembers the timesteps it was given."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        generator = torch.Generator().manual_seed(211)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
        self.seen = []

    def forward(self, x, timestep):
        timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        self.seen.append(timestep.detach().clone())
        return self.conv(x) * (1 + timestep / 1000).view(-1, 1, 1, 1)


def _flow_loss(model, x0, t, noise, *, path="straight", target="velocity", time_scale=1000.0):
    t4 = t.view(-1, 1, 1, 1)
    if path == "straight":
        x_t = (1 - t4) * x0 + t4 * noise
    elif path == "reversed":
        x_t = t4 * x0 + (1 - t4) * noise
    else:
        x_t = (1 - t4).sqrt() * x0 + t4.sqrt() * noise
    wanted = {"velocity": noise - x0, "reversed": x0 - noise, "noise": noise, "x0": x0}[target]
    return F.mse_loss(model(x_t, t * time_scale), wanted)


@exercise("21.1", "the flow-matching loss")
def check_flow_matching_loss(flow_matching_loss):
    g = torch.Generator().manual_seed(212)
    x0 = torch.randn(4, 2, 5, 5, generator=g)
    noise = torch.randn(4, 2, 5, 5, generator=g)
    t = torch.tensor([0.1, 0.35, 0.6, 0.95])
    model = _Recorder()
    got = flow_matching_loss(model, x0.clone(), t.clone(), noise.clone())
    if not isinstance(got, torch.Tensor) or got.numel() != 1:
        raise Failed("return the loss as one number in a tensor (F.mse_loss's mean), not "
                     f"{type(got).__name__ if not isinstance(got, torch.Tensor) else tuple(got.shape)}.")
    if not got.requires_grad:
        raise Failed("the loss is not connected to the model (.item(), .detach() or torch.no_grad()): training "
                     "could not follow it back to the weights.")
    if model.seen and not torch.allclose(model.seen[-1], t * 1000):
        if torch.allclose(model.seen[-1], t):
            raise Failed("the network was given t itself: it sees the time as t * 1000, as diffusers' "
                         "FlowMatchEulerDiscreteScheduler gives it (timesteps = sigmas * num_train_timesteps).")
    got = got.detach().reshape(())
    expected = _flow_loss(model, x0, t, noise).detach()
    _name_the_mistake(got, {
        "the target is the noise: flow matching predicts the velocity of the straight path, noise - x0.":
            _flow_loss(model, x0, t, noise, target="noise").detach(),
        "the target is the image x0: flow matching predicts the velocity of the straight path, noise - x0.":
            _flow_loss(model, x0, t, noise, target="x0").detach(),
        "the velocity points the wrong way: d x_t / dt = noise - x0 for x_t = (1 - t) x0 + t noise.":
            _flow_loss(model, x0, t, noise, target="reversed").detach(),
        "the path runs backwards: t = 0 is the image and t = 1 the noise, x_t = (1 - t) x0 + t noise.":
            _flow_loss(model, x0, t, noise, path="reversed").detach(),
        "that is a variance-preserving path (square roots): flow matching's path is the straight line "
        "x_t = (1 - t) x0 + t noise.": _flow_loss(model, x0, t, noise, path="vp").detach(),
        "the network was given t itself: it sees the time as t * 1000, as diffusers' FlowMatchEulerDiscreteScheduler "
        "gives it.": _flow_loss(model, x0, t, noise, time_scale=1.0).detach(),
    })
    if not _close(got, expected):
        raise Failed(f"the loss is {got.item():.6g}, the expected {expected.item():.6g}: x_t = (1 - t) x0 + t noise "
                     f"(t per image, shaped to broadcast), the model at (x_t, t * 1000), MSE against noise - x0.")
    return "the same loss as sdlearn.losses.flow_matching_loss for these times and noise."


# --------------------------------------------------------------------------- 21.2

@exercise("21.2", "one Euler step in flow time")
def check_flow_euler_step(flow_euler_step):
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(213)
    for steps, shift in ((4, 1.0), (7, 3.0)):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps)
        sample = torch.randn(2, 4, 3, 3, generator=g)
        velocity = torch.randn(2, 4, 3, 3, generator=g)
        for i in (1, steps - 1):          # t < 1 (at t = 1, x - t v is x - v) and the last step
            scheduler._step_index = i
            expected = scheduler.step(velocity, scheduler.timesteps[i], sample).prev_sample
            t, t_next = scheduler.sigmas[i].item(), scheduler.sigmas[i + 1].item()
            got = as_tensor(flow_euler_step(sample.clone(), velocity.clone(), t, t_next), "the next sample",
                            sample.shape)
            wrong = {
                "the step goes the wrong way: t falls from t to t_next, so x + (t_next - t) v (t_next - t is "
                "negative).": sample + (t - t_next) * velocity,
                "the step is not scaled by the time difference: x + (t_next - t) v.": sample - velocity,
                "you jumped to the predicted image x - t v: a step goes only to t_next.": sample - t * velocity,
            }
            # at the last step t_next = 0, where the jump to the predicted image is the right step
            _name_the_mistake(got, {message: answer for message, answer in wrong.items()
                                    if not _close(answer, expected)})
            if not _close(got, expected):
                raise Failed(f"at step {i} of {steps} (shift {shift}) the sample differs from "
                             f"FlowMatchEulerDiscreteScheduler.step by {(got - expected).abs().max():.3g}.")
    return "equal to FlowMatchEulerDiscreteScheduler.step."


# --------------------------------------------------------------------------- 21.3

@exercise("21.3", "the shifted timestep")
def check_shifted_time(shifted_time):
    from sdlearn.flow import shift_flow_time

    for shift in (3.0, 0.5, 1.0):
        for t in (0.0, 0.1, 0.5, 0.9, 1.0):
            expected = shift_flow_time(torch.tensor(t, dtype=torch.float64), shift).item()
            got = as_number(shifted_time(t, shift), "the shifted time")
            wrong = {
                "that is shift * t, which runs past 1: divide by 1 + (shift - 1) t so that 1 stays 1.": shift * t,
                "that is t ** shift: SD3's shift is shift * t / (1 + (shift - 1) * t).": t ** shift,
                "that is t / (shift - (shift - 1) t), the shift by 1 / shift: it moves the steps the other way.":
                    t / (shift - (shift - 1) * t) if shift - (shift - 1) * t else None,
            }
            for message, value in wrong.items():
                if value is not None and abs(value - expected) > 1e-6 and abs(got - value) <= 1e-6:
                    raise Failed(message)
            if abs(got - expected) > 1e-6:
                raise Failed(f"shifted_time({t}, {shift}) should be {expected:.6g}, got {got:.6g}.")
    return "equal to sdlearn.flow.shift_flow_time: 0 and 1 stay, shift > 1 moves the middle towards noise."

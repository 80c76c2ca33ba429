"""Lesson 21's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check

# 21.1: the flow-matching loss


def _loss(path="straight", target="velocity", scale=1000.0, detach=False, item=False):
    def flow_matching_loss(model, x0, t, noise):
        t4 = t.view(-1, 1, 1, 1)
        if path == "straight":
            x_t = (1 - t4) * x0 + t4 * noise
        elif path == "reversed":
            x_t = t4 * x0 + (1 - t4) * noise
        else:
            x_t = (1 - t4).sqrt() * x0 + t4.sqrt() * noise
        wanted = {"velocity": noise - x0, "reversed": x0 - noise, "noise": noise, "x0": x0}[target]
        loss = F.mse_loss(model(x_t, t * scale), wanted)
        if item:
            return loss.item()
        return loss.detach() if detach else loss
    return flow_matching_loss


def loss_with_sdlearn_helpers(model, x0, t, noise):
    from sdlearn.flow import flow_interpolate
    return ((model(flow_interpolate(x0, noise, t), 1000 * t) - (noise - x0)) ** 2).mean()


@pytest.mark.parametrize("answer", [_loss(), loss_with_sdlearn_helpers])
def test_21_1_accepts_the_loss(answer):
    assert check("21.1", answer).passed


@pytest.mark.parametrize("answer, message", [
    (_loss(target="noise"), "the target is the noise"),
    (_loss(target="x0"), "the target is the image"),
    (_loss(target="reversed"), "points the wrong way"),
    (_loss(path="reversed"), "the path runs backwards"),
    (_loss(path="vp"), "variance-preserving"),
    (_loss(scale=1.0), "t * 1000"),
    (_loss(detach=True), "not connected"),
    (_loss(item=True), "one number in a tensor"),
])
def test_21_1_names_the_mistake(answer, message):
    result = check("21.1", answer)
    assert not result.passed and message in result.message


# 21.2: one Euler step in flow time


def flow_euler_step(x, v, t, t_next):
    return x + (t_next - t) * v


@pytest.mark.parametrize("answer, message", [
    (lambda x, v, t, t_next: x + (t - t_next) * v, "wrong way"),
    (lambda x, v, t, t_next: x - v, "not scaled by the time difference"),
    (lambda x, v, t, t_next: x - t * v, "predicted image"),
    (lambda x, v, t, t_next: (x + (t_next - t) * v)[0], "should have shape"),
])
def test_21_2_names_the_mistake(answer, message):
    result = check("21.2", answer)
    assert not result.passed and message in result.message


def test_21_2_accepts_the_step():
    assert check("21.2", flow_euler_step).passed


# 21.3: the shifted timestep


def shifted_time(t, shift):
    return shift * t / (1 + (shift - 1) * t)


def shifted_time_torch(t, shift):
    t = torch.tensor(t, dtype=torch.float64)
    return 1 / (1 + (1 / t - 1) / shift) if t > 0 else t * 0


@pytest.mark.parametrize("answer", [shifted_time, shifted_time_torch])
def test_21_3_accepts_the_formula(answer):
    assert check("21.3", answer).passed


@pytest.mark.parametrize("answer, message", [
    (lambda t, shift: shift * t, "runs past 1"),
    (lambda t, shift: t ** shift, "t ** shift"),
    (lambda t, shift: t / (shift - (shift - 1) * t), "other way"),
    (lambda t, shift: [t], "one number"),
])
def test_21_3_names_the_mistake(answer, message):
    result = check("21.3", answer)
    assert not result.passed and message in result.message

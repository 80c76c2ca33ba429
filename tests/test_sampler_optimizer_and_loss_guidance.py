"""`sample_with_optimizer` (Euler as an optimizer step) and `sample_loss_guided` (guidance with any loss)."""

from functools import partial

import pytest
import torch

from sdlearn import optim
from sdlearn.guidance import loss_guided_estimate, sample_loss_guided
from sdlearn.optim import sample_with_optimizer
from sdlearn.samplers import sample_euler
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas, make_schedule

from test_samplers import MODEL

ALPHAS_CUMPROD = alphas_cumprod_from_betas(make_betas("linear", 1000))


def _start(schedule, seed=0):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * schedule.init_noise_sigma


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_sampler_driven_by_plain_sgd_is_euler(prediction_type):
    schedule = make_schedule(ALPHAS_CUMPROD, 12, timestep_spacing="leading")
    x = _start(schedule)
    euler = sample_euler(MODEL, x, schedule, prediction_type=prediction_type)
    ours = sample_with_optimizer(MODEL, x, schedule, optim.SGD, prediction_type=prediction_type)
    torch.testing.assert_close(ours, euler, rtol=1e-6, atol=1e-5)          # float32 rounding of one fused add


def test_momentum_changes_the_path_and_its_first_step_is_eulers():
    schedule = make_schedule(ALPHAS_CUMPROD, 12, timestep_spacing="leading")
    x = _start(schedule)
    euler_steps, momentum_steps = [], []
    sample_with_optimizer(MODEL, x, schedule, optim.SGD, callback=euler_steps.append)
    sample_with_optimizer(MODEL, x, schedule, partial(optim.SGD, momentum=0.5, dampening=0.5),
                          callback=momentum_steps.append)
    torch.testing.assert_close(momentum_steps[0].sample, euler_steps[0].sample, rtol=0, atol=1e-5)
    assert (momentum_steps[-1].sample - euler_steps[-1].sample).abs().max() > 1e-2
    # each callback holds a snapshot, not the tensor the optimizer keeps changing
    assert not torch.equal(euler_steps[0].sample, euler_steps[-1].sample)


def test_the_sampler_leaves_the_starting_noise_alone():
    schedule = make_schedule(ALPHAS_CUMPROD, 5)
    x = _start(schedule)
    kept = x.clone()
    sample_with_optimizer(MODEL, x, schedule, optim.Adam)
    assert torch.equal(x, kept) and not x.requires_grad


def _brightness_loss(x0):
    return (x0.mean(dim=(1, 2, 3)) - 0.8).pow(2).sum()


def test_loss_guidance_at_scale_zero_is_euler():
    schedule = make_schedule(ALPHAS_CUMPROD, 10)
    x = _start(schedule)
    guided = sample_loss_guided(MODEL, x, schedule, _brightness_loss, guidance_scale=0.0)
    torch.testing.assert_close(guided, sample_euler(MODEL, x, schedule), rtol=0, atol=1e-6)


def test_loss_guidance_lowers_the_loss_and_more_with_a_larger_scale():
    schedule = make_schedule(ALPHAS_CUMPROD, 10)
    x = _start(schedule)
    losses = [_brightness_loss(sample_loss_guided(MODEL, x, schedule, _brightness_loss, guidance_scale=scale)).item()
              for scale in (0.0, 20.0, 100.0)]
    assert losses[0] > losses[1] > losses[2]


def test_guide_every_skips_the_steps_in_between():
    schedule = make_schedule(ALPHAS_CUMPROD, 6)
    x = _start(schedule)
    calls = []

    def counting_loss(x0):
        calls.append(1)
        return _brightness_loss(x0)

    sample_loss_guided(MODEL, x, schedule, counting_loss, guidance_scale=1.0, guide_every=2)
    assert len(calls) == 3                                       # steps 0, 2, 4


def test_one_push_is_the_documented_formula():
    denoised = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor(2.0)

    def loss_fn(x0):
        return 0.5 * (x0 - target).pow(2).sum()                   # gradient x0 - target

    pushed = loss_guided_estimate(denoised, sigma, loss_fn, 0.3)
    torch.testing.assert_close(pushed, denoised - 0.3 * 0.8 * (denoised - target))
    assert not pushed.requires_grad


@pytest.mark.parametrize("loss_fn, message", [
    (lambda x0: x0.mean(dim=(1, 2, 3)), "must return one number"),
    (lambda x0: (x0.mean() * float("nan")), "must be finite"),
    (lambda x0: torch.tensor(1.0), "does not depend on the image"),
    (lambda x0: 1.0, "must return one number"),
])
def test_a_bad_guidance_loss_gets_a_clear_error(loss_fn, message):
    schedule = make_schedule(ALPHAS_CUMPROD, 4)
    with pytest.raises(ValueError, match=message):
        sample_loss_guided(MODEL, _start(schedule), schedule, loss_fn, guidance_scale=1.0)


def test_bad_guidance_settings_are_refused():
    schedule = make_schedule(ALPHAS_CUMPROD, 4)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        sample_loss_guided(MODEL, _start(schedule), schedule, _brightness_loss, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="guide_every"):
        sample_loss_guided(MODEL, _start(schedule), schedule, _brightness_loss, guidance_scale=1.0, guide_every=0)

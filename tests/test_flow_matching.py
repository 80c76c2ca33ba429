"""Flow matching: the straight path, the loss, the shifted schedule and the Euler sampler against
diffusers' FlowMatchEulerDiscreteScheduler (same model, same start; tolerance 1e-5 at every step)."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sdlearn.flow import (flow_interpolate, flow_schedule_from_config, make_flow_schedule, sample_flow_euler,
                          shift_flow_time)
from sdlearn.losses import flow_matching_loss
from sdlearn.samplers import sample_euler
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas, make_schedule

from test_samplers import MODEL

TOL = 1e-5


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
@pytest.mark.parametrize("steps", [1, 2, 4, 25])
def test_schedule_matches_diffusers(shift, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    ours = make_flow_schedule(steps, shift=shift)
    torch.testing.assert_close(ours.sigmas, scheduler.sigmas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.timesteps, scheduler.timesteps, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_euler_trajectory_matches_diffusers(shift, steps):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    theirs, reference = x.clone(), []
    for t in scheduler.timesteps:
        theirs = scheduler.step(MODEL(theirs, t.expand(2)), t, theirs).prev_sample
        reference.append(theirs)
    ours = []
    sample_flow_euler(MODEL, x.clone(), make_flow_schedule(steps, shift=shift),
                      callback=lambda step: ours.append(step.sample))
    assert len(ours) == len(reference) == steps
    for a, b in zip(ours, reference):
        assert (a - b).abs().max().item() <= TOL


def test_config_read_like_from_config():
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(8)
    torch.testing.assert_close(flow_schedule_from_config(config, 8).sigmas, scheduler.sigmas)


def test_the_straight_path_and_its_velocity():
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = flow_interpolate(x0, noise, t)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], noise[2])
    torch.testing.assert_close(x_t[1], 0.75 * x0[1] + 0.25 * noise[1])
    # a model that knows the velocity exactly carries the noise to the image in a single Euler step
    exact = lambda x, timestep: noise - x0
    one_step = sample_flow_euler(exact, noise.clone(), make_flow_schedule(1))
    torch.testing.assert_close(one_step, x0, rtol=0, atol=1e-5)


def test_the_loss_is_zero_for_the_exact_velocity_and_positive_otherwise():
    x0 = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = {}

    def oracle(x_t, timestep):
        # recover the noise from x_t and t: noise = (x_t - (1 - t) x0) / t
        t = (timestep / 1000).view(-1, 1, 1, 1)
        seen["t"] = timestep
        return (x_t - (1 - t) * x0) / t - x0

    loss = flow_matching_loss(oracle, x0, torch.Generator().manual_seed(5))
    assert loss.item() < 1e-8
    assert ((seen["t"] > 0) & (seen["t"] < 1000)).all()
    zero = flow_matching_loss(lambda x_t, t: torch.zeros_like(x_t), x0, torch.Generator().manual_seed(5))
    assert zero.item() > 0.5


def test_shift_moves_steps_towards_noise_and_one_changes_nothing():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_flow_time(t, 1.0), t)
    assert (shift_flow_time(t, 3.0)[1:-1] > t[1:-1]).all()
    assert shift_flow_time(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)


@pytest.mark.parametrize("t", [torch.tensor([-0.1, 0.5]), torch.tensor([0.5, 1.2])])
def test_a_flow_time_outside_0_1_is_refused(t):
    with pytest.raises(ValueError, match=r"runs from 0 \(clean\) to 1"):
        flow_interpolate(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), t)


@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_a_shift_that_is_not_positive_is_refused(shift):
    with pytest.raises(ValueError, match="shift must be > 0"):
        make_flow_schedule(4, shift=shift)
    with pytest.raises(ValueError, match="shift must be > 0"):
        shift_flow_time(torch.tensor(0.5), shift)


def test_zero_steps_are_refused():
    with pytest.raises(ValueError, match="num_inference_steps must be a whole number >= 1"):
        make_flow_schedule(0)


def test_a_scheduler_config_of_the_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="not a FlowMatchEulerDiscreteScheduler one"):
        flow_schedule_from_config({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}, 10)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        flow_schedule_from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, 10)


def test_the_flow_sampler_refuses_a_ddpm_schedule_and_the_ddpm_samplers_a_flow_one():
    ddpm_schedule = make_schedule(alphas_cumprod_from_betas(make_betas("linear", 1000)), 10)
    with pytest.raises(TypeError, match="needs a FlowSchedule"):
        sample_flow_euler(MODEL, torch.randn(1, 3, 8, 8), ddpm_schedule)
    with pytest.raises(TypeError, match="make_schedule"):
        sample_euler(MODEL, torch.randn(1, 3, 8, 8), make_flow_schedule(10))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("sigmas", [[1.0], [1.0, 0.5], [1.0, 0.75, 0.5, 0.25], [0.9, 0.3]])
def test_chosen_times_match_set_timesteps_with_sigmas(shift, sigmas):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=sigmas)
    ours = make_flow_schedule(sigmas=sigmas, shift=shift)
    assert ours.num_inference_steps == len(sigmas)
    torch.testing.assert_close(ours.sigmas, scheduler.sigmas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.timesteps, scheduler.timesteps, rtol=0, atol=1e-4)


def test_two_even_steps_meet_halfway_where_the_default_two_do_not():
    assert make_flow_schedule(sigmas=[1.0, 0.5]).sigmas.tolist() == [1.0, 0.5, 0.0]
    assert make_flow_schedule(2).sigmas[1].item() == pytest.approx(0.001, abs=1e-6)   # diffusers' even spacing


@pytest.mark.parametrize("sigmas, message", [([], "one time per step"), ([0.5, 0.9], "decreasing"),
                                             ([1.2, 0.5], r"in \(0, 1\]"), ([1.0, 0.0], r"in \(0, 1\]"),
                                             ([1.0, float("nan")], "decreasing")])
def test_chosen_times_that_are_not_a_schedule_are_refused(sigmas, message):
    with pytest.raises(ValueError, match=message):
        make_flow_schedule(sigmas=sigmas)


def test_chosen_times_must_agree_with_the_number_of_steps():
    with pytest.raises(ValueError, match=r"one time per step \(3\)"):
        make_flow_schedule(3, sigmas=[1.0, 0.5])


def test_given_noise_is_used_as_each_images_pair_and_must_match_their_shape():
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = flow_matching_loss(MODEL, x0, torch.Generator().manual_seed(2), time_sampling="uniform", noise=z)
    t = torch.rand(2, generator=torch.Generator().manual_seed(2))          # the times are drawn first, as before
    by_hand = ((MODEL(flow_interpolate(x0, z, t), t * 1000) - (z - x0)) ** 2).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    with pytest.raises(ValueError, match="one noise per image"):
        flow_matching_loss(MODEL, x0, torch.Generator().manual_seed(2), noise=z[:1])

"""Checks for the exercises of lesson 15, text to image."""

from __future__ import annotations

from functools import partial

import torch

from sdlearn.data import fashion_caption
from sdlearn.exercises import Failed, as_tensor, exercise, name_the_mistake, same_tensor
from sdlearn.pipelines import scheduler_config
from sdlearn.text_to_image import text_to_image


_close = partial(same_tensor, rtol=1e-4, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, rtol=1e-4, atol=1e-5)


# The schedulers of the lesson, by the names its tables use.
SCHEDULER_CLASSES = {
    "DDIM": "DDIMScheduler",
    "Euler": "EulerDiscreteScheduler",
    "Euler ancestral": "EulerAncestralDiscreteScheduler",
    "LMS": "LMSDiscreteScheduler",
    "DPM-Solver++ 2M": "DPMSolverMultistepScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "Heun": "HeunDiscreteScheduler",
}
BUDGET_PROMPTS = [fashion_caption(label) for label in (0, 3, 6, 7)]    # t-shirt, dress, shirt, sneaker
MAX_CALLS = 8                # exercise 15.1: U-Net calls per image
MAX_DISTANCE = 0.02          # exercise 15.1: mean |pixel - reference pixel|
_measured = {}


def _scheduler(name: str):
    import diffusers

    cls = getattr(diffusers, SCHEDULER_CLASSES[name])
    return cls.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))


def _budget_images(name: str, steps: int) -> torch.Tensor:
    """The four budget prompts with one scheduler: guidance 7.5, seed 2, as the lesson's quality table."""
    from sdlearn.pipelines import load

    if "pipe" not in _measured:
        _measured["pipe"] = load("fashion_text2image")
    return text_to_image(_measured["pipe"], BUDGET_PROMPTS, guidance_scale=7.5, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(2), scheduler=_scheduler(name))


def budget_distance(name: str, steps: int) -> float:
    """Mean |pixel - reference pixel| of a scheduler's images, the reference being UniPC with 50 steps."""
    if "reference" not in _measured:
        _measured["reference"] = _budget_images("UniPC", 50)
    return (_budget_images(name, steps) - _measured["reference"]).abs().mean().item()


def unet_calls(name: str, steps: int) -> int:
    scheduler = _scheduler(name)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


# --------------------------------------------------------------------------- 15.1

@exercise("15.1", "a scheduler and a number of steps for a budget")
def check_scheduler_for_budget(scheduler_for_budget):
    answer = scheduler_for_budget()
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Failed("return two things, (scheduler name, number of steps), for example (\"DDIM\", 5).")
    name, steps = answer
    if name not in SCHEDULER_CLASSES:
        raise Failed(f"{name!r} is not one of the lesson's schedulers; use one of the names of SCHEDULERS: "
                     f"{', '.join(SCHEDULER_CLASSES)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise Failed(f"the number of steps is a positive whole number, got {steps!r}.")
    calls = unet_calls(name, steps)
    if calls > MAX_CALLS:
        extra = " Heun calls the U-Net twice per step (but the last)." if name == "Heun" else ""
        raise Failed(f"{name} with {steps} steps calls the U-Net {calls} times per image, over the budget of "
                     f"{MAX_CALLS}.{extra}")
    distance = budget_distance(name, steps)
    if distance > MAX_DISTANCE:
        if name == "Heun":
            raise Failed(f"{name} with {steps} steps is {distance:.3f} from the reference: Heun fails on this "
                         "schedule at every step count (its first step starts from sigma above 20,000).")
        if name == "Euler ancestral":
            raise Failed(f"{name} with {steps} steps is {distance:.4f} from the reference: it adds fresh noise at "
                         "every step and lands on another image, so more steps do not bring it closer.")
        raise Failed(f"{name} with {steps} steps is {distance:.4f} from the reference, more than {MAX_DISTANCE}: "
                     "within the budget, but not good enough. Measure other schedulers at the largest step "
                     "count the budget allows.")
    return (f"{name} with {steps} steps: {calls} U-Net calls per image, {distance:.4f} from the reference. A "
            "scheduler that converges faster buys quality at the same cost.")


# --------------------------------------------------------------------------- 15.2

def _rescaling_schedulers() -> list[str]:
    """The experiment: the schedulers whose scale_model_input changes the latents at some step."""
    g = torch.Generator().manual_seed(152)
    x = torch.randn((1, 4, 8, 8), generator=g)
    names = []
    for name in SCHEDULER_CLASSES:
        scheduler = _scheduler(name)
        scheduler.set_timesteps(10)
        if any(not torch.equal(scheduler.scale_model_input(x, t), x) for t in scheduler.timesteps):
            names.append(name)
    return names


@exercise("15.2", "which schedulers need scale_model_input")
def check_needs_scaling(needs_scaling):
    answer = needs_scaling()
    if isinstance(answer, str):
        raise Failed("return a list of scheduler names (even for a single one), not one string.")
    try:
        got = list(answer)
    except TypeError:
        raise Failed(f"return a list of scheduler names, not {type(answer).__name__}.") from None
    unknown = [name for name in got if name not in SCHEDULER_CLASSES]
    if unknown:
        raise Failed(f"{unknown} are not names of the lesson's schedulers: {', '.join(SCHEDULER_CLASSES)}.")
    expected = _rescaling_schedulers()
    extra = [name for name in got if name not in expected]
    missing = [name for name in expected if name not in got]
    if extra:
        raise Failed(f"{', '.join(extra)} keep the latents in the form of lesson 04, x_t = sqrt(abar) x0 + "
                     "sqrt(1 - abar) eps, whose variance is about 1 (init_noise_sigma 1.0); their scale_model_input "
                     "returns the latents unchanged, and leaving it out changes nothing.")
    if missing:
        raise Failed(f"you left out {', '.join(missing)}: these keep the latents in the noise-level form "
                     "x0 + sigma eps (init_noise_sigma above 20,000 here), and scale_model_input divides them by "
                     "sqrt(sigma^2 + 1) to give the U-Net the x_t it was trained on.")
    return ("the Euler family, whose latents are x0 + sigma eps: without scale_model_input the U-Net would see a "
            "first input with standard deviation near 20,000.")


# --------------------------------------------------------------------------- 15.3

def _ddim():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    scheduler.set_timesteps(10)
    return scheduler


@exercise("15.3", "the predicted x0 from two latents")
def check_x0_from_two_latents(x0_from_two_latents):
    scheduler = _ddim()
    g = torch.Generator().manual_seed(153)
    for index in (3, 9):                                   # a step in the middle, and the last one (to timestep 0)
        t = scheduler.timesteps[index]
        abar_t = scheduler.alphas_cumprod[int(t)]
        prev_t = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        abar_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        x_t = torch.randn((2, 4, 8, 8), generator=g)
        v = torch.randn((2, 4, 8, 8), generator=g)
        output = scheduler.step(v, t, x_t)
        x_prev, expected = output.prev_sample, output.pred_original_sample
        got = as_tensor(x0_from_two_latents(x_t.clone(), x_prev.clone(), abar_t.clone(), abar_prev.clone()),
                        "the predicted x0", expected.shape)
        c = ((1 - abar_prev) / (1 - abar_t)).sqrt()
        wrong = {
            "that is x_prev / sqrt(abar_prev), as if x_prev held no noise; a DDIM step puts back "
            "sqrt(1 - abar_prev) times the predicted noise, which you can write with x_t and x0.":
                x_prev / abar_prev.sqrt(),
            "that is x_t / sqrt(abar_t), the jump with the noise left in; use both latents.": x_t / abar_t.sqrt(),
            "the two noise levels are swapped: abar_t belongs to x_t, abar_prev to x_prev.":
                (x_prev - ((1 - abar_t) / (1 - abar_prev)).sqrt() * x_t)
                / (abar_t.sqrt() - ((1 - abar_t) / (1 - abar_prev)).sqrt() * abar_prev.sqrt()),
            "the square roots are missing: the latents are sqrt(abar) x0 + sqrt(1 - abar) eps.":
                (x_prev - (1 - abar_prev) / (1 - abar_t) * x_t) / (abar_prev - (1 - abar_prev) / (1 - abar_t) * abar_t),
            "the denominator: solving x_prev - c x_t = (sqrt(abar_prev) - c sqrt(abar_t)) x0 divides by the whole "
            "bracket.": (x_prev - c * x_t) / abar_prev.sqrt(),
        }
        _name_the_mistake(got, wrong, rtol=1e-3, atol=1e-4)
        if not _close(got, expected, rtol=1e-3, atol=1e-4):
            where = "the last step (to timestep 0)" if index == 9 else "a step in the middle"
            raise Failed(f"at {where} the result differs from DDIMScheduler's pred_original_sample. With "
                         "eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), the step is "
                         "x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps: solve it for x0.")
    return ("DDIMScheduler's pred_original_sample, from the latents alone: a deterministic DDIM step loses "
            "nothing, so a callback that sees only the latents can still show the predicted x0.")


def _euler():
    """A fresh Euler scheduler for the shipped model's schedule, set to 10 steps."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    scheduler.set_timesteps(10)
    return scheduler


# --------------------------------------------------------------------------- 15.4

@exercise("15.4", "the predicted x0 in the noise-level form")
def check_x0_from_v_sigma(x0_from_v_sigma):
    scheduler = _euler()
    g = torch.Generator().manual_seed(154)
    index = 4
    sigma = float(scheduler.sigmas[index])
    x = torch.randn((2, 4, 8, 8), generator=g) * (sigma**2 + 1) ** 0.5
    v = torch.randn((2, 4, 8, 8), generator=g)
    scheduler.set_begin_index(index)
    scheduler.is_scale_input_called = True       # x0 depends only on x, v and sigma; the input is not scaled here
    expected = scheduler.step(v, scheduler.timesteps[index], x).pred_original_sample
    got = as_tensor(x0_from_v_sigma(x.clone(), v.clone(), sigma), "the predicted x0", expected.shape)
    abar = 1 / (sigma**2 + 1)
    x_t = x * abar**0.5
    wrong = {
        "that is the jump for a noise-predicting model, x - sigma * eps, which is the same as "
        "(x_t - sqrt(1 - abar) eps) / sqrt(abar); our model predicts v: with x_t = x / sqrt(sigma^2 + 1), "
        "x0 = sqrt(abar) x_t - sqrt(1 - abar) v.": x - sigma * v,
        "you used x itself as x_t; the U-Net's input, and the x_t of the v formula, is x / sqrt(sigma^2 + 1).":
            abar**0.5 * x - (1 - abar) ** 0.5 * v,
        "the sign of the v term: x0 = sqrt(abar) x_t - sqrt(1 - abar) v.": abar**0.5 * x_t + (1 - abar) ** 0.5 * v,
        "that is x_t, the scaled input; combine it with v: sqrt(abar) x_t - sqrt(1 - abar) v.": x_t,
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the predicted x0 differs from EulerDiscreteScheduler's pred_original_sample; with "
                     "abar = 1 / (sigma^2 + 1) and x_t = x sqrt(abar), x0 = sqrt(abar) x_t - sqrt(1 - abar) v.")
    sigma = float(scheduler.sigmas[8])
    again = x0_from_v_sigma(x.clone(), v.clone(), torch.tensor(sigma))
    scheduler = _euler()
    scheduler.set_begin_index(8)
    scheduler.is_scale_input_called = True
    expected = scheduler.step(v, scheduler.timesteps[8], x).pred_original_sample
    if not _close(as_tensor(again, "the predicted x0", expected.shape), expected):
        raise Failed("right for one sigma, wrong for another (given as a tensor): use the sigma you are given.")
    return "EulerDiscreteScheduler's pred_original_sample for a v-predicting model."

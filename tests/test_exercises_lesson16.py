"""Lesson 16's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check

# 16.1: where image to image starts


def start_of_strength(timesteps, strength):
    steps = int(len(timesteps) * strength)
    return int(timesteps[len(timesteps) - steps]), steps


def from_the_end(timesteps, strength):
    steps = int(len(timesteps) * strength)
    return timesteps[-steps], steps                    # a tensor is fine, and so is counting from the end


def rounded(timesteps, strength):
    steps = round(len(timesteps) * strength)
    return int(timesteps[len(timesteps) - steps]), steps


def rounded_up(timesteps, strength):
    steps = math.ceil(len(timesteps) * strength)
    return int(timesteps[len(timesteps) - steps]), steps


def steps_skipped(timesteps, strength):
    steps = int(len(timesteps) * strength)
    return int(timesteps[len(timesteps) - steps]), len(timesteps) - steps


def sdedit_t0(timesteps, strength):
    return int(1000 * strength), int(len(timesteps) * strength)


def first_of_schedule(timesteps, strength):
    return int(timesteps[0]), int(len(timesteps) * strength)


def head_of_schedule(timesteps, strength):
    steps = int(len(timesteps) * strength)
    return int(timesteps[min(steps, len(timesteps) - 1)]), steps


def off_by_one(timesteps, strength):
    steps = int(len(timesteps) * strength)
    return int(timesteps[len(timesteps) - steps - 1]), steps


def one_number(timesteps, strength):
    return int(timesteps[len(timesteps) - int(len(timesteps) * strength)])


# 16.2: noising the encoded picture

def noised_latents(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def with_diffusers_add_noise(vae, images, alphas_cumprod, timestep, generator):
    from diffusers import DDIMScheduler

    from sdlearn.pipelines import scheduler_config

    with torch.no_grad():
        latents = vae.encode(2 * images - 1).latent_dist.sample(generator=generator)
    latents = latents * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    scheduler = DDIMScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    return scheduler.add_noise(latents, noise, torch.tensor([timestep]))


def noise_first(vae, images, alphas_cumprod, timestep, generator):
    noise = torch.randn((images.shape[0], 4, 8, 8), generator=generator)
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def posterior_mean(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def no_scaling_factor(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator)
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def zero_one_range(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def variances(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a * latents + (1 - a) * noise


def unsquared_noise(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a) * noise


def swapped_weights(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[timestep]
    return (1 - a).sqrt() * latents + a.sqrt() * noise


def noise_without_generator(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    a = alphas_cumprod[timestep]
    return a.sqrt() * latents + (1 - a).sqrt() * torch.randn_like(latents)


def fixed_timestep(vae, images, alphas_cumprod, timestep, generator):
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas_cumprod[599]
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def pixels_noised(vae, images, alphas_cumprod, timestep, generator):
    a = alphas_cumprod[timestep]
    return a.sqrt() * images + (1 - a).sqrt() * torch.randn(images.shape, generator=generator)


# 16.3: choosing the strength

def choose_strength(strengths, to_prompt_class, to_input_class, distance):
    best = None
    for s, switched, d in zip(strengths, to_prompt_class, distance):
        if switched >= 0.9 and (best is None or d < best[1]):
            best = (s, d)
    return None if best is None else best[0]


def choose_with_tensors(strengths, to_prompt_class, to_input_class, distance):
    switched, distance = torch.tensor(to_prompt_class), torch.tensor(distance)
    if not (switched >= 0.9).any():
        return None
    distance[switched < 0.9] = float("inf")
    return strengths[int(distance.argmin())]


def strictly_above(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] > 0.9]
    return strengths[min(ok, key=distance.__getitem__)] if ok else None


def left_the_input_class(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if 1 - to_input_class[k] >= 0.9]
    return strengths[min(ok, key=distance.__getitem__)] if ok else None


def smallest_that_switches(strengths, to_prompt_class, to_input_class, distance):
    for s, switched in zip(strengths, to_prompt_class):
        if switched >= 0.9:
            return s
    return None


def strongest(strengths, to_prompt_class, to_input_class, distance):
    return strengths[-1]


def most_switched(strengths, to_prompt_class, to_input_class, distance):
    return strengths[to_prompt_class.index(max(to_prompt_class))]


def closest_of_all(strengths, to_prompt_class, to_input_class, distance):
    return strengths[distance.index(min(distance))]


def returns_index(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    return min(ok, key=distance.__getitem__) if ok else None


def returns_distance(strengths, to_prompt_class, to_input_class, distance):
    ok = [distance[k] for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    return min(ok) if ok else None


def never_none(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    if not ok:
        return strengths[-1]
    return strengths[min(ok, key=distance.__getitem__)]


WRONG = [
    ("16.1", rounded, "it does not round to the nearest"),
    ("16.1", rounded_up, "not up"),
    ("16.1", steps_skipped, "the number of steps skipped"),
    ("16.1", sdedit_t0, "strength x 1000"),
    ("16.1", first_of_schedule, "the first timestep of the whole schedule"),
    ("16.1", head_of_schedule, "from the wrong end"),
    ("16.1", off_by_one, "off by one"),
    ("16.1", one_number, "return two numbers"),
    ("16.2", noise_first, "you drew the noise before sampling"),
    ("16.2", posterior_mean, "uses the mean of the encoder's Gaussian"),
    ("16.2", no_scaling_factor, "you forgot the scaling factor"),
    ("16.2", zero_one_range, "images * 2 - 1"),
    ("16.2", variances, "mixes with the variances"),
    ("16.2", unsquared_noise, "not (1 - abar)"),
    ("16.2", swapped_weights, "the wrong way round"),
    ("16.2", noise_without_generator, "with the generator you are given"),
    ("16.2", fixed_timestep, "use the timestep you are given"),
    ("16.2", pixels_noised, "encode it first"),
    ("16.3", strictly_above, "not > 0.9"),
    ("16.3", left_the_input_class, "a third class"),
    ("16.3", smallest_that_switches, "do not always grow with strength"),
    ("16.3", strongest, "the furthest from the input"),
    ("16.3", most_switched, "switches the most"),
    ("16.3", closest_of_all, "does not switch 90%"),
    ("16.3", returns_index, "not its position"),
    ("16.3", returns_distance, "not its distance"),
    ("16.3", never_none, "return None"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.parametrize("exercise_id, answer", [("16.1", start_of_strength), ("16.1", from_the_end),
                                                 ("16.2", noised_latents), ("16.2", with_diffusers_add_noise),
                                                 ("16.3", choose_strength), ("16.3", choose_with_tensors)])
def test_other_right_answers_pass(exercise_id, answer):
    """Right answers written differently from the lesson's solutions pass too."""
    verdict = check(exercise_id, answer)
    assert verdict.passed, repr(verdict)


def test_the_strength_tables_have_the_features_the_check_relies_on():
    """Each table of 16.3 has what it is there for: an exact 90%, a third class, a dip, no switch."""
    from sdlearn.exercises.lesson16 import _right, _tables

    tables = dict(_tables())
    exact, third, dip, none, ordinary = tables.values()
    assert 0.9 in exact["to_prompt_class"]
    assert any(1 - i >= 0.9 > p for p, i in zip(third["to_prompt_class"], third["to_input_class"]))
    assert any(b < a for a, b in zip(dip["distance"], dip["distance"][1:]))
    assert _right(none) is None and _right(ordinary) is not None
    for table in tables.values():
        for p, i in zip(table["to_prompt_class"], table["to_input_class"]):
            assert 0 <= p and 0 <= i and p + i <= 1 + 1e-12


def test_the_noising_check_tells_the_mistakes_apart():
    """Every wrong way of noising differs from the right one by more than the check's tolerance."""
    from sdlearn.exercises.lesson16 import _images, _noised, _vae
    from sdlearn.pipelines import scheduler_config
    from diffusers import DDIMScheduler

    vae = _vae()
    alphas_cumprod = DDIMScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction")).alphas_cumprod
    right = _noised(vae, _images(), alphas_cumprod, 599, 16)
    for mistake in [dict(order="noise first"), dict(encode="mode"), dict(scale=False), dict(to_range=False),
                    dict(mix="variance"), dict(mix="half"), dict(mix="swapped")]:
        wrong = _noised(vae, _images(), alphas_cumprod, 599, 16, **mistake)
        assert not torch.allclose(wrong, right, rtol=1e-3, atol=1e-3), mistake

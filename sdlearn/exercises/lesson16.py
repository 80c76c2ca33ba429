"""Checks for the exercises of lesson 16, image to image."""

from __future__ import annotations

import math
from functools import lru_cache, partial

import torch

from sdlearn import weights
from sdlearn.editing import encode_image, strength_timesteps
from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.pipelines import scheduler_config
from sdlearn.utils import randn_tensor

_close = partial(same_tensor, rtol=1e-4, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, rtol=1e-4, atol=1e-5)


def _ddim(config: dict, num_inference_steps: int):
    """A fresh DDIMScheduler from a configuration, set to `num_inference_steps`."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


# Stable Diffusion 1.5's schedule, as in lesson 15 (its PNDM scheduler's settings, read by DDIM)
_SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
         "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}


# --------------------------------------------------------------------------- 16.1

def _as_int(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise Failed(f"{what} should be a whole number, got {value!r}.")
    return int(value)


def _start(timesteps: torch.Tensor, strength: float, count=int, head: int = 0) -> tuple[int, int]:
    """(first timestep, steps) for a way of counting the steps (`count`), with an offset into the schedule."""
    n = len(timesteps)
    steps = min(count(n * strength), n)
    return int(timesteps[n - steps + head]) if 0 <= n - steps + head < n else None, steps


@exercise("16.1", "where image to image starts")
def check_start_of_strength(start_of_strength):
    ours = ("our model, 10 steps", _ddim(scheduler_config("squaredcos_cap_v2", "v_prediction"), 10).timesteps)
    cases = [
        (*ours, 0.52),      # 5.2 steps: int 5, round 5, ceil 6
        (*ours, 0.58),      # 5.8 steps: int 5, round 6
        (*ours, 0.3),
        ("our model, 25 steps", _ddim(scheduler_config("squaredcos_cap_v2", "v_prediction"), 25).timesteps, 0.45),
        ("Stable Diffusion 1.5, 10 steps", _ddim(_SD15, 10).timesteps, 0.75),
        (*ours, 1.0),
    ]
    for name, timesteps, strength in cases:
        n = len(timesteps)
        got = start_of_strength(timesteps.clone(), strength)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Failed(f"return two numbers, (first timestep, number of steps), got {got!r}.")
        got = (_as_int(got[0], "the first timestep"), _as_int(got[1], "the number of steps"))
        first, steps = _start(timesteps, strength)
        if got == (first, steps):
            continue
        where = f"for {name} ({timesteps.tolist()}) and strength {strength:g}"
        if got[1] == round(n * strength) != steps:
            raise Failed(f"{where} you ran {got[1]} steps: diffusers truncates, int({n} * {strength:g}) = {steps}; "
                         f"it does not round to the nearest.")
        if got[1] == math.ceil(n * strength) != steps:
            raise Failed(f"{where} you ran {got[1]} steps: diffusers rounds the number of steps down, "
                         f"int({n} * {strength:g}) = {steps}, not up.")
        if got[1] == n - steps != steps:
            raise Failed(f"{where}: {n - steps} is the number of steps skipped; strength is the share that runs, "
                         f"int({n} * {strength:g}) = {steps}.")
        if got[1] != steps:
            raise Failed(f"{where} the number of steps is int(len(timesteps) * strength) = {steps}, got {got[1]}.")
        if got[0] in (int(1000 * strength), int(1000 * strength) - 1) and got[0] != first:
            raise Failed(f"{where}: {got[0]} is strength x 1000, SDEdit's t0 = strength * T. diffusers picks a "
                         f"timestep of the schedule instead: the steps that run are the last {steps} of the "
                         f"{n} timesteps, and the first of them is {first}.")
        if got[0] == int(timesteps[0]) != first:
            raise Failed(f"{where}: {got[0]} is the first timestep of the whole schedule; image to image skips the "
                         f"first {n - steps} and starts at timesteps[{n - steps}].")
        if 0 <= steps < n and got[0] == int(timesteps[steps]) != first:
            raise Failed(f"{where}: you counted the steps from the wrong end. The last {steps} timesteps run, so "
                         f"the first is timesteps[len(timesteps) - steps], not timesteps[steps].")
        for offset in (-1, 1):
            other, _ = _start(timesteps, strength, head=offset)
            if got[0] == other:
                raise Failed(f"{where}: off by one. The last {steps} timesteps run; the first of them is "
                             f"timesteps[{n} - {steps}] = {first}, you gave timesteps[{n - steps + offset}].")
        raise Failed(f"{where} the first timestep is timesteps[len(timesteps) - steps] = {first}, got {got[0]}.")
    return "the timesteps diffusers' get_timesteps keeps."


# --------------------------------------------------------------------------- 16.2

@lru_cache(maxsize=1)
def _vae():
    return weights.load("vae_fashion")


def _images() -> torch.Tensor:
    """Three pictures in [0, 1] (the same every time): flat shapes with a little texture."""
    g = torch.Generator().manual_seed(162)
    images = 0.1 * torch.rand((3, 1, 32, 32), generator=g)
    images[0, :, 6:26, 10:16] += 0.8
    images[1, :, 10:26, 6:26] += 0.6
    images[2, :, 4:28, 8:24] += 0.7
    return images.clamp(0, 1)


def _noised(vae, images, alphas_cumprod, timestep, seed, *, order="latents first", encode="sample", scale=True,
            to_range=True, mix="sqrt"):
    """The noised latents written out, with switches that reproduce typical mistakes."""
    g = torch.Generator().manual_seed(seed)
    x = images * 2 - 1 if to_range else images

    def encoded():
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
        z = posterior.sample(g) if encode == "sample" else posterior.mode()
        return z * vae.config.scaling_factor if scale else z

    if order == "latents first":
        latents = encoded()
        noise = randn_tensor(latents.shape, g)
    else:
        noise = randn_tensor((len(images), vae.config.latent_channels, 8, 8), g)
        latents = encoded()
    a = alphas_cumprod[timestep]
    if mix == "sqrt":
        return a.sqrt() * latents + (1 - a).sqrt() * noise
    if mix == "variance":
        return a * latents + (1 - a) * noise
    if mix == "half":
        return a.sqrt() * latents + (1 - a) * noise
    if mix == "swapped":
        return (1 - a).sqrt() * latents + a.sqrt() * noise
    raise ValueError(mix)


@exercise("16.2", "noising the encoded picture")
def check_noised_latents(noised_latents):
    vae = _vae()
    images = _images()
    scheduler = _ddim(scheduler_config("squaredcos_cap_v2", "v_prediction"), 10)
    alphas_cumprod = scheduler.alphas_cumprod.clone()
    timestep = int(strength_timesteps(scheduler, 10, 0.6)[0])            # 599
    got = noised_latents(vae, images.clone(), alphas_cumprod.clone(), timestep, torch.Generator().manual_seed(16))
    # the reference: what StableDiffusionImg2ImgPipeline.prepare_latents does
    g = torch.Generator().manual_seed(16)
    with torch.no_grad():
        latents = encode_image(vae, images, g)
    expected = scheduler.add_noise(latents, randn_tensor(latents.shape, g), torch.tensor([timestep]))
    if isinstance(got, torch.Tensor) and got.shape != expected.shape and got.shape == images.shape:
        raise Failed("that has the picture's shape: encode it first, vae.encode(...).latent_dist, and noise the "
                     "latents (B, 4, 8, 8).")
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise Failed(f"return the noised latents as a tensor of shape {tuple(expected.shape)}, got {shape}.")
    got = got.detach().float()
    noised = partial(_noised, vae, images, alphas_cumprod, timestep, 16)
    wrong = {
        "you drew the noise before sampling the encoder's latents; diffusers samples the latents first "
        "(latent_dist.sample(generator)), then draws the noise from the same generator.":
            noised(order="noise first"),
        "that uses the mean of the encoder's Gaussian (mode()); diffusers draws a sample of it with the "
        "generator, latent_dist.sample(generator), before drawing the noise.": noised(encode="mode"),
        "you forgot the scaling factor: the U-Net works with the encoder's latents times "
        "vae.config.scaling_factor.": noised(scale=False),
        "the autoencoder takes pictures in [-1, 1]: map the [0, 1] pictures with images * 2 - 1 before encoding.":
            noised(to_range=False),
        "that mixes with the variances, abar x0 + (1 - abar) noise; the forward process mixes with their square "
        "roots, sqrt(abar) x0 + sqrt(1 - abar) noise, so that the variance stays 1.": noised(mix="variance"),
        "the noise's weight is sqrt(1 - abar), not (1 - abar).": noised(mix="half"),
        "the weights are the wrong way round: the signal gets sqrt(abar), the noise sqrt(1 - abar).":
            noised(mix="swapped"),
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        again = noised_latents(vae, images.clone(), alphas_cumprod.clone(), timestep, torch.Generator().manual_seed(16))
        if isinstance(again, torch.Tensor) and not torch.equal(again.detach().float(), got):
            raise Failed("two calls with generators of the same seed gave different latents: draw the encoder's "
                         "sample and the noise with the generator you are given.")
        raise Failed("the latents differ from the pipeline's: encode (images * 2 - 1), latent_dist.sample(generator) "
                     "times the scaling factor; then noise = torch.randn(latents.shape, generator=generator); then "
                     "sqrt(abar_t) latents + sqrt(1 - abar_t) noise.")
    timestep = int(strength_timesteps(scheduler, 10, 0.3)[0])
    got = noised_latents(vae, images.clone(), alphas_cumprod.clone(), timestep, torch.Generator().manual_seed(3))
    if not _close(got, _noised(vae, images, alphas_cumprod, timestep, 3)):
        raise Failed(f"right at timestep 599, wrong at timestep {timestep}: use the timestep you are given.")
    return "the latents StableDiffusionImg2ImgPipeline starts from, for the same generator."


# --------------------------------------------------------------------------- 16.3

STRENGTHS = [0.1 * k for k in range(1, 11)]
THRESHOLD = 0.9


def _table(seed: int, *, centre: float, n: int = 50, other: float = 0.0, exact: bool = False,
           bump: int | None = None) -> dict:
    """A measured-looking table: the share that switched rises with strength, the distance grows.

    centre   the strength at which about half the pictures switched
    other    the largest share that ends up in a third class (neither the input's nor the prompt's)
    exact    make one strength switch exactly 90% (45 of 50)
    bump     make the distance at this index smaller than at the one before (measurement noise)
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(STRENGTHS, dtype=torch.float64)
    switched = torch.sigmoid((s - centre) / 0.07) * (1 - other)
    switched = (switched * n + 0.6 * torch.rand(10, generator=g, dtype=torch.float64) - 0.3).round().clamp(0, n) / n
    switched = switched + 0.0                                    # no negative zeros
    if exact:
        first = int((switched >= THRESHOLD).nonzero()[0])
        switched[first] = 45 / n
        switched[first + 1:] = switched[first + 1:].clamp_min(46 / n)
    left = torch.sigmoid((s - centre + 0.12) / 0.07)            # the input's class empties a little earlier
    to_input = torch.minimum(((1 - left) * n).round() / n, 1 - switched)
    distance = 0.03 + 0.25 * s**1.5 + 0.004 * torch.rand(10, generator=g, dtype=torch.float64)
    if bump is not None:
        distance[bump] = distance[bump - 1] - 0.006
    return {"strengths": [round(x, 1) for x in STRENGTHS], "to_prompt_class": switched.tolist(),
            "to_input_class": to_input.tolist(), "distance": distance.tolist()}


def _tables() -> list[tuple[str, dict]]:
    """The check's tables, each with a feature that tells one mistake apart."""
    return [
        ("the table where one strength switches exactly 90%", _table(1, centre=0.42, exact=True)),
        ("the table where the input's class empties before the prompt's fills (a third class takes some)",
         _table(2, centre=0.5, other=0.08)),
        ("the table where the distance dips at strength 0.8 (measurements are noisy)",
         _table(3, centre=0.53, bump=7)),
        ("the table where no strength switches 90%", _table(4, centre=0.6, other=0.2)),
        ("an ordinary table", _table(5, centre=0.35)),
    ]


def _closest(indices: list[int], distance: list[float]) -> int | None:
    """Of the given positions, the one with the smallest distance (None for none)."""
    best = None
    for k in indices:
        if best is None or distance[k] < distance[best]:
            best = k
    return best


def _right(table: dict) -> float | None:
    ok = [k for k, f in enumerate(table["to_prompt_class"]) if f >= THRESHOLD]
    best = _closest(ok, table["distance"])
    return None if best is None else table["strengths"][best]


def _mistakes(table: dict) -> list[tuple[str, float | None]]:
    """(message, the answer a typical mistake gives) for one table."""
    s, p, i, d = table["strengths"], table["to_prompt_class"], table["to_input_class"], table["distance"]
    everything = list(range(len(s)))
    ok = [k for k in everything if p[k] >= THRESHOLD]
    strict = [k for k in everything if p[k] > THRESHOLD]
    left = [k for k in everything if 1 - i[k] >= THRESHOLD]
    most = max(p)

    def strength(k):
        return None if k is None else s[k]

    out = [
        ("90% or more qualifies: use >= 0.9, not > 0.9.", strength(_closest(strict, d))),
        ("that counts the pictures that left the input's class (1 - to_input_class); a switch means the "
         "classifier sees the prompt's class, to_prompt_class >= 0.9. Some pictures become a third class.",
         strength(_closest(left, d))),
        ("you took the smallest strength that switches 90%, but measured distances do not always grow with "
         "strength: among the strengths that switch, take the one with the smallest distance.",
         strength(min(ok)) if ok else None),
        ("that is the strongest of the strengths that switch, the furthest from the input; take the one with "
         "the smallest distance.", strength(max(ok)) if ok else None),
        ("that strength switches the most, but the task is the one closest to the input among those that "
         "switch at least 90%.", strength(min(k for k in everything if p[k] == most))),
        ("that is the closest strength of all, but it does not switch 90% of the pictures: keep only the "
         "strengths with to_prompt_class >= 0.9 first.", strength(_closest(everything, d))),
        ("return the strength itself, not its position in the list.", _closest(ok, d)),
    ]
    if ok:
        out.append(("return the strength, not its distance.", d[_closest(ok, d)]))
    return out


@exercise("16.3", "choosing the strength")
def check_choose_strength(choose_strength):
    for name, table in _tables():
        got = choose_strength(list(table["strengths"]), list(table["to_prompt_class"]),
                              list(table["to_input_class"]), list(table["distance"]))
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        right = _right(table)
        if right is None:
            if got is None:
                continue
            raise Failed(f"for {name}, no strength switches 90% of the pictures (the most is "
                         f"{max(table['to_prompt_class']):.0%}): return None rather than the best of the "
                         f"rest.")
        if got is None:
            raise Failed(f"for {name} you returned None, but strength {right:g} switches "
                         f"{table['to_prompt_class'][table['strengths'].index(right)]:.0%}.")
        if hasattr(got, "item") and not isinstance(got, bool):       # a NumPy or PyTorch scalar
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise Failed(f"return the strength as a number (or None), got {type(got).__name__}.")
        if abs(got - right) < 1e-9:
            continue
        for message, answer in _mistakes(table):
            if answer is not None and abs(got - answer) < 1e-9 and abs(answer - right) > 1e-9:
                raise Failed(f"for {name}: {message}")
        raise Failed(f"for {name} the answer is strength {right:g}: of the strengths with to_prompt_class >= 0.9, "
                     f"the one with the smallest distance; you gave {got!r}.")
    return "the least change that still does what the prompt asks, nine times in ten."

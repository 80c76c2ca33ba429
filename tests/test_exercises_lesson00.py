"""Lesson 00's checks: typical wrong answers fail with a message that names the mistake."""

import re

import pytest
import torch

from sdlearn.exercises import check


def seeded_images(pipe, prompt, n, seed, steps):
    return pipe([prompt] * n, num_inference_steps=steps, output_type="pt",
                generator=torch.Generator(pipe.device).manual_seed(seed)).images


def pil_images(pipe, prompt, n, seed, steps):
    return pipe([prompt] * n, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images


def no_generator(pipe, prompt, n, seed, steps):
    return pipe([prompt] * n, num_inference_steps=steps, output_type="pt").images


def ignores_seed(pipe, prompt, n, seed, steps):
    return seeded_images(pipe, prompt, n, 0, steps)


def one_generator_per_image(pipe, prompt, n, seed, steps):
    generators = [torch.Generator().manual_seed(seed) for _ in range(n)]
    return pipe([prompt] * n, num_inference_steps=steps, output_type="pt", generator=generators).images


def ignores_steps(pipe, prompt, n, seed, steps):
    return seeded_images(pipe, prompt, n, seed, 4)


def one_prompt(pipe, prompt, n, seed, steps):
    return seeded_images(pipe, prompt, 1, seed, steps)


@pytest.mark.parametrize("answer, message", [
    (pil_images, "output_type"),
    (no_generator, "same seed gave different images"),
    (ignores_seed, "seeds 5 and 6 gave the same images"),
    (one_generator_per_image, "both images are the same"),
    (ignores_steps, "steps you were given"),
    (one_prompt, r"\(2, 1, 32, 32\)"),
])
def test_seeded_images_mistakes(answer, message):
    result = check("00.1", answer)
    assert not result.passed
    assert re.search(message, result.message)


def test_seeded_images_solution_passes():
    assert check("00.1", seeded_images).passed


def parameters_per_part(pipe):
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "text_encoder", "vae")}


def tensor_counts(pipe):
    return {name: len(list(getattr(pipe, name).parameters())) for name in ("unet", "text_encoder", "vae")}


def without_vae(pipe):
    return {k: v for k, v in parameters_per_part(pipe).items() if k != "vae"}


@pytest.mark.parametrize("answer, message", [
    (tensor_counts, "number of parameter tensors"),
    (without_vae, "no entry for vae"),
    (lambda pipe: [1, 2, 3], "dictionary"),
])
def test_parameters_per_part_mistakes(answer, message):
    result = check("00.2", answer)
    assert not result.passed and message in result.message


def test_parameters_per_part_solution_passes():
    assert check("00.2", parameters_per_part).passed


def latent_shape(vae_config, height, width):
    factor = 2 ** (len(vae_config.block_out_channels) - 1)
    return (vae_config.latent_channels, height // factor, width // factor)


@pytest.mark.parametrize("answer, message", [
    (lambda c, h, w: (4, h // 8, w // 8), "factor of 8"),
    (lambda c, h, w: (c.in_channels, h // 4, w // 4), "latent_channels"),
    (lambda c, h, w: (c.latent_channels, h // 2 ** len(c.block_out_channels), w // 2 ** len(c.block_out_channels)),
     "last block does not halve"),
    (lambda c, h, w: (4, h // 4, w // 4), "Stable Diffusion 1.5's autoencoder gives 4x64x64"),
    (lambda c, h, w: latent_shape(c, w, h), "height first"),
    (lambda c, h, w: None, "three numbers"),
])
def test_latent_shape_mistakes(answer, message):
    result = check("00.3", answer)
    assert not result.passed and message in result.message


def test_latent_shape_solution_passes():
    assert check("00.3", latent_shape).passed

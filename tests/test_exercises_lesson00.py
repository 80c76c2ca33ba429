"""Lesson 00's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check

# --------------------------------------------------------------------------- 00.1 negative_prompt_settings()
# Each setting draws the lesson's 16 pictures (about 3 s on a CPU); the check caches them per setting.


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"guidance_scale": 4.0}, {"guidance_scale": 5}])
def test_negative_prompt_settings_that_work_pass(settings):
    verdict = check("00.1", lambda: settings)
    assert verdict.passed, verdict.message


@pytest.mark.slow
@pytest.mark.parametrize("settings, message", [
    ({"guidance_scale": 7.5}, "guidance overshoots"),
    ({}, "guidance overshoots"),                                    # the default scale, 7.5
    ({"guidance_scale": 7.5, "guidance_rescale": 0.7}, "guidance overshoots"),
    ({"guidance_scale": 3.0}, "1 of the 16 pictures is a sneaker"),
    ({"guidance_scale": 1.0}, "never looks at the negative prompt"),
])
def test_negative_prompt_settings_mistakes(settings, message):
    verdict = check("00.1", lambda: settings)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.parametrize("settings, message", [
    ([4.0], "return a dictionary"),
    ({"guidance_scale": 4.0, "num_inference_steps": 50}, "Remove 'num_inference_steps'"),
    ({"guidance_scale": "4"}, "should be a number"),
    ({"guidance_scale": 4.0, "guidance_rescale": 2.0}, "between 0 and 1"),
])
def test_negative_prompt_settings_malformed(settings, message):
    verdict = check("00.1", lambda: settings)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


# --------------------------------------------------------------------------- 00.2 unet_images(pipe, n, steps, scale)

def unet_images_measured(pipe, n_prompts, steps, guidance_scale):
    batch_sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        pipe(["a photo of a coat"] * n_prompts, num_inference_steps=steps, guidance_scale=guidance_scale,
             generator=torch.Generator(pipe.device).manual_seed(1))
    finally:
        handle.remove()
    return sum(batch_sizes)


def unet_images_reasoned(pipe, n_prompts, steps, guidance_scale):
    return n_prompts * steps * (2 if guidance_scale > 1 else 1)


def unet_images_as_a_tensor(pipe, n_prompts, steps, guidance_scale):
    return torch.tensor(unet_images_reasoned(pipe, n_prompts, steps, guidance_scale))


@pytest.mark.parametrize("answer", [unet_images_measured, unet_images_reasoned, unet_images_as_a_tensor])
def test_unet_images_right_answers_pass(answer):
    verdict = check("00.2", answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("answer, message", [
    (lambda pipe, n, steps, scale: steps, "the number of U-Net calls"),
    (lambda pipe, n, steps, scale: n * steps, "with guidance it predicts the noise with the prompt and without"),
    (lambda pipe, n, steps, scale: 2 * n * steps, "at guidance_scale 1 there is nothing to guide"),
    (lambda pipe, n, steps, scale: 2 * n * steps + 1, "Measure it"),
    (lambda pipe, n, steps, scale: "twelve", "whole number"),
])
def test_unet_images_mistakes(answer, message):
    verdict = check("00.2", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


# --------------------------------------------------------------------------- 00.3 latent_shape(vae_config, h, w)

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

"""Lesson 15's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check

# 15.1: the initial latents


def initial_latents(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, latent_channels, height // vae_factor, width // vae_factor)
    return torch.randn(shape, generator=generator) * init_noise_sigma


def pixel_size(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    return torch.randn((batch_size, latent_channels, height, width), generator=generator) * init_noise_sigma


def swapped_size(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, latent_channels, width // vae_factor, height // vae_factor)
    return torch.randn(shape, generator=generator) * init_noise_sigma


def image_channels(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, 1, height // vae_factor, width // vae_factor)       # the image's channels
    return torch.randn(shape, generator=generator) * init_noise_sigma


def no_sigma(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    return torch.randn((batch_size, latent_channels, height // vae_factor, width // vae_factor), generator=generator)


def divided_by_sigma(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, latent_channels, height // vae_factor, width // vae_factor)
    return torch.randn(shape, generator=generator) / init_noise_sigma


def uniform(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, latent_channels, height // vae_factor, width // vae_factor)
    return torch.rand(shape, generator=generator) * init_noise_sigma


def without_generator(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    return torch.randn((batch_size, latent_channels, height // vae_factor, width // vae_factor)) * init_noise_sigma


def channels_last(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, height // vae_factor, width // vae_factor, latent_channels)
    return torch.randn(shape, generator=generator).permute(0, 3, 1, 2) * init_noise_sigma


def fixed_sigma(batch_size, height, width, latent_channels, vae_factor, init_noise_sigma, generator):
    shape = (batch_size, latent_channels, height // vae_factor, width // vae_factor)
    return torch.randn(shape, generator=generator) * 14.6


# 15.2: one denoising step

def _predict(unet, model_input, t, context):
    with torch.no_grad():
        return unet(model_input, t, encoder_hidden_states=context).sample


def no_scaling(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, torch.cat([latents] * 2), t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample


def swapped_chunks(unet, scheduler, latents, t, context, guidance_scale):
    cond, uncond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample


def reversed_guidance(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (uncond - cond), t, latents).prev_sample


def prompt_only(unet, scheduler, latents, t, context, guidance_scale):
    _, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(cond, t, latents).prev_sample


def scaled_sample_to_step(unet, scheduler, latents, t, context, guidance_scale):
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    uncond, cond = _predict(unet, model_input, t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (cond - uncond), t, model_input.chunk(2)[0]).prev_sample


def returns_pred_x0(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).pred_original_sample


def returns_prediction(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def fixed_scale(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(uncond + 5.0 * (cond - uncond), t, latents).prev_sample


def denoising_step(unet, scheduler, latents, t, context, guidance_scale):
    uncond, cond = _predict(unet, scheduler.scale_model_input(torch.cat([latents] * 2), t), t, context).chunk(2)
    return scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample


# 15.3: decoding

def _decode(vae, latents):
    with torch.no_grad():
        return vae.decode(latents).sample


def not_divided(vae, latents):
    return (_decode(vae, latents) / 2 + 0.5).clamp(0, 1)


def multiplied(vae, latents):
    return (_decode(vae, latents * vae.config.scaling_factor) / 2 + 0.5).clamp(0, 1)


def clipped_not_mapped(vae, latents):
    return _decode(vae, latents / vae.config.scaling_factor).clamp(0, 1)


def raw_decoder_output(vae, latents):
    return _decode(vae, latents / vae.config.scaling_factor)


def mapped_not_clamped(vae, latents):
    return _decode(vae, latents / vae.config.scaling_factor) / 2 + 0.5


def decode_latents(vae, latents):
    return ((_decode(vae, latents / vae.config.scaling_factor) + 1) / 2).clamp(0, 1)


# 15.4: x0 from v in the noise-level form

def epsilon_jump(x, v, sigma):
    return x - sigma * v


def unscaled_x(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return alpha_bar**0.5 * x - (1 - alpha_bar) ** 0.5 * v


def plus_v(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return alpha_bar**0.5 * (x * alpha_bar**0.5) + (1 - alpha_bar) ** 0.5 * v


def epsilon_formula(x, v, sigma):
    alpha_bar = 1 / (sigma**2 + 1)
    return (x * alpha_bar**0.5 - (1 - alpha_bar) ** 0.5 * v) / alpha_bar**0.5


def scaled_input(x, v, sigma):
    return x / (sigma**2 + 1) ** 0.5


def first_sigma_only(x, v, sigma):
    from sdlearn.exercises.lesson15 import _euler

    s = float(_euler().sigmas[4])             # the sigma of the check's first case, whatever is given
    return x / (s**2 + 1) - s / (s**2 + 1) ** 0.5 * v


def x0_from_v_sigma(x, v, sigma):
    return x / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * v


WRONG = [
    ("15.1", pixel_size, "divide height and width by the VAE's factor"),
    ("15.1", swapped_size, "height and width are swapped"),
    ("15.1", image_channels, "use latent_channels"),
    ("15.1", no_sigma, "you forgot init_noise_sigma"),
    ("15.1", divided_by_sigma, "multiply the noise by init_noise_sigma"),
    ("15.1", uniform, "torch.randn"),
    ("15.1", without_generator, "draw the noise with the generator"),
    ("15.1", channels_last, "draw them all at once"),
    ("15.1", fixed_sigma, "use the arguments you are given"),
    ("15.2", no_scaling, "you forgot scheduler.scale_model_input"),
    ("15.2", swapped_chunks, "the wrong way round"),
    ("15.2", reversed_guidance, "not (uncond - cond)"),
    ("15.2", prompt_only, "uses only the prompt's prediction"),
    ("15.2", scaled_sample_to_step, "scale only the U-Net's input"),
    ("15.2", returns_pred_x0, "that is the predicted x0"),
    ("15.2", returns_prediction, "that is the guided prediction"),
    ("15.2", fixed_scale, "use the guidance_scale you are given"),
    ("15.3", not_divided, "you forgot to divide by the scaling factor"),
    ("15.3", multiplied, "you multiplied"),
    ("15.3", clipped_not_mapped, "instead of clipping it"),
    ("15.3", raw_decoder_output, "map it to [0, 1] with x / 2 + 0.5, and clamp"),
    ("15.3", mapped_not_clamped, "then clamp"),
    ("15.4", epsilon_jump, "the jump for a noise-predicting model"),
    ("15.4", unscaled_x, "you used x itself as x_t"),
    ("15.4", plus_v, "the sign of the v term"),
    ("15.4", epsilon_formula, "the same as (x_t - sqrt(1 - abar) eps) / sqrt(abar)"),
    ("15.4", scaled_input, "that is x_t"),
    ("15.4", first_sigma_only, "use the sigma you are given"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.parametrize("exercise_id, answer", [("15.1", initial_latents), ("15.2", denoising_step),
                                                 ("15.3", decode_latents), ("15.4", x0_from_v_sigma)])
def test_other_right_answers_pass(exercise_id, answer):
    """Right answers written differently from the lesson's solutions pass too."""
    verdict = check(exercise_id, answer)
    assert verdict.passed, repr(verdict)


def test_the_decoding_check_needs_clamping():
    """The check's latents decode beyond [-1, 1] in places, so a missing clamp can be seen."""
    from sdlearn.exercises.lesson15 import _vae

    vae = _vae()
    latents = 1.6 * torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(153))
    with torch.no_grad():
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    assert decoded.min() < -1 or decoded.max() > 1


def test_the_step_check_tells_the_mistakes_apart():
    """Each wrong step answer differs from the right one by more than the check's tolerance."""
    from sdlearn.exercises.lesson15 import _reference_step, _tiny_unet

    unet = _tiny_unet()
    g = torch.Generator().manual_seed(0)
    latents, context = 30 * torch.randn((2, 4, 8, 8), generator=g), torch.randn((4, 77, 16), generator=g)
    right = _reference_step(unet, latents, context, 5.0)
    for mistake in [dict(scale_input=False), dict(combine="swapped"), dict(combine="cond"),
                    dict(step_sample="scaled"), dict(output="pred_original_sample")]:
        wrong = _reference_step(unet, latents, context, 5.0, **mistake)
        assert not torch.allclose(wrong, right, rtol=1e-3, atol=1e-3), mistake

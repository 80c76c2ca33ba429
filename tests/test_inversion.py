"""DDIM inversion (sdlearn.inversion) against diffusers' DDIMInverseScheduler, and what it is for."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel

from sdlearn import pipelines
from sdlearn.data import fashion_caption, fashion_for_diffusion
from sdlearn.editing import encode_image, image_to_image, strength_timesteps
from sdlearn.inversion import (ddim_invert, ddim_inversion_step, denoise_from_strength, invert_image,
                               inversion_timesteps)
from sdlearn.pipelines import scheduler_config
from sdlearn.text_to_image import prepare_prompt_embeds
from sdlearn.utils import randn_tensor

# Stable Diffusion 1.5's schedule: leading spacing with steps_offset 1, epsilon prediction
SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}
CONFIGS = {"ours": scheduler_config("squaredcos_cap_v2", "v_prediction"), "sd15": SD15,
           "ours-epsilon": scheduler_config("squaredcos_cap_v2", "epsilon")}


@pytest.fixture(scope="module")
def tiny_unet():
    """A small UNet2DConditionModel with random weights (the same every time)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4,
            norm_num_groups=8)
    return unet.eval()


@pytest.fixture(scope="module")
def pipe():
    return pipelines.load("fashion_text2image")


def _diffusers_inversion(unet, config, latents, context, num_inference_steps, steps):
    inverse = DDIMInverseScheduler.from_config(config)
    inverse.set_timesteps(num_inference_steps)
    with torch.no_grad():
        for t in inverse.timesteps[:steps]:
            output = unet(latents, t, encoder_hidden_states=context).sample
            latents = inverse.step(output, t, latents).prev_sample
    return latents


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("num_inference_steps, strength", [(10, 0.3), (10, 1.0), (25, 0.6), (50, 0.8)])
def test_inversion_equals_diffusers_inverse_scheduler(tiny_unet, name, num_inference_steps, strength):
    g = torch.Generator().manual_seed(1)
    latents, context = torch.randn((2, 4, 8, 8), generator=g), torch.randn((2, 77, 16), generator=g)
    steps = int(num_inference_steps * strength)
    expected = _diffusers_inversion(tiny_unet, CONFIGS[name], latents, context, num_inference_steps, steps)
    ours = ddim_invert(tiny_unet, DDIMScheduler.from_config(CONFIGS[name]), latents, context,
                       num_inference_steps=num_inference_steps, strength=strength)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, latents, atol=0.1)        # it moved


@pytest.mark.parametrize("name", ["ours", "sd15"])
def test_inversion_ends_where_image_to_image_starts(name):
    """The inverse scheduler's timesteps are the forward ones reversed: the last is image to image's first."""
    scheduler = DDIMScheduler.from_config(CONFIGS[name])
    inverse = DDIMInverseScheduler.from_config(CONFIGS[name])
    for num_inference_steps, strength in [(10, 0.6), (25, 0.4), (50, 1.0)]:
        inverse.set_timesteps(num_inference_steps)
        steps = int(num_inference_steps * strength)
        timesteps, levels = inversion_timesteps(scheduler, num_inference_steps, strength)
        forward = strength_timesteps(scheduler, num_inference_steps, strength)
        assert torch.equal(timesteps, inverse.timesteps[:steps])
        assert torch.equal(timesteps.flip(0), forward)
        assert levels[0] == scheduler.final_alpha_cumprod                     # the clean end, as DDIM ends
        assert torch.equal(levels[1:], scheduler.alphas_cumprod[timesteps[:-1]])


def test_one_inversion_step_undoes_one_ddim_step_for_an_exact_prediction():
    """With a model that knows the noise, DDIM down and inversion up are each other's inverse."""
    scheduler = DDIMScheduler.from_config(CONFIGS["ours"])
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn((3, 4, 8, 8), generator=g), torch.randn((3, 4, 8, 8), generator=g)
    a, a_next = scheduler.alphas_cumprod[399], scheduler.alphas_cumprod[499]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0                    # the exact velocity at level a
    up = ddim_inversion_step(v, x_t, a, a_next, "v_prediction")
    torch.testing.assert_close(up, a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps)
    v_next = a_next.sqrt() * eps - (1 - a_next).sqrt() * x0
    down = scheduler.step(v_next, 499, up).prev_sample
    torch.testing.assert_close(down, x_t)


@pytest.mark.slow
def test_inversion_reconstructs_far_better_than_random_noising(pipe):
    """Invert to strength 0.8, denoise back without guidance: much closer to the input than from random noise."""
    images, labels = fashion_for_diffusion("test")
    images = (images[labels == 7][:4] + 1) / 2
    prompt = [fashion_caption(7)] * 4
    settings = dict(strength=0.8, num_inference_steps=20)
    inverted = invert_image(pipe, images, prompt, **settings, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    latents = encode_image(pipe.vae, images, g)
    first = strength_timesteps(DDIMScheduler.from_config(pipe.scheduler.config), 20, 0.8)[:1]
    noised = pipe.scheduler.add_noise(latents, randn_tensor(latents.shape, g), first)
    back = {name: denoise_from_strength(pipe, prompt, z, **settings, guidance_scale=1.0, output_type="latent")
            for name, z in [("inverted", inverted), ("noised", noised)]}
    error = {name: (z - latents).pow(2).mean().sqrt().item() for name, z in back.items()}
    assert error["inverted"] < 0.4 * error["noised"], error


def test_denoising_added_noise_is_image_to_image(pipe):
    """denoise_from_strength after the pipeline's noising is image_to_image, to the pixel."""
    images, labels = fashion_for_diffusion("test")
    images = (images[labels == 0][:2] + 1) / 2
    prompts = [fashion_caption(3)] * 2
    settings = dict(strength=0.5, num_inference_steps=10, guidance_scale=5.0)
    expected = image_to_image(pipe, prompts, images, **settings, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    latents = encode_image(pipe.vae, images, g)
    first = strength_timesteps(pipe.scheduler, 10, 0.5)[:1]
    noised = pipe.scheduler.add_noise(latents, randn_tensor(latents.shape, g), first)
    ours = denoise_from_strength(pipe, prompts, noised, **settings)
    assert (ours - expected).abs().max().item() <= 1e-6


def test_mismatched_prompts_say_what_to_do(pipe):
    images = torch.zeros(3, 1, 32, 32)
    with pytest.raises(ValueError, match="one per picture"):
        invert_image(pipe, images, ["", ""], strength=0.5, num_inference_steps=10)
    with pytest.raises(ValueError, match="one prompt per latent"):
        denoise_from_strength(pipe, "a photo of a bag", torch.zeros(3, 4, 8, 8), strength=0.5, num_inference_steps=10)

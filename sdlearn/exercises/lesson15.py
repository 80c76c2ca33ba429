"""Checks for the exercises of lesson 15, text to image."""

from __future__ import annotations

from functools import lru_cache, partial

import torch

from sdlearn import weights
from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.pipelines import scheduler_config
from sdlearn.text_to_image import latents_to_images, prepare_latents


_close = partial(same_tensor, rtol=1e-4, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, rtol=1e-4, atol=1e-5)


def _tensor(got, what: str, expected: torch.Tensor) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return {what} as a tensor, got {type(got).__name__}.")
    if got.shape != expected.shape:
        raise Failed(f"{what} should have shape {tuple(expected.shape)}, got {tuple(got.shape)}.")
    return got.detach().float()


# --------------------------------------------------------------------------- 15.1

@exercise("15.1", "the initial latents")
def check_initial_latents(initial_latents):
    # a non-square image, so that height and width cannot be swapped unnoticed
    args = dict(batch_size=3, height=32, width=48, latent_channels=4, vae_factor=4, init_noise_sigma=14.6)
    got = initial_latents(**args, generator=torch.Generator().manual_seed(151))
    shape = (3, 4, 32 // 4, 48 // 4)
    if isinstance(got, torch.Tensor):
        if tuple(got.shape) == (3, 4, 32, 48):
            raise Failed("the latents have the image's size; divide height and width by the VAE's factor "
                         "(a 32x48 image has 8x12 latents with factor 4).")
        if tuple(got.shape) == (3, 4, 12, 8):
            raise Failed("height and width are swapped: the shape is (batch, channels, height // factor, "
                         "width // factor).")
        if got.ndim == 4 and got.shape[0] == 3 and tuple(got.shape[2:]) == (8, 12) and got.shape[1] != 4:
            raise Failed(f"the latents have {got.shape[1]} channels; use latent_channels (the U-Net's in_channels, "
                         f"4 here), not the image's channels.")
    expected = prepare_latents(shape, 14.6, generator=torch.Generator().manual_seed(151))    # the package's piece
    got = _tensor(got, "the latents", expected)
    noise = expected / 14.6
    uniform = torch.rand(shape, generator=torch.Generator().manual_seed(151))
    wrong = {
        "you forgot init_noise_sigma: multiply the Gaussian noise by it, so that the first latents have the "
        "standard deviation the scheduler expects (1 for DDIM, much more for Euler-type schedulers).": noise,
        "divide? No: multiply the noise by init_noise_sigma, it is the standard deviation the scheduler "
        "expects.": noise / 14.6,
        "that is uniform noise (torch.rand); the initial latents are Gaussian: torch.randn.": uniform * 14.6,
        "that is uniform noise (torch.rand) without init_noise_sigma; use torch.randn(...) * init_noise_sigma.":
            uniform,
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        again = initial_latents(**args, generator=torch.Generator().manual_seed(151))
        if isinstance(again, torch.Tensor) and not torch.equal(again, got):
            raise Failed("two calls with generators of the same seed gave different latents: draw the noise with "
                         "the generator, torch.randn(shape, generator=generator).")
        raise Failed("the latents have the right shape but not the pipeline's numbers: draw them all at once, "
                     "torch.randn((batch, channels, height // factor, width // factor), generator=generator), then "
                     "multiply by init_noise_sigma.")
    got = initial_latents(2, 64, 64, 4, 8, 1.0, torch.Generator().manual_seed(0))
    expected = prepare_latents((2, 4, 8, 8), 1.0, generator=torch.Generator().manual_seed(0))
    if not _close(_tensor(got, "the latents", expected), expected):
        raise Failed("right for the first case, wrong for a 64x64 image with factor 8 and init_noise_sigma 1: use "
                     "the arguments you are given.")
    return "the latents the pipeline starts from, for the same generator."


# --------------------------------------------------------------------------- 15.2

@lru_cache(maxsize=1)
def _tiny_unet():
    """A small UNet2DConditionModel with random weights (the same every time)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(152)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4,
            norm_num_groups=8)
    return unet.eval()


def _euler():
    """A fresh Euler scheduler for the shipped model's schedule, set to 10 steps."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    scheduler.set_timesteps(10)
    return scheduler


def _reference_step(unet, latents, context, guidance_scale, *, index=2, scale_input=True, combine="guidance",
                    step_sample="latents", output="prev_sample"):
    """One denoising step written out, with switches that reproduce typical mistakes."""
    scheduler = _euler()
    scheduler.set_begin_index(index)
    t = scheduler.timesteps[index]
    doubled = torch.cat([latents] * 2)
    model_input = scheduler.scale_model_input(doubled, t) if scale_input else doubled
    with torch.no_grad():
        prediction = unet(model_input, t, encoder_hidden_states=context).sample
    uncond, cond = prediction.chunk(2)
    guided = {"guidance": uncond + guidance_scale * (cond - uncond),
              "swapped": cond + guidance_scale * (uncond - cond),
              "minus": uncond + guidance_scale * (uncond - cond),
              "cond": cond,
              "uncond": uncond}[combine]
    if output == "prediction":
        return guided
    sample = latents if step_sample == "latents" else model_input[: len(latents)]
    scheduler.is_scale_input_called = True       # the mistake is meant: no warning from diffusers
    result = scheduler.step(guided, t, sample)
    return result.prev_sample if output == "prev_sample" else result.pred_original_sample


@exercise("15.2", "one denoising step with guidance")
def check_denoising_step(denoising_step):
    unet = _tiny_unet()
    g = torch.Generator().manual_seed(152)
    index = 2                                                   # a step in the middle of the schedule
    scheduler = _euler()
    scheduler.set_begin_index(index)
    t = scheduler.timesteps[index]
    latents = torch.randn((2, 4, 8, 8), generator=g) * (scheduler.sigmas[index] ** 2 + 1) ** 0.5
    context = torch.randn((4, 77, 16), generator=g)             # 2 reference contexts, then 2 prompt contexts
    scale = 5.0
    got = denoising_step(unet, scheduler, latents.clone(), t, context.clone(), scale)
    expected = _reference_step(unet, latents, context, scale, index=index)
    got = _tensor(got, "the new latents", expected)
    wrong = {
        "you forgot scheduler.scale_model_input: an Euler scheduler keeps latents of standard deviation "
        "sqrt(sigma^2 + 1), and the U-Net must see them divided by that, as in training.":
            _reference_step(unet, latents, context, scale, index=index, scale_input=False),
        "the two halves are the wrong way round: the context has the reference (empty or negative) prompts "
        "first, so uncond, cond = prediction.chunk(2).":
            _reference_step(unet, latents, context, scale, index=index, combine="swapped"),
        "guidance goes from the reference towards the prompt: uncond + scale * (cond - uncond), not (uncond - cond).":
            _reference_step(unet, latents, context, scale, index=index, combine="minus"),
        "that uses only the prompt's prediction; combine the two with classifier-free guidance, "
        "uncond + scale * (cond - uncond).":
            _reference_step(unet, latents, context, scale, index=index, combine="cond"),
        "that uses only the reference prediction; the prompt's prediction is the second half of the batch.":
            _reference_step(unet, latents, context, scale, index=index, combine="uncond"),
        "the scheduler's step takes the unscaled latents as its sample: scale only the U-Net's input.":
            _reference_step(unet, latents, context, scale, index=index, step_sample="scaled"),
        "that is the predicted x0 (pred_original_sample); return the latents for the next step, prev_sample.":
            _reference_step(unet, latents, context, scale, index=index, output="pred_original_sample"),
        "that is the guided prediction; pass it to scheduler.step(prediction, t, latents) and return the "
        "new latents (.prev_sample).":
            _reference_step(unet, latents, context, scale, index=index, output="prediction"),
    }
    _name_the_mistake(got, wrong, rtol=1e-4, atol=1e-4)
    if not _close(got, expected, rtol=1e-4, atol=1e-4):
        raise Failed("the new latents differ from scale_model_input -> U-Net on the doubled batch -> "
                     "uncond + scale * (cond - uncond) -> scheduler.step(...).prev_sample.")
    scheduler = _euler()
    scheduler.set_begin_index(index)
    got = denoising_step(unet, scheduler, latents.clone(), t, context.clone(), 2.0)
    if not _close(_tensor(got, "the new latents", expected), _reference_step(unet, latents, context, 2.0, index=index),
                  rtol=1e-4, atol=1e-4):
        raise Failed("right for guidance scale 5, wrong for 2: use the guidance_scale you are given.")
    return "the loop's body, as in the pipeline."


# --------------------------------------------------------------------------- 15.3

@lru_cache(maxsize=1)
def _vae():
    return weights.load("vae_fashion")


@exercise("15.3", "decoding latents to images")
def check_decode_latents(decode_latents):
    vae = _vae()
    factor = vae.config.scaling_factor
    g = torch.Generator().manual_seed(153)
    latents = 1.6 * torch.randn((3, 4, 8, 8), generator=g)     # strong enough to decode beyond [-1, 1] in places

    def decode(z):
        with torch.no_grad():
            return vae.decode(z).sample

    decoded = decode(latents / factor)
    expected = latents_to_images(vae, latents)                 # the package's piece: the same operations
    got = _tensor(decode_latents(vae, latents.clone()), "the images", expected)
    unscaled = decode(latents)
    wrong = {
        "you forgot to divide by the scaling factor: the diffusion model's latents are the VAE's latents times "
        "vae.config.scaling_factor, so divide before decoding.": (unscaled / 2 + 0.5).clamp(0, 1),
        "divide the latents by the scaling factor before decoding; you multiplied.":
            (decode(latents * factor) / 2 + 0.5).clamp(0, 1),
        "the decoder's output is in about [-1, 1]: map it to [0, 1] with x / 2 + 0.5 (then clamp), instead of "
        "clipping it.": decoded.clamp(0, 1),
        "the decoder's output is in about [-1, 1]: map it to [0, 1] with x / 2 + 0.5, and clamp.": decoded,
        "map to [0, 1], then clamp: a few pixels decode beyond [-1, 1], and images must stay in [0, 1].":
            decoded / 2 + 0.5,
    }
    _name_the_mistake(got, wrong, atol=1e-5)
    if not _close(got, expected, atol=1e-5):
        raise Failed("the images differ from (vae.decode(latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1).")
    return "the pipeline's images, as output_type='pt' returns them."


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
    got = _tensor(x0_from_v_sigma(x.clone(), v.clone(), sigma), "the predicted x0", expected)
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
    if not _close(_tensor(again, "the predicted x0", expected), expected):
        raise Failed("right for one sigma, wrong for another (given as a tensor): use the sigma you are given.")
    return "EulerDiscreteScheduler's pred_original_sample for a v-predicting model."

"""Text to image, written out, in pieces that image to image and inpainting reuse.

    images = text_to_image(pipe, "a photo of a sneaker", negative_prompt="a photo of a sandal",
                           guidance_scale=5.0, num_inference_steps=25,
                           generator=torch.Generator().manual_seed(0))

`text_to_image` takes the parts of a `diffusers.StableDiffusionPipeline` (its tokenizer, text
encoder, U-Net, scheduler and VAE) and does by hand what the pipeline's `__call__` does, so that
every step can be seen (`callback`) and changed. For the same inputs it returns the pipeline's
pixels. It is four public pieces, called in the pipeline's order:

1. `prepare_prompt_embeds`: the prompts, and the reference (negative) prompts, to context vectors;
2. `prepare_latents`: the initial latents, Gaussian noise at the scheduler's `init_noise_sigma`;
3. `denoise`: the loop, from given latents over given timesteps: the guided U-Net
   (`sdlearn.guidance.GuidedNoiseModel`, the same model the samplers of `sdlearn.samplers` take)
   and the scheduler's step;
4. `latents_to_images`: the VAE's decoder, and [-1, 1] to [0, 1].

Image to image and inpainting change only what goes into `denoise`:

- image to image (SDEdit; diffusers' `StableDiffusionImg2ImgPipeline`): encode the image
  (`sdlearn.models.autoencoder.encode_latents`), call `scheduler.set_timesteps(num_inference_steps)`,
  keep the last `int(num_inference_steps * strength)` timesteps (from `t_start = num_inference_steps
  - that`, `scheduler.timesteps[t_start * scheduler.order:]`, and `scheduler.set_begin_index(t_start
  * scheduler.order)` for the schedulers that have it), noise the latents to the first of them
  (`scheduler.add_noise(latents, randn_tensor(...), timesteps[:1])`), and `denoise` from there over
  those timesteps;
- inpainting with an ordinary 4-channel U-Net: `latents_hook` puts the known region back after
  every step, noised to the next timestep; with a 9-channel inpainting U-Net: `extra_channels`
  hands it the mask and the masked image's latents at every step.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from sdlearn.guidance import GuidedNoiseModel, check_negative_prompts, uses_guidance
from sdlearn.models.autoencoder import autoencoder_factor, decode_latents
from sdlearn.samplers import Step
from sdlearn.tokenizer import check_prompts, tokenize
from sdlearn.utils import randn_tensor


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts) -> torch.Tensor:
    """Token ids to the text encoder's last hidden state (B, 77, D): the context of cross-attention."""
    device = next(text_encoder.parameters()).device
    ids = tokenize(prompts, tokenizer, max_length=tokenizer.model_max_length).to(device)
    return text_encoder(ids)[0]


def prepare_prompt_embeds(pipe, prompt, negative_prompt=None, guidance_scale: float = 7.5):
    """(prompt_embeds, negative_prompt_embeds), each (B, 77, D), for a pipeline's tokenizer and text encoder.

    `negative_prompt` is None (the empty prompt), one string for every prompt, or one per prompt.
    When the guidance scale switches guidance off (1 or less) the reference is not needed, and
    negative_prompt_embeds is None, as in diffusers.
    """
    prompts = check_prompts(prompt)
    negatives = check_negative_prompts(prompts, negative_prompt)
    prompt_embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    if not uses_guidance(guidance_scale):
        return prompt_embeds, None
    return prompt_embeds, encode_prompts(pipe.tokenizer, pipe.text_encoder, negatives)


def check_call(prompt, negative_prompt, num_inference_steps: int, output_type: str) -> list[str]:
    """The arguments every pipeline call shares, checked: returns the prompts as a list."""
    prompts = check_prompts(prompt)
    check_negative_prompts(prompts, negative_prompt)
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer of at least 1, got {num_inference_steps!r}")
    if output_type not in ("pt", "latent"):
        raise ValueError(f"output_type must be 'pt' or 'latent', got {output_type!r}")
    return prompts


def check_image_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """The image's height and width: by default the U-Net's sample size times the VAE's factor; else checked."""
    factor = autoencoder_factor(pipe.vae)
    height = height or pipe.unet.config.sample_size * factor
    width = width or pipe.unet.config.sample_size * factor
    if height % factor or width % factor or height < factor or width < factor:
        raise ValueError(f"height and width must be positive multiples of the autoencoder's factor {factor}, "
                         f"got {height}x{width}; try {max(factor, height // factor * factor)}x"
                         f"{max(factor, width // factor * factor)}")
    return height, width


def prepare_latents(shape: tuple, init_noise_sigma: float, *, generator: torch.Generator | None = None,
                    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The initial latents of text to image: Gaussian noise times the scheduler's `init_noise_sigma`.

    Drawn on the generator's device and then moved (`randn_tensor`), as diffusers draws them, so
    that a CPU generator gives the same latents for a pipeline on a GPU.
    """
    return randn_tensor(shape, generator, device, dtype) * init_noise_sigma


def predicted_x0(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor,
                 prediction_type: str) -> torch.Tensor:
    """The clean latent the model's output implies, from the variance-preserving sample x_t."""
    a = alpha_prod_t.to(sample.dtype)
    if prediction_type == "epsilon":
        return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def _step_kwargs(scheduler, generator) -> dict:
    """What diffusers passes to `scheduler.step`, where the step takes it: the generator, and eta = 0."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": generator} if "generator" in accepted else {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    return kwargs


@torch.no_grad()
def denoise(unet, scheduler, latents: torch.Tensor, timesteps, prompt_embeds: torch.Tensor,
            negative_prompt_embeds: torch.Tensor | None = None, *, guidance_scale: float = 7.5,
            generator: torch.Generator | None = None, callback: Callable[[Step], None] | None = None,
            extra_channels: torch.Tensor | None = None,
            latents_hook: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The denoising loop of a diffusers pipeline: from `latents`, one scheduler step per timestep.

    unet, scheduler          the pipeline's U-Net and a diffusers scheduler on which `set_timesteps` was
                             called (and `set_begin_index`, where it has one, when `timesteps` starts
                             part-way down)
    latents                  (B, C, h, w) the latents at the first timestep: pure noise for text to
                             image, noised image latents for image to image
    timesteps                the timesteps to visit: `scheduler.timesteps`, or the end of it
    prompt_embeds, negative_prompt_embeds, guidance_scale, extra_channels
                             the guided U-Net, as `sdlearn.guidance.GuidedNoiseModel` takes them
    generator                for the schedulers that add noise at each step (Euler ancestral, DDPM)
    latents_hook             `latents_hook(index, timestep, latents)` returns the latents to go on with,
                             after each step (inpainting: put the known region back)
    callback                 `callback(step)` after each step (and the hook) with a `sdlearn.samplers.Step`:
                             the new latents and the clean latents predicted from the guided prediction

    Returns the latents after the last step.
    """
    model = GuidedNoiseModel(unet, prompt_embeds, negative_prompt_embeds, guidance_scale=guidance_scale,
                             extra_channels=extra_channels)
    step_kwargs = _step_kwargs(scheduler, generator)
    prediction_type = scheduler.config.prediction_type
    alphas_cumprod = scheduler.alphas_cumprod.to(latents.device)
    for i, t in enumerate(timesteps):
        # 1. the scheduler's input scaling (the identity for DDIM, 1 / sqrt(sigma^2 + 1) for Euler)
        model_input = scheduler.scale_model_input(latents, t)
        # 2. the U-Net on the doubled batch, and guidance
        output = model(model_input, t)
        if callback is not None:
            x0 = predicted_x0(output, model_input, alphas_cumprod[int(t)], prediction_type)
        # 3. the scheduler's step: the latents at the next, smaller timestep
        latents = scheduler.step(output, t, latents, **step_kwargs, return_dict=False)[0]
        if latents_hook is not None:
            latents = latents_hook(i, t, latents)
        if callback is not None:
            callback(Step(index=i, timestep=t.item(), sample=latents, pred_x0=x0))
    return latents


def latents_to_images(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents to images in [0, 1]: divide by the scaling factor, decode, map [-1, 1] to [0, 1], clamp."""
    return (decode_latents(vae, latents) / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def text_to_image(pipe, prompt, *, negative_prompt=None, guidance_scale: float = 7.5,
                  num_inference_steps: int = 50, height: int | None = None, width: int | None = None,
                  generator: torch.Generator | None = None, scheduler=None,
                  callback: Callable[[Step], None] | None = None, output_type: str = "pt"):
    """Generate images from text with the components of a StableDiffusionPipeline, step by step.

    Returns images (B, C, H, W) in [0, 1] (`output_type="pt"`), or the final latents
    (`output_type="latent"`). `scheduler` replaces the pipeline's (it is configured here, so
    pass a fresh one). `callback(step)` runs after every step with a `Step`: the new latents
    (`step.sample`) and the predicted clean latents (`step.pred_x0`).
    """
    prompts = check_call(prompt, negative_prompt, num_inference_steps, output_type)
    height, width = check_image_size(pipe, height, width)
    scheduler = scheduler or pipe.scheduler
    device = next(pipe.unet.parameters()).device

    # 1. the prompts (and the reference prompts) to context vectors
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, prompts, negative_prompt, guidance_scale)
    # 2. the schedule of timesteps, and the initial latents: pure noise at the scheduler's scale
    scheduler.set_timesteps(num_inference_steps, device=device)
    factor = autoencoder_factor(pipe.vae)
    shape = (len(prompts), pipe.unet.config.in_channels, height // factor, width // factor)
    latents = prepare_latents(shape, scheduler.init_noise_sigma, generator=generator, device=device,
                              dtype=prompt_embeds.dtype)
    # 3. denoise: the guided U-Net and the scheduler's step, at every timestep
    latents = denoise(pipe.unet, scheduler, latents, scheduler.timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=guidance_scale, generator=generator, callback=callback)
    if output_type == "latent":
        return latents
    # 4. decode, and map [-1, 1] to [0, 1]
    return latents_to_images(pipe.vae, latents)

"""Classifier-free guidance and the text-to-image loop, written out.

    images = text_to_image(pipe, "a photo of a sneaker", negative_prompt="a photo of a sandal",
                           guidance_scale=5.0, num_inference_steps=25,
                           generator=torch.Generator().manual_seed(0))

`text_to_image` takes the parts of a `diffusers.StableDiffusionPipeline` (its tokenizer, text
encoder, U-Net, scheduler and VAE) and does by hand what the pipeline's `__call__` does, so that
every step can be seen (`callback`) and changed. For the same inputs it returns the pipeline's
pixels.

Classifier-free guidance (Ho and Salimans, 2021): one model, trained with the caption sometimes
dropped, predicts the noise twice, with the prompt and without it; the difference is the
direction the prompt pulls in, and the guidance scale says how far to go along it:

    guided = uncond + scale * (cond - uncond)

A negative prompt takes the place of the empty prompt as the reference, so guidance also pushes
away from what it describes. As in diffusers, a guidance scale of 1 or less switches guidance
off: the model runs once per step, on the prompt alone, and the negative prompt is not used.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from sdlearn.tokenizer import check_prompts, tokenize


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond): scale 0 gives uncond, 1 gives cond, more goes past cond."""
    if uncond.shape != cond.shape:
        raise ValueError(f"the two predictions must have the same shape, got {tuple(uncond.shape)} "
                         f"and {tuple(cond.shape)}")
    return uncond + scale * (cond - uncond)


def uses_guidance(guidance_scale: float) -> bool:
    """Whether a guidance scale turns guidance on: diffusers' rule, scale > 1."""
    return guidance_scale > 1.0


def check_negative_prompts(prompts: list[str], negative_prompt) -> list[str]:
    """The negative prompts, one per prompt: None gives "", a string is repeated, a list must match."""
    if negative_prompt is None:
        return [""] * len(prompts)
    if isinstance(negative_prompt, str):
        return [negative_prompt] * len(prompts)
    negatives = check_prompts(negative_prompt)
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: give one negative prompt "
                         f"per prompt, or a single string to use for all of them")
    return negatives


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts) -> torch.Tensor:
    """Token ids to the text encoder's last hidden state (B, 77, D): the context of cross-attention."""
    device = next(text_encoder.parameters()).device
    ids = tokenize(prompts, tokenizer, max_length=tokenizer.model_max_length).to(device)
    return text_encoder(ids)[0]


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


@dataclass
class Step:
    """What `callback` sees after each denoising step."""
    index: int                  # 0, 1, ..., num_inference_steps - 1
    timestep: int               # the scheduler's timestep t of this step
    latents: torch.Tensor       # the latents after the step (input to the next one)
    pred_x0: torch.Tensor       # the clean latents predicted at this step, from the guided prediction


@torch.no_grad()
def text_to_image(pipe, prompt, *, negative_prompt=None, guidance_scale: float = 7.5,
                  num_inference_steps: int = 50, height: int | None = None, width: int | None = None,
                  generator: torch.Generator | None = None, scheduler=None,
                  callback: Callable[[Step], None] | None = None, output_type: str = "pt"):
    """Generate images from text with the components of a StableDiffusionPipeline, step by step.

    Returns images (B, C, H, W) in [0, 1] (`output_type="pt"`), or the final latents
    (`output_type="latent"`). `scheduler` replaces the pipeline's (it is configured here, so
    pass a fresh one). `callback(step)` runs after every step with the new latents and the
    predicted clean latents.
    """
    prompts = check_prompts(prompt)
    negatives = check_negative_prompts(prompts, negative_prompt)
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer of at least 1, got {num_inference_steps!r}")
    if output_type not in ("pt", "latent"):
        raise ValueError(f"output_type must be 'pt' or 'latent', got {output_type!r}")
    unet, vae, scheduler = pipe.unet, pipe.vae, scheduler or pipe.scheduler
    factor = 2 ** (len(vae.config.block_out_channels) - 1)         # the autoencoder's downsampling factor
    height = height or unet.config.sample_size * factor
    width = width or unet.config.sample_size * factor
    if height % factor or width % factor or height < factor or width < factor:
        raise ValueError(f"height and width must be positive multiples of the autoencoder's factor {factor}, "
                         f"got {height}x{width}; try {max(factor, height // factor * factor)}x"
                         f"{max(factor, width // factor * factor)}")
    device = next(unet.parameters()).device
    guided = uses_guidance(guidance_scale)

    # 1. the prompts (and the reference prompts) to context vectors
    context = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    if guided:
        context = torch.cat([encode_prompts(pipe.tokenizer, pipe.text_encoder, negatives), context])
    # 2. the schedule of timesteps, and the initial latents: pure noise at the scheduler's scale
    scheduler.set_timesteps(num_inference_steps, device=device)
    shape = (len(prompts), unet.config.in_channels, height // factor, width // factor)
    latents = torch.randn(shape, generator=generator, device=device, dtype=context.dtype)
    latents = latents * scheduler.init_noise_sigma
    accepted = inspect.signature(scheduler.step).parameters       # as diffusers: pass what the step takes
    step_kwargs = {"generator": generator} if "generator" in accepted else {}
    if "eta" in accepted:
        step_kwargs["eta"] = 0.0
    prediction_type = scheduler.config.prediction_type
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    # 3. denoise: the U-Net on the doubled batch, guidance, the scheduler's step
    for i, t in enumerate(scheduler.timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        output = unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
        if guided:
            uncond, cond = output.chunk(2)
            output = classifier_free_guidance(uncond, cond, guidance_scale)
            model_input = model_input[len(prompts):]
        if callback is not None:
            x0 = predicted_x0(output, model_input, alphas_cumprod[int(t)], prediction_type)
        latents = scheduler.step(output, t, latents, **step_kwargs, return_dict=False)[0]
        if callback is not None:
            callback(Step(index=i, timestep=int(t), latents=latents, pred_x0=x0))
    if output_type == "latent":
        return latents
    # 4. decode, and map [-1, 1] to [0, 1]
    images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return (images / 2 + 0.5).clamp(0, 1)


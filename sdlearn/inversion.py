"""DDIM inversion: DDIM's deterministic update run backwards, from clean latents up to a timestep.

    latents = invert_image(pipe, image, "a photo of a sneaker", strength=0.6, num_inference_steps=10,
                           generator=torch.Generator().manual_seed(0))
    edited = denoise_from_strength(pipe, "a photo of an ankle boot", latents, strength=0.6,
                                   num_inference_steps=10, guidance_scale=7.5)

Image to image (`sdlearn.editing.image_to_image`) puts the encoded picture at the noise level of
its first timestep with fresh Gaussian noise: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. Any
eps will do, so the picture's details that the noise covers are lost. DDIM (Song et al., 2021)
maps latents at one timestep to latents at a lower one without drawing anything, so it can also
be run the other way: from x_0, each step up re-noises the model's own estimate of x_0 with the
model's own estimate of the noise. The latents it reaches are a starting point from which DDIM,
with the same prompt and no guidance, comes back close to x_0 (Dhariwal & Nichol, 2021; null-text
inversion, Mokady et al., 2023, builds on it).

The steps follow diffusers' `DDIMInverseScheduler` exactly, so that inversion to a strength ends
on the first timestep image to image would denoise from: the forward schedule's timesteps are
visited in reverse, each step lands on one of them, and the U-Net is asked at the timestep being
reached about the latents it has, which sit at the level one forward step below (the clean end
at `final_alpha_cumprod`, where DDIM's last step lands). Inverting step k thus reuses the very
timestep that denoising step k uses on the way back.
"""

from __future__ import annotations

from typing import Callable

import torch

from sdlearn.editing import check_image, encode_image, strength_timesteps
from sdlearn.guidance import GuidedNoiseModel
from sdlearn.samplers import Step
from sdlearn.text_to_image import denoise, latents_to_images, predicted_x0, prepare_prompt_embeds
from sdlearn.tokenizer import check_prompts


def inversion_timesteps(scheduler, num_inference_steps: int, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps inversion to `strength` visits, lowest first, and the level each step starts from.

    Returns (timesteps, start_levels): `timesteps` is `strength_timesteps(...)` reversed (so its
    last entry is the first timestep image to image denoises from), and `start_levels[k]` is the
    alpha-bar of the latents before step k: one forward DDIM step below timesteps[k]
    (`timesteps[k] - num_train_timesteps // num_inference_steps`, as DDIM's `step` counts it), or
    the scheduler's `final_alpha_cumprod` below timestep 0.
    """
    timesteps = strength_timesteps(scheduler, num_inference_steps, strength).flip(0)
    ratio = scheduler.config.num_train_timesteps // num_inference_steps
    alphas_cumprod = scheduler.alphas_cumprod
    final = getattr(scheduler, "final_alpha_cumprod", alphas_cumprod[0])
    start_levels = torch.stack([alphas_cumprod[int(t) - ratio] if int(t) - ratio >= 0 else final
                                for t in timesteps])
    return timesteps, start_levels


def ddim_inversion_step(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor,
                        alpha_prod_t_next: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """One step up the schedule, from latents at alpha-bar `alpha_prod_t` to latents at `alpha_prod_t_next`.

    sample              x_t, the latents now
    model_output        the U-Net's prediction for them (eps, v or x_0, by `prediction_type`)
    alpha_prod_t        abar_t, the level of `sample`
    alpha_prod_t_next   abar_t', the level to reach (t' > t: less signal)

    1. the clean latents and the noise the prediction implies, at level abar_t (DDIM, eq. 12):
       x0 = predicted_x0(...), eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)
    2. the same two, mixed in the proportions of level abar_t':
       x_t' = sqrt(abar_t') x0 + sqrt(1 - abar_t') eps
    """
    a, a_next = alpha_prod_t.to(sample.dtype), alpha_prod_t_next.to(sample.dtype)
    # 1. the clean latents and the noise the prediction implies
    x0 = predicted_x0(model_output, sample, a, prediction_type)
    if prediction_type == "v_prediction":
        eps = a.sqrt() * model_output + (1 - a).sqrt() * sample
    elif prediction_type == "epsilon":
        eps = model_output
    else:
        eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()
    # 2. re-mixed at the next, noisier level
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


@torch.no_grad()
def ddim_invert(unet, scheduler, latents: torch.Tensor, prompt_embeds: torch.Tensor, *, num_inference_steps: int,
                strength: float, callback: Callable[[Step], None] | None = None) -> torch.Tensor:
    """Clean latents (B, C, h, w) up to the first timestep of `strength`, deterministically, without guidance.

    unet, scheduler   the pipeline's U-Net, and a DDIM-type scheduler whose schedule and
                      `prediction_type` are the model's (its `set_timesteps` is called here)
    prompt_embeds     (B, 77, D) the context the U-Net sees at every step: the empty prompt's or
                      the picture's description
    callback          `callback(step)` after each step: the latents reached, at `step.timestep`

    Returns latents at `strength_timesteps(scheduler, num_inference_steps, strength)[0]`.
    Classifier-free guidance is left out on purpose: a guided prediction is not the one DDIM's
    way down without guidance will ask for, and inversion drifts (Mokady et al., 2023).
    """
    timesteps, start_levels = inversion_timesteps(scheduler, num_inference_steps, strength)
    model = GuidedNoiseModel(unet, prompt_embeds, guidance_scale=1.0)
    prediction_type = scheduler.config.prediction_type
    for k, t in enumerate(timesteps):
        # 1. the U-Net, at the timestep this step reaches, on the latents one level below
        output = model(scheduler.scale_model_input(latents, t), t)
        if callback is not None:
            x0 = predicted_x0(output, latents, start_levels[k], prediction_type)
        # 2. up one level
        latents = ddim_inversion_step(output, latents, start_levels[k], scheduler.alphas_cumprod[int(t)],
                                      prediction_type)
        if callback is not None:
            callback(Step(index=k, timestep=int(t), sample=latents, pred_x0=x0))
    return latents


@torch.no_grad()
def invert_image(pipe, image: torch.Tensor, prompt="", *, strength: float, num_inference_steps: int,
                 generator: torch.Generator | None = None, scheduler=None) -> torch.Tensor:
    """Pictures (B, C, H, W) in [0, 1] to latents at the first timestep of `strength`, by DDIM inversion.

    The picture is encoded as image to image encodes it (a sample of the encoder's Gaussian,
    drawn with `generator`); `prompt` (one, or one per picture) is the context of every step.
    """
    image = check_image(pipe, image)
    prompts = check_prompts(prompt)
    if len(prompts) == 1 and len(image) > 1:
        prompts = prompts * len(image)
    if len(prompts) != len(image):
        raise ValueError(f"{len(prompts)} prompts for {len(image)} pictures: give one, or one per picture")
    scheduler = scheduler or pipe.scheduler
    prompt_embeds, _ = prepare_prompt_embeds(pipe, prompts, guidance_scale=1.0)
    latents = encode_image(pipe.vae, image.to(prompt_embeds.device, prompt_embeds.dtype), generator)
    return ddim_invert(pipe.unet, scheduler, latents, prompt_embeds, num_inference_steps=num_inference_steps,
                       strength=strength)


@torch.no_grad()
def denoise_from_strength(pipe, prompt, latents: torch.Tensor, *, strength: float, num_inference_steps: int,
                          guidance_scale: float = 7.5, negative_prompt=None, scheduler=None,
                          output_type: str = "pt") -> torch.Tensor:
    """The second half of image to image, from given latents at the first timestep of `strength`.

    With latents from `scheduler.add_noise` this is `image_to_image`; with latents from
    `invert_image` it is an edit of the inverted picture. Returns pictures in [0, 1], or the
    final latents (`output_type="latent"`).
    """
    prompts = check_prompts(prompt)
    if len(prompts) != len(latents):
        raise ValueError(f"{len(prompts)} prompts for {len(latents)} latents: give one prompt per latent")
    if output_type not in ("pt", "latent"):
        raise ValueError(f"output_type must be 'pt' or 'latent', got {output_type!r}")
    scheduler = scheduler or pipe.scheduler
    timesteps = strength_timesteps(scheduler, num_inference_steps, strength, latents.device)
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, prompts, negative_prompt, guidance_scale)
    latents = denoise(pipe.unet, scheduler, latents, timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=guidance_scale)
    return latents if output_type == "latent" else latents_to_images(pipe.vae, latents)

"""Editing pictures with a text-to-image model: image to image (SDEdit) and inpainting.

    edited = image_to_image(pipe, "a photo of an ankle boot", image, strength=0.6,
                            num_inference_steps=25, generator=torch.Generator().manual_seed(0))
    filled = inpaint(pipe, "a photo of a dress", image, mask_image, num_inference_steps=25,
                     generator=torch.Generator().manual_seed(0))

Both are the text-to-image loop of `sdlearn.text_to_image` (`denoise`) started somewhere else:

- image to image (Meng et al., 2021) encodes the picture, noises it part of the way up the
  schedule, and denoises from there. `strength` in [0, 1] says how far: of the
  `num_inference_steps` timesteps, the last `int(num_inference_steps * strength)` run
  (`strength_timesteps`), and the encoded picture is noised to the first of them.
- inpainting keeps the picture where `mask_image` is 0 and repaints it where the mask is 1.
  With an ordinary 4-channel U-Net the known region is put back after every step, noised to
  the next timestep (`blend_known_region`); a 9-channel inpainting U-Net reads the mask and
  the latents of the masked picture as 5 more input channels at every step.

Both follow diffusers' `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline`
exactly, random draws included (the encoder's latents are sampled with the generator, then the
noise is drawn), so that the same inputs give the same pixels. Pictures and masks are tensors
(B, C, H, W) in [0, 1], the pipeline's size; a mask is binarised at 0.5, as diffusers does.
"""

from __future__ import annotations

from typing import Callable

import torch

from sdlearn.masks import latent_mask, masked_images
from sdlearn.models.autoencoder import autoencoder_factor, encode_latents
from sdlearn.samplers import Step
from sdlearn.text_to_image import check_call, check_image_size, denoise, latents_to_images, prepare_prompt_embeds
from sdlearn.utils import randn_tensor

INPAINTING_LOADER = "sdlearn.pipelines.load('fashion_inpainting')"


def steps_for_strength(num_inference_steps: int, strength: float) -> int:
    """How many of the `num_inference_steps` timesteps image to image runs: int(num_inference_steps * strength).

    Raises a ValueError when `strength` is outside [0, 1], or so small that no step would run.
    """
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer of at least 1, got {num_inference_steps!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number in [0, 1] (0 keeps the image, 1 noises it completely), "
                         f"got {strength!r}")
    steps = min(int(num_inference_steps * strength), num_inference_steps)
    if steps < 1:
        raise ValueError(f"strength {strength:g} of {num_inference_steps} steps runs int({num_inference_steps} * "
                         f"{strength:g}) = 0 steps: raise strength to at least {1 / num_inference_steps:.3g}, or "
                         f"num_inference_steps to at least {int(1 / strength) + 1 if strength > 0 else 'any'}"
                         if strength > 0 else
                         "strength 0 runs no step and returns the image unchanged: use a strength above 0")
    return steps


def strength_timesteps(scheduler, num_inference_steps: int, strength: float, device=None) -> torch.Tensor:
    """The timesteps image to image visits: the last `int(num_inference_steps * strength)` of the schedule.

    Calls `scheduler.set_timesteps(num_inference_steps)`, keeps the tail from `t_start =
    num_inference_steps - steps` (times the scheduler's order), and tells the schedulers that
    count their steps where they begin (`set_begin_index`), as diffusers' `get_timesteps` does.
    """
    steps = steps_for_strength(num_inference_steps, strength)
    scheduler.set_timesteps(num_inference_steps, device=device)
    t_start = num_inference_steps - steps
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return scheduler.timesteps[t_start * scheduler.order:]


def pipeline_size(pipe) -> tuple[int, int]:
    """The height and width of the pictures a pipeline makes: the U-Net's sample size times the VAE's factor."""
    return check_image_size(pipe, None, None)


def check_image(pipe, image, name: str = "image") -> torch.Tensor:
    """A batch of pictures (B, C, H, W) in [0, 1] that the pipeline's autoencoder takes, or a clear error."""
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a tensor (B, C, H, W) or (C, H, W) with values in [0, 1], got {got}")
    image = image[None] if image.ndim == 3 else image
    channels, factor = pipe.vae.config.in_channels, autoencoder_factor(pipe.vae)
    if image.shape[1] != channels:
        fix = "average the colour channels: image.mean(1, keepdim=True)" if channels == 1 else "convert it to RGB"
        raise ValueError(f"{name} has {image.shape[1]} channels but this pipeline's autoencoder takes {channels}: "
                         f"{fix}")
    height, width = image.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"{name} is {height}x{width}, not a multiple of the autoencoder's factor {factor}: pad or "
                         f"resize it (Fashion-MNIST's 28x28 pads to 32x32)")
    if (height, width) != pipeline_size(pipe):
        h, w = pipeline_size(pipe)
        raise ValueError(f"{name} is {height}x{width} but this pipeline makes {h}x{w} pictures: resize it, for "
                         f"example with sdlearn.data.resize_images({name}, {h})")
    if image.is_floating_point() is False or image.min() < 0 or image.max() > 1:
        raise ValueError(f"{name} must hold floats in [0, 1], got values in [{image.min().item():g}, "
                         f"{image.max().item():g}]; map [-1, 1] pictures with (x + 1) / 2")
    return image


def check_mask(mask_image, image: torch.Tensor) -> torch.Tensor:
    """A mask (B or 1, 1, H, W) for `image`, binarised at 0.5 (1: repaint, 0: keep), or a clear error."""
    if not isinstance(mask_image, torch.Tensor) or mask_image.ndim not in (2, 3, 4):
        got = tuple(mask_image.shape) if isinstance(mask_image, torch.Tensor) else type(mask_image).__name__
        raise ValueError(f"mask_image must be a tensor (B, 1, H, W), (1, H, W) or (H, W) of values in [0, 1], "
                         f"got {got}")
    mask = mask_image.reshape(1, 1, *mask_image.shape) if mask_image.ndim == 2 else mask_image
    mask = mask[None] if mask.ndim == 3 else mask
    if mask.shape[1] != 1:
        raise ValueError(f"mask_image has {mask.shape[1]} channels; a mask has one: take mask_image[:, :1]")
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask_image is {tuple(mask.shape[-2:])} but the image is {tuple(image.shape[-2:])}: "
                         f"draw the mask at the image's size")
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"{mask.shape[0]} masks for {image.shape[0]} images: give one mask, or one per image")
    mask = mask.float()
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"mask_image must hold values in [0, 1] (1: repaint, 0: keep), got values in "
                         f"[{mask.min().item():g}, {mask.max().item():g}]; for a mask of 0 and 255 divide by 255")
    return (mask >= 0.5).float()


def check_inpainting_unet(unet, latent_channels: int = 4) -> None:
    """Raise unless `unet` reads the latents, the mask and the masked picture's latents (4 + 1 + 4 = 9 channels)."""
    expected = 2 * latent_channels + 1
    if unet.config.in_channels != expected:
        raise ValueError(f"this needs an inpainting U-Net with {expected} input channels ({latent_channels} latents, "
                         f"1 mask, {latent_channels} masked-image latents), but the U-Net has "
                         f"{unet.config.in_channels}: load one with {INPAINTING_LOADER}, or inpaint by blending "
                         f"with an ordinary {latent_channels}-channel U-Net")


def encode_image(vae, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pictures in [0, 1] to scaled latents, sampled from the encoder's Gaussian with `generator`, as diffusers does."""
    return encode_latents(vae, image * 2 - 1, generator, sample=True)


def _match_batch(x: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    if x.shape[0] == batch_size:
        return x
    if x.shape[0] == 1:
        return x.expand(batch_size, *x.shape[1:]).contiguous()
    raise ValueError(f"{x.shape[0]} {name} for {batch_size} prompts: give one, or one per prompt")


@torch.no_grad()
def image_to_image(pipe, prompt, image: torch.Tensor, *, strength: float = 0.8, negative_prompt=None,
                   guidance_scale: float = 7.5, num_inference_steps: int = 50,
                   generator: torch.Generator | None = None, scheduler=None,
                   callback: Callable[[Step], None] | None = None, output_type: str = "pt"):
    """Change pictures with a prompt (SDEdit): encode, noise, denoise; as StableDiffusionImg2ImgPipeline does.

    image     (B, C, H, W) or (1, C, H, W) in [0, 1], the pipeline's size; one picture is used for every prompt
    strength  in [0, 1]: the share of the `num_inference_steps` that run, and so how much noise is added
    The other arguments are `sdlearn.text_to_image.text_to_image`'s. Returns pictures in [0, 1].
    """
    prompts = check_call(prompt, negative_prompt, num_inference_steps, output_type)
    device = next(pipe.unet.parameters()).device
    image = check_image(pipe, image)
    scheduler = scheduler or pipe.scheduler
    # 1. the prompts, and the timesteps that `strength` keeps (checked before any work)
    timesteps = strength_timesteps(scheduler, num_inference_steps, strength, device)
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, prompts, negative_prompt, guidance_scale)
    # 2. encode the pictures (a sample of the encoder's Gaussian), one per prompt
    latents = encode_image(pipe.vae, image.to(device, prompt_embeds.dtype), generator)
    latents = _match_batch(latents, len(prompts), "images")
    # 3. noise them to the first timestep that runs
    noise = randn_tensor(latents.shape, generator, device, latents.dtype)
    latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(prompts)))
    # 4. the text-to-image loop, from there
    latents = denoise(pipe.unet, scheduler, latents, timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=guidance_scale, generator=generator, callback=callback)
    return latents if output_type == "latent" else latents_to_images(pipe.vae, latents)


def blend_known_region(scheduler, known_latents: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                       timesteps) -> Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The `latents_hook` of inpainting with a 4-channel U-Net: after each step, put the known region back.

    After the step to timesteps[i + 1], the known latents noised to that timestep (with the same
    `noise` that started the run) replace the latents where `mask` (latent-sized) is 0; after the
    last step the clean known latents do.
    """
    def hook(i: int, t, latents: torch.Tensor) -> torch.Tensor:
        known = known_latents
        if i < len(timesteps) - 1:
            known = scheduler.add_noise(known_latents, noise, torch.tensor([timesteps[i + 1]]))
        return (1 - mask) * known + mask * latents

    return hook


@torch.no_grad()
def inpaint(pipe, prompt, image: torch.Tensor, mask_image: torch.Tensor, *, strength: float = 1.0,
            negative_prompt=None, guidance_scale: float = 7.5, num_inference_steps: int = 50,
            generator: torch.Generator | None = None, scheduler=None, blend: bool | None = None,
            callback: Callable[[Step], None] | None = None, output_type: str = "pt"):
    """Repaint pictures where `mask_image` is 1, following the prompt; what StableDiffusionInpaintPipeline does.

    image       (B or 1, C, H, W) in [0, 1], the pipeline's size
    mask_image  (B or 1, 1, H, W) in [0, 1], binarised at 0.5: 1 where the picture is repainted
    strength    1 (the default) starts from pure noise; below 1 from the picture noised part of the way
    blend       put the known region back after every step. By default the U-Net decides: a 4-channel
                U-Net can only blend; a 9-channel inpainting U-Net reads the mask and the masked
                picture instead. `blend=False` with a 4-channel U-Net is an error.
    Returns pictures in [0, 1] (the whole picture is decoded, so outside the mask it is the
    autoencoder's reconstruction, not the input).
    """
    prompts = check_call(prompt, negative_prompt, num_inference_steps, output_type)
    device = next(pipe.unet.parameters()).device
    image = check_image(pipe, image)
    mask = check_mask(mask_image, image)
    latent_channels = pipe.vae.config.latent_channels
    nine_channels = pipe.unet.config.in_channels != latent_channels
    if nine_channels or blend is False:
        check_inpainting_unet(pipe.unet, latent_channels)
    blend = (not nine_channels) if blend is None else blend
    scheduler = scheduler or pipe.scheduler
    batch = len(prompts)
    # 1. the timesteps (strength 1: all of them), and the prompts
    timesteps = strength_timesteps(scheduler, num_inference_steps, strength, device)
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, prompts, negative_prompt, guidance_scale)
    dtype = prompt_embeds.dtype
    image, mask = image.to(device, dtype), mask.to(device, dtype)
    # 2. the starting latents: pure noise at strength 1, else the encoded picture noised to timesteps[0]
    known = None
    if blend or strength < 1:
        known = _match_batch(encode_image(pipe.vae, image, generator), batch, "images")
    noise = randn_tensor((batch, latent_channels, *_latent_size(pipe, image)), generator, device, dtype)
    if strength == 1:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(known, noise, timesteps[:1].repeat(batch))
    # 3. the mask at the latents' size, and the latents of the picture with the masked pixels at 0
    small_mask = _match_batch(latent_mask(mask, autoencoder_factor(pipe.vae)), batch, "masks")
    masked = masked_images(image * 2 - 1, mask)                # [-1, 1], the masked pixels at 0
    masked_latents = _match_batch(encode_latents(pipe.vae, masked, generator, sample=True), batch, "images")
    extra = torch.cat([small_mask, masked_latents], dim=1) if nine_channels else None
    hook = blend_known_region(scheduler, known, noise, small_mask, timesteps) if blend else None
    # 4. the text-to-image loop, with the mask channels or the blend
    latents = denoise(pipe.unet, scheduler, latents, timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=guidance_scale, generator=generator, callback=callback,
                      extra_channels=extra, latents_hook=hook)
    return latents if output_type == "latent" else latents_to_images(pipe.vae, latents)


def _latent_size(pipe, image: torch.Tensor) -> tuple[int, int]:
    """The latents' height and width for pictures of `image`'s size."""
    factor = autoencoder_factor(pipe.vae)
    return image.shape[-2] // factor, image.shape[-1] // factor

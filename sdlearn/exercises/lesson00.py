"""Checks for the exercises of lesson 00, the tour."""

from __future__ import annotations

from functools import lru_cache
from numbers import Real
from types import SimpleNamespace

import numpy as np
import torch

from sdlearn.exercises import Failed, exercise

PROMPT, NEGATIVE_PROMPT = "a photo of a shoe", "a photo of a sneaker"
N_PICTURES, STEPS, SEED = 16, 25, 3          # the setting of the lesson's negative-prompt table
SETTINGS = ("guidance_scale", "guidance_rescale")
MIN_REALISTIC = 7                            # of the 16 pictures; the default scale, 7.5, gives 3


@lru_cache(maxsize=1)
def _pipe():
    from sdlearn import pipelines
    return pipelines.load(pipelines.SHIPPED_TEXT2IMAGE)


@lru_cache(maxsize=16)
def _judge_setting(guidance_scale: float, guidance_rescale: float) -> SimpleNamespace:
    """Sneakers, realistic pictures and burnt-out pixels among the 16 pictures the lesson's table draws."""
    from sdlearn.data import FASHION_CLASSES
    from sdlearn.metrics import SATURATION_LEVEL, classify, realism, shipped_classifier

    pipe = _pipe()
    pictures = pipe([PROMPT] * N_PICTURES, negative_prompt=[NEGATIVE_PROMPT] * N_PICTURES, num_inference_steps=STEPS,
                    generator=torch.Generator(pipe.device).manual_seed(SEED), guidance_scale=guidance_scale,
                    guidance_rescale=guidance_rescale).images
    pixels = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255) for im in pictures])
    garments = pixels[:, None, 2:30, 2:30]                                  # the 28x28 centre, as in the lesson
    probs, _ = classify(shipped_classifier(), garments)
    found = [FASHION_CLASSES[i] for i in probs.argmax(-1)]
    return SimpleNamespace(sneakers=found.count("Sneaker"), realistic=int(realism(garments).realistic.sum()),
                           burnt=(garments >= SATURATION_LEVEL).float().mean().item())


@exercise("00.1", "a guidance setting for a negative prompt")
def check_negative_prompt_settings(negative_prompt_settings):
    settings = negative_prompt_settings()
    if not isinstance(settings, dict):
        raise Failed("return a dictionary of keyword arguments for the pipeline, such as {'guidance_scale': 5.0}.")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise Failed(f"only guidance_scale and guidance_rescale are yours to choose; the prompt, the negative prompt, "
                     f"the seed and the 25 steps are fixed. Remove {', '.join(map(repr, unknown))}.")
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
            raise Failed(f"{name} should be a number, got {value!r}.")
    scale = float(settings.get("guidance_scale", 7.5))
    rescale = float(settings.get("guidance_rescale", 0.0))
    if not 0 <= rescale <= 1:
        raise Failed(f"guidance_rescale is a fraction between 0 and 1, got {rescale}.")
    if not 0 < scale <= 30:
        raise Failed(f"pick a guidance_scale between 1 and about 15 (the lesson tried 1 to 12), got {scale}.")
    result = _judge_setting(scale, rescale)
    if scale <= 1 and result.sneakers:
        raise Failed(f"at guidance_scale {scale:g} the pipeline makes one prediction, the prompt's, and never looks "
                     f"at the negative prompt: {result.sneakers} of the 16 pictures are sneakers.")
    if result.sneakers:
        what = "is a sneaker" if result.sneakers == 1 else "are sneakers"
        raise Failed(f"{result.sneakers} of the 16 pictures {what}: the push away from the negative prompt is too "
                     "weak. Raise the guidance scale.")
    if result.realistic < MIN_REALISTIC:
        raise Failed(f"no sneakers, but only {result.realistic} of the 16 pictures pass the realism judge "
                     f"({result.burnt:.1%} of their pixels burnt out): guidance overshoots. Lower the scale "
                     "(or try guidance_rescale).")
    return f"no sneakers, {result.realistic} of 16 judged realistic, {result.burnt:.1%} of the pixels burnt out."


@lru_cache(maxsize=16)
def _unet_images(n_prompts: int, steps: int, guidance_scale: float) -> int:
    """Measured: the number of images the U-Net processes during one call of the pipeline."""
    pipe = _pipe()
    batch_sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        pipe(["a photo of a bag"] * n_prompts, num_inference_steps=steps, guidance_scale=guidance_scale,
             generator=torch.Generator(pipe.device).manual_seed(0))
    finally:
        handle.remove()
    return sum(batch_sizes)


@exercise("00.2", "what guidance costs")
def check_unet_images(unet_images):
    pipe = _pipe()
    for n_prompts, steps, scale in [(2, 3, 7.5), (1, 2, 1.0), (3, 2, 2.0)]:
        got = unet_images(pipe, n_prompts, steps, scale)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, Real) or got != int(got):
            raise Failed(f"return a whole number of images, got {got!r}.")
        expected = _unet_images(n_prompts, steps, scale)
        if got == expected:
            continue
        setting = f"for {n_prompts} prompt(s), {steps} steps and guidance_scale {scale:g}"
        if got == steps:
            raise Failed(f"{setting} you return {got}, the number of U-Net calls; count the images in each call's "
                         "batch (args[0].shape[0] in a forward pre-hook).")
        if scale > 1 and got == n_prompts * steps:
            raise Failed(f"{setting} the U-Net processes {expected} images, not {got}: with guidance it predicts the "
                         "noise with the prompt and without it, one batch of twice the pictures per step.")
        if scale <= 1 and got == 2 * n_prompts * steps:
            raise Failed(f"{setting} the U-Net processes {expected} images, not {got}: at guidance_scale 1 there is "
                         "nothing to guide, and the pipeline skips the prediction without the prompt.")
        raise Failed(f"{setting} the U-Net processes {expected} images; you return {got}. Measure it: count the "
                     "batch sizes the U-Net receives during one call of the pipeline.")
    return "guidance doubles the U-Net's work at every step, and guidance_scale 1 switches it off."


def _sd15_vae_config():
    """Stable Diffusion 1.5's autoencoder configuration (its vae/config.json), without the weights."""
    return SimpleNamespace(block_out_channels=[128, 256, 512, 512], latent_channels=4, in_channels=3,
                           out_channels=3, sample_size=512, scaling_factor=0.18215)


@exercise("00.3", "the latent shape")
def check_latent_shape(latent_shape):
    ours = _pipe().vae.config
    got = latent_shape(ours, 32, 32)
    if got is None or len(tuple(got)) != 3:
        raise Failed("return three numbers: (channels, height, width) of the latents.")
    got = tuple(int(v) for v in got)
    if got[0] != ours.latent_channels:
        raise Failed(f"the latents have vae_config.latent_channels = {ours.latent_channels} channels, not "
                     f"{got[0]} (in_channels is the picture's).")
    if got == (4, 4, 4):
        sd = tuple(int(v) for v in latent_shape(_sd15_vae_config(), 512, 512))
        if sd == (4, 32, 32):
            raise Failed("the last block does not halve the size: the factor is 2 ** (number of blocks - 1).")
        raise Failed("(4, 4, 4) is what a factor of 8 gives: that is Stable Diffusion's autoencoder, which "
                     "halves the size three times. Compute the factor from vae_config.block_out_channels.")
    if got != (4, 8, 8):
        raise Failed(f"our autoencoder turns 32x32 pictures into 4x8x8 latents, got {got}.")
    sd = latent_shape(_sd15_vae_config(), 512, 512)
    if tuple(int(v) for v in sd) != (4, 64, 64):
        raise Failed(f"right for ours, but Stable Diffusion 1.5's autoencoder gives 4x64x64 latents for 512x512 "
                     f"pictures, got {tuple(sd)}: read the numbers from the config you are given.")
    wide = tuple(int(v) for v in latent_shape(ours, 32, 64))
    if wide != (4, 8, 16):
        raise Failed(f"for a 32x64 picture expect (4, 8, 16), got {wide}: height first, then width.")
    return "4x8x8 for our 32x32 pictures, 4x64x64 for Stable Diffusion's 512x512 (48 times fewer numbers)."

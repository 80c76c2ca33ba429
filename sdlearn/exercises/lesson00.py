"""Checks for the exercises of lesson 00, the tour."""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import torch

from sdlearn.exercises import Failed, exercise


@lru_cache(maxsize=1)
def _pipe():
    from sdlearn import pipelines
    return pipelines.load(pipelines.SHIPPED_TEXT2IMAGE)


@exercise("00.1", "seeded images")
def check_seeded_images(seeded_images):
    pipe = _pipe()
    first = seeded_images(pipe, "a photo of a bag", 2, 5, 3)
    if isinstance(first, list):
        raise Failed("you returned a list (of PIL images?): ask the pipeline for output_type=\"pt\" and return "
                     "its .images, a tensor.")
    if not isinstance(first, torch.Tensor):
        raise Failed("return the pipeline's images as a tensor: pipe(..., output_type=\"pt\").images.")
    if tuple(first.shape) != (2, 1, 32, 32):
        raise Failed(f"for n=2 the shipped pipeline gives a tensor of shape (2, 1, 32, 32), got {tuple(first.shape)}; "
                     "pass the prompt once per image ([prompt] * n).")
    again = seeded_images(pipe, "a photo of a bag", 2, 5, 3)
    if not torch.equal(first, again):
        raise Failed("two calls with the same seed gave different images: make a new generator for each call, "
                     "torch.Generator(pipe.device).manual_seed(seed), and pass it as generator=.")
    other = seeded_images(pipe, "a photo of a bag", 2, 6, 3)
    if torch.equal(first, other):
        raise Failed("seeds 5 and 6 gave the same images: seed the generator with the seed you are given.")
    if torch.equal(first[0], first[1]):
        raise Failed("both images are the same: give the pipeline one generator for the whole batch, not a "
                     "freshly seeded one per image.")
    expected = pipe(["a photo of a bag"] * 2, num_inference_steps=3, output_type="pt",
                    generator=torch.Generator(pipe.device).manual_seed(5)).images
    if not torch.allclose(first, expected, atol=1e-5):
        raise Failed("the images differ from pipe([prompt] * n, num_inference_steps=steps, generator=...) with "
                     "the same seed: did you use the steps you were given and the default guidance?")
    return "the same seed gives the same images; another seed gives others."


@exercise("00.2", "parameters per part")
def check_parameters_per_part(parameters_per_part):
    pipe = _pipe()
    got = parameters_per_part(pipe)
    if not isinstance(got, dict):
        raise Failed("return a dictionary such as {'unet': ..., 'text_encoder': ..., 'vae': ...}.")
    expected = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
                for name in ("unet", "text_encoder", "vae")}
    missing = sorted(set(expected) - set(got))
    if missing:
        raise Failed(f"the dictionary has no entry for {', '.join(missing)}.")
    for name, count in expected.items():
        value = got[name]
        if value == len(list(getattr(pipe, name).parameters())):
            raise Failed(f"{name}: {value} is the number of parameter tensors; add up their sizes, p.numel().")
        if value != count:
            raise Failed(f"{name}: expected {count:,} parameters, got {value!r}.")
    return ", ".join(f"{name} {count:,}" for name, count in expected.items()) + "."


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

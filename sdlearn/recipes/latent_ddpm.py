"""The DDPM recipe on the shipped autoencoder's latents (4x8x8) instead of pixels (1x32x32)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.data import fashion_for_diffusion
from sdlearn.models.autoencoder import decode_latents, encode_dataset
from sdlearn.models.unet import UNetConfig
from sdlearn.recipes.ddpm import DDPMRecipe, train_denoiser


@dataclass
class LatentDDPMRecipe(DDPMRecipe):
    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
        attention_levels=(False, True), mid_attention=True, attention_head_dim=32, norm_num_groups=8))
    autoencoder: str = "vae_fashion"           # shipped weights that encode the training images


def training_latents(vae, flip: bool) -> tuple[torch.Tensor, float]:
    """The training images' scaled latents (and their mirror images' with `flip`), and the seconds it took."""
    images, _ = fashion_for_diffusion("train")
    started = time.perf_counter()
    latents = encode_dataset(vae, images)
    if flip:                        # a flipped latent is not the latent of the flipped image: encode those too
        latents = torch.cat([latents, encode_dataset(vae, images.flip(-1))])
    return latents, time.perf_counter() - started


def run_latent_ddpm(recipe: LatentDDPMRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
                    stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    vae = weights.load(recipe.autoencoder)
    latents, encode_seconds = training_latents(vae, recipe.flip)
    return train_denoiser(recipe, latents, out, checkpoint_dir, progress, stop_after, name="latent_ddpm",
                          flip=False, sample_shape=tuple(latents.shape[1:]), clip_sample=False,
                          decode=partial(decode_latents, vae),
                          extra_info={"encode_seconds": round(encode_seconds, 1), "latents": len(latents),
                                      "autoencoder": recipe.autoencoder},
                          dtype=torch.float16)         # stored in half precision: half the file

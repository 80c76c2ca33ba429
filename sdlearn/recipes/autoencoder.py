"""The latent autoencoder: diffusers' AutoencoderKL from 1x32x32 Fashion-MNIST images to 4x8x8 latents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sdlearn.data import fashion_for_diffusion
from sdlearn.models.autoencoder import compute_scaling_factor, latent_autoencoder_config
from sdlearn.recipes.common import finish_run
from sdlearn.training import TrainConfig, train


@dataclass
class AutoencoderRecipe:
    vae: dict = field(default_factory=lambda: latent_autoencoder_config())
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    kl_weight: float = 1e-5          # per image number; small: latents stay informative, yet bounded and smooth


def run_autoencoder(recipe: AutoencoderRecipe, out: Path, checkpoint_dir: Path | None = None,
                    progress: bool = True, stop_after: int | None = None) -> dict:
    from diffusers import AutoencoderKL

    from sdlearn.metrics import psnr, ssim

    torch.manual_seed(recipe.train.seed)
    images, _ = fashion_for_diffusion("train")
    test_images, _ = fashion_for_diffusion("test")
    vae = AutoencoderKL(**recipe.vae)

    def loss_fn(m, x, generator):
        posterior = m.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device, posterior.mean.dtype)
        z = posterior.mean + posterior.std * noise                    # the reparameterisation trick
        reconstruction = m.decode(z).sample
        return F.mse_loss(reconstruction.float(), x) + recipe.kl_weight * posterior.kl().float().mean() / x[0].numel()

    def evaluate(final) -> dict:
        """Fix the scaling factor, then measure reconstructions of the test set."""
        factor = compute_scaling_factor(final, images[:10000])
        final.register_to_config(scaling_factor=factor)
        with torch.no_grad():
            rec = torch.cat([final(test_images[i:i + 500]).sample for i in range(0, len(test_images), 500)])
        crop = (slice(None), slice(None), slice(2, 30), slice(2, 30))     # judge the 28x28 image, not the padding
        return {"scaling_factor": factor, "test_psnr": float(psnr(rec[crop], test_images[crop]).mean()),
                "test_ssim": float(ssim(rec[crop], test_images[crop]).mean())}

    extra = {"recipe": "autoencoder", "vae": json.loads(json.dumps(recipe.vae, default=list)),
             "kl_weight": recipe.kl_weight}
    result = train(vae, loss_fn, images, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    return finish_run(result, out, "autoencoder", recipe, evaluate=evaluate)

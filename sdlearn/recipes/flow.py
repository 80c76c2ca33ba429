"""A latent flow-matching model: `ldm_fashion`'s U-Net, data and budget, trained on straight paths.

The same 4x8x8 latents of `vae_fashion`, the same U-Net and the same training settings as the
latent DDPM (3,600 steps of 128, AdamW, cosine learning rate, EMA), so that the two differ only
in what they learn: the velocity noise - x0 of the straight path x_t = (1 - t) x0 + t noise
(`sdlearn.losses.flow_matching_loss`, logit-normal times as SD3), instead of v on DDPM's cosine
schedule. Its record holds the `FlowMatchEulerDiscreteScheduler` config it is sampled with.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.losses import flow_matching_loss
from sdlearn.models.autoencoder import decode_latents
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.recipes.common import finish_run
from sdlearn.recipes.latent_ddpm import LatentDDPMRecipe, training_latents
from sdlearn.flow import FLOW_SCHEDULER
from sdlearn.training import TrainConfig, train


@dataclass
class FlowRecipe:
    model: UNetConfig = field(default_factory=lambda: LatentDDPMRecipe().model)
    train: TrainConfig = field(default_factory=lambda: LatentDDPMRecipe().train)
    autoencoder: str = "vae_fashion"           # shipped weights that encode the training images
    flip: bool = True                          # the mirror images' latents too, as ldm_fashion
    time_sampling: str = "logit_normal"        # how training times t are drawn (sdlearn.losses.flow_matching_loss)
    shift: float = 1.0                         # the sampler's timestep shift (SD3 uses 3.0 at 1024 pixels)
    num_train_timesteps: int = 1000            # the network sees t * num_train_timesteps

    def scheduler_config(self) -> dict:
        """The diffusers scheduler config the model is sampled with (stored in its record)."""
        return {"_class_name": FLOW_SCHEDULER, "num_train_timesteps": self.num_train_timesteps, "shift": self.shift}


def run_flow(recipe: FlowRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    vae = weights.load(recipe.autoencoder)
    latents, encode_seconds = training_latents(vae, recipe.flip)
    model = UNet(recipe.model)
    snapshots = {}
    started = time.perf_counter()

    def loss_fn(m, x0, generator):
        return flow_matching_loss(m, x0, generator, num_train_timesteps=recipe.num_train_timesteps,
                                  time_sampling=recipe.time_sampling)

    def snapshot(ema_model, step, directory):
        snapshots[step] = round(time.perf_counter() - started)
        if directory is not None:
            save_flow_grid(ema_model, recipe, Path(directory) / f"samples-{step:07d}.png", title=f"step {step}",
                           decode=partial(decode_latents, vae))

    extra = {"recipe": "flow", "time_sampling": recipe.time_sampling, "model": asdict(recipe.model)}
    result = train(model, loss_fn, latents, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   sample_fn=snapshot, progress=progress, stop_after=stop_after)
    return finish_run(result, out, "flow", recipe, dtype=torch.float16,
                      extra={"snapshot_seconds": snapshots, "scheduler": recipe.scheduler_config(),
                             "encode_seconds": round(encode_seconds, 1), "latents": len(latents),
                             "autoencoder": recipe.autoencoder})


@torch.no_grad()
def save_flow_grid(model, recipe: FlowRecipe, path: Path, title: str = "", decode=None) -> None:
    """Sixteen samples (25 Euler steps, a fixed generator) saved as a PNG: training progress at a glance."""
    from sdlearn.plotting import save_image_grid
    from sdlearn.flow import make_flow_schedule, sample_flow_euler

    was_training = model.training
    model.eval()
    x = torch.randn(16, recipe.model.in_channels, recipe.model.sample_size, recipe.model.sample_size,
                    generator=torch.Generator().manual_seed(0)).to(next(model.parameters()).device)
    latents = sample_flow_euler(model, x, make_flow_schedule(25, shift=recipe.shift))
    model.train(was_training)
    save_image_grid(decode(latents) if decode is not None else latents, path, title=title)

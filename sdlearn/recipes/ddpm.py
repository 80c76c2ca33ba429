"""The pixel-space DDPM on Fashion-MNIST (32x32), its baseline, and the training both latent recipes share."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.data import fashion_for_diffusion, random_hflip
from sdlearn.losses import diffusion_loss
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.recipes.common import finish_run
from sdlearn.training import TrainConfig, train
from sdlearn.weights import NoiseSchedule


@dataclass
class DDPMRecipe:
    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        block_out_channels=(16, 32, 64, 128), layers_per_block=1,
        attention_levels=(False, False, False, True), mid_attention=True, attention_head_dim=32,
        norm_num_groups=8))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3600, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=200, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, sample_every=900, checkpoint_every=600))
    beta_schedule: str = "squaredcos_cap_v2"   # improved DDPM's cosine schedule
    prediction_type: str = "v_prediction"      # predict v; stable at both ends of the schedule
    snr_gamma: float | None = 5.0              # Min-SNR loss weighting
    flip: bool = True                          # random horizontal flips of the training images
    num_train_timesteps: int = 1000            # T, the length of the training schedule

    def noise_schedule(self) -> NoiseSchedule:
        """The noise schedule this recipe trains with (and stores with the weights)."""
        return NoiseSchedule(self.beta_schedule, self.prediction_type, self.num_train_timesteps)


def plain_ddpm_recipe() -> DDPMRecipe:
    """The baseline the shipped recipe is compared with: DDPM's own choices."""
    return DDPMRecipe(
        model=UNetConfig(block_out_channels=(16, 32, 64, 128), layers_per_block=1,
                         attention_levels=(False, False, False, True), mid_attention=True,
                         attention_head_dim=32, norm_num_groups=8),
        train=TrainConfig(steps=3600, batch_size=128, lr=2e-3, lr_schedule="constant", ema_decay=0.995,
                          ema_warmup=False, grad_clip=1.0, mixed_precision="auto", seed=0, sample_every=900,
                          checkpoint_every=600),
        beta_schedule="linear", prediction_type="epsilon", snr_gamma=None, flip=False)


def run_ddpm(recipe: DDPMRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, _ = fashion_for_diffusion("train")
    return train_denoiser(recipe, images, out, checkpoint_dir, progress, stop_after, name="ddpm",
                          flip=recipe.flip, sample_shape=(1, 32, 32), clip_sample=True, decode=None,
                          dtype=torch.float16)         # stored in half precision, as ddpm_fashion is shipped


def train_denoiser(recipe: DDPMRecipe, data: torch.Tensor, out: Path, checkpoint_dir, progress, stop_after, *,
                   name: str, flip: bool, sample_shape: tuple, clip_sample: bool, decode, extra_info=None,
                   dtype: torch.dtype | None = None) -> dict:
    """The DDPM training shared by the pixel and the latent recipes: `data` is what the U-Net denoises.

    Every `recipe.train.sample_every` steps a snapshot of the EMA weights and a grid of its
    samples go to the checkpoint directory, with the time it took to get there.
    """
    schedule = recipe.noise_schedule()
    alphas_cumprod = schedule.alphas_cumprod
    model = UNet(recipe.model)
    snapshots = {}

    def loss_fn(m, x0, generator):
        if flip:
            x0 = random_hflip(x0, generator)
        return diffusion_loss(m, x0, alphas_cumprod, generator, prediction_type=recipe.prediction_type,
                              snr_gamma=recipe.snr_gamma)

    started = time.perf_counter()

    def snapshot(ema_model, step, directory):
        snapshots[step] = round(time.perf_counter() - started)
        if directory is not None:
            save_sample_grid(ema_model, schedule, Path(directory) / f"samples-{step:07d}.png", title=f"step {step}",
                             shape=sample_shape, clip_sample=clip_sample, decode=decode)
            weights.save(ema_model, Path(directory) / f"snapshot-{step:07d}.safetensors",
                         {"step": step, "train_seconds": snapshots[step], **schedule.record()})

    extra = {"recipe": name, "beta_schedule": recipe.beta_schedule, "prediction_type": recipe.prediction_type,
             "snr_gamma": recipe.snr_gamma, "flip": recipe.flip, "model": asdict(recipe.model)}
    result = train(model, loss_fn, data, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   sample_fn=snapshot, progress=progress, stop_after=stop_after)
    return finish_run(result, out, name, recipe, dtype=dtype,
                      extra={"snapshot_seconds": snapshots, **schedule.record(), **(extra_info or {})})


def save_sample_grid(model, schedule: NoiseSchedule, path: Path, title: str = "", shape=(1, 32, 32),
                     clip_sample: bool = True, decode=None) -> None:
    """Sixteen samples (25 DDIM steps, a fixed generator) saved as a PNG: training progress at a glance."""
    from sdlearn.plotting import save_image_grid
    from sdlearn.samplers import generate

    was_training = model.training
    model.eval()
    images = generate(model, 16, alphas_cumprod=schedule.alphas_cumprod, num_inference_steps=25,
                      prediction_type=schedule.prediction_type, clip_sample=clip_sample,
                      generator=torch.Generator().manual_seed(0), shape=shape,
                      device=next(model.parameters()).device)
    model.train(was_training)
    if decode is not None:
        images = decode(images)
    save_image_grid(images, path, title=title)

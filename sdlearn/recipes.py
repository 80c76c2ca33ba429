"""Training recipes: the data, model, loss and settings behind each shipped model.

A recipe is a dataclass of settings plus a `run` function; `python -m sdlearn.train NAME`
runs it (see `sdlearn.train`). The shipped weights in `sdlearn/weights/` were made by these.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sdlearn import weights
from sdlearn.data import load_fashion_mnist
from sdlearn.losses import classification_loss, diffusion_loss
from sdlearn.models.autoencoder import latent_autoencoder_config
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier, accuracy
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas
from sdlearn.training import TrainConfig, train


def fashion_for_diffusion(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST padded to 32x32 and scaled to [-1, 1] (background -1), with labels."""
    images, labels = load_fashion_mnist(split)
    images = F.pad(images, (2, 2, 2, 2))                # (N, 1, 32, 32): 32 divides by 2 three times
    return images * 2 - 1, labels


def to_classifier_range(images: torch.Tensor) -> torch.Tensor:
    """Undo `fashion_for_diffusion`: crop the 28x28 centre and map [-1, 1] back to [0, 1]."""
    return ((images[..., 2:30, 2:30] + 1) / 2).clamp(0, 1)


# --------------------------------------------------------------------------- classifier

@dataclass
class ClassifierRecipe:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(channels=32, hidden=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=4000, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="no", seed=0))
    flip: bool = True                 # random horizontal flips: a flipped shoe is still a shoe


def run_classifier(recipe: ClassifierRecipe, out: Path, checkpoint_dir: Path | None = None,
                   progress: bool = True) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    model = SmallClassifier(recipe.model)

    def loss_fn(m, batch, generator):
        return classification_loss(m, batch[0], batch[1], generator, flip=recipe.flip)

    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir,
                   extra={"recipe": "classifier", "flip": recipe.flip, "model": asdict(recipe.model)},
                   progress=progress)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": "python -m sdlearn.train classifier", "train_seconds": round(result.seconds),
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": _jsonable(recipe)}
    if result.is_main_process:          # under `accelerate launch`, one process evaluates and writes
        info["test_accuracy"] = accuracy(final, test_images, test_labels)
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"})
    return info


# --------------------------------------------------------------------------- DDPM

@dataclass
class DDPMRecipe:
    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        block_out_channels=(16, 32, 64, 128), layers_per_block=1,
        attention_levels=(False, False, False, True), mid_attention=True, attention_head_dim=32,
        norm_num_groups=8))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3600, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=200, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="bf16", seed=0, sample_every=900, checkpoint_every=600))
    beta_schedule: str = "squaredcos_cap_v2"   # improved DDPM's cosine schedule
    prediction_type: str = "v_prediction"      # predict v; stable at both ends of the schedule
    snr_gamma: float | None = 5.0              # Min-SNR loss weighting
    flip: bool = True                          # random horizontal flips of the training images


def plain_ddpm_recipe() -> DDPMRecipe:
    """The baseline the shipped recipe is compared with: DDPM's own choices."""
    return DDPMRecipe(
        model=UNetConfig(block_out_channels=(16, 32, 64, 128), layers_per_block=1,
                         attention_levels=(False, False, False, True), mid_attention=True,
                         attention_head_dim=32, norm_num_groups=8),
        train=TrainConfig(steps=3600, batch_size=128, lr=2e-3, lr_schedule="constant", ema_decay=0.995,
                          ema_warmup=False, grad_clip=1.0, mixed_precision="bf16", seed=0, sample_every=900,
                          checkpoint_every=600),
        beta_schedule="linear", prediction_type="epsilon", snr_gamma=None, flip=False)


def ddpm_alphas_cumprod(recipe: DDPMRecipe) -> torch.Tensor:
    return alphas_cumprod_from_betas(make_betas(recipe.beta_schedule, 1000))


def run_ddpm(recipe: DDPMRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, _ = fashion_for_diffusion("train")
    alphas_cumprod = ddpm_alphas_cumprod(recipe)
    model = UNet(recipe.model)
    snapshots = {}

    def loss_fn(m, x0, generator):
        if recipe.flip:
            mask = torch.rand(x0.shape[0], generator=generator) < 0.5
            x0 = torch.where(mask[:, None, None, None].to(x0.device), x0.flip(-1), x0)
        return diffusion_loss(m, x0, alphas_cumprod, generator, prediction_type=recipe.prediction_type,
                              snr_gamma=recipe.snr_gamma)

    started = time.perf_counter()

    def snapshot(ema_model, step, directory):
        snapshots[step] = round(time.perf_counter() - started)
        if directory is not None:
            _save_sample_grid(ema_model, alphas_cumprod, recipe.prediction_type,
                              Path(directory) / f"samples-{step:07d}.png", title=f"step {step}")
            weights.save(ema_model, Path(directory) / f"snapshot-{step:07d}.safetensors",
                         {"step": step, "train_seconds": snapshots[step], "beta_schedule": recipe.beta_schedule,
                          "prediction_type": recipe.prediction_type})

    extra = {"recipe": "ddpm", "beta_schedule": recipe.beta_schedule, "prediction_type": recipe.prediction_type,
             "snr_gamma": recipe.snr_gamma, "flip": recipe.flip, "model": asdict(recipe.model)}
    result = train(model, loss_fn, images, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   sample_fn=snapshot, progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": "python -m sdlearn.train ddpm", "train_seconds": round(result.seconds),
            "images_per_second": round(result.images_per_second), "snapshot_seconds": snapshots,
            "beta_schedule": recipe.beta_schedule, "prediction_type": recipe.prediction_type,
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": _jsonable(recipe),
            "final_loss": sum(result.losses[-100:]) / len(result.losses[-100:])}
    if result.is_main_process:          # under `accelerate launch`, one process writes the weights
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"})
    return info


# --------------------------------------------------------------------------- latent autoencoder

@dataclass
class AutoencoderRecipe:
    vae: dict = field(default_factory=lambda: latent_autoencoder_config())
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="bf16", seed=0, checkpoint_every=500))
    kl_weight: float = 1e-5          # per image number; small: latents stay informative, yet bounded and smooth


def run_autoencoder(recipe: AutoencoderRecipe, out: Path, checkpoint_dir: Path | None = None,
                    progress: bool = True, stop_after: int | None = None) -> dict:
    from diffusers import AutoencoderKL

    from sdlearn.models.autoencoder import compute_scaling_factor, psnr, ssim

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

    extra = {"recipe": "autoencoder", "vae": json.loads(json.dumps(recipe.vae, default=list)),
             "kl_weight": recipe.kl_weight}
    result = train(vae, loss_fn, images, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    final.eval()
    info = {"recipe": "python -m sdlearn.train autoencoder", "train_seconds": round(result.seconds),
            "images_per_second": round(result.images_per_second), "num_processes": result.num_processes,
            "process_index": result.process_index, "checksum": result.checksum, "settings": _jsonable(recipe)}
    if result.is_main_process:
        factor = compute_scaling_factor(final, images[:10000])
        final.register_to_config(scaling_factor=factor)
        with torch.no_grad():
            rec = torch.cat([final(test_images[i:i + 500]).sample for i in range(0, len(test_images), 500)])
        crop = (slice(None), slice(None), slice(2, 30), slice(2, 30))     # judge the 28x28 image, not the padding
        info.update(scaling_factor=factor, test_psnr=float(psnr(rec[crop], test_images[crop]).mean()),
                    test_ssim=float(ssim(rec[crop], test_images[crop]).mean()))
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"})
    return info


def _save_sample_grid(model, alphas_cumprod, prediction_type, path: Path, title: str = "") -> None:
    """Sixteen samples (25 DDIM steps, fixed seed) saved as a PNG: training progress at a glance."""
    import matplotlib.pyplot as plt

    from sdlearn.plotting import show_images
    from sdlearn.samplers import generate
    from sdlearn.utils import atomic_path

    was_training = model.training
    model.eval()
    images = generate(model, 16, alphas_cumprod=alphas_cumprod, num_inference_steps=25,
                      prediction_type=prediction_type, clip_sample=True, seed=0, device=next(model.parameters()).device)
    model.train(was_training)
    fig = show_images(images, ncols=8, vmin=-1, vmax=1, imsize=1.0, suptitle=title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _jsonable(recipe) -> dict:
    return json.loads(json.dumps(asdict(recipe), default=str))


RECIPES = {
    "classifier": (ClassifierRecipe, run_classifier, "the Fashion-MNIST classifier used by sdlearn.metrics"),
    "ddpm": (DDPMRecipe, run_ddpm, "the pixel-space DDPM on Fashion-MNIST (32x32)"),
    "ddpm_plain": (plain_ddpm_recipe, run_ddpm, "the baseline DDPM recipe the shipped one is compared with"),
    "autoencoder": (AutoencoderRecipe, run_autoencoder, "the latent autoencoder (AutoencoderKL, 1x32x32 to 4x8x8)"),
}

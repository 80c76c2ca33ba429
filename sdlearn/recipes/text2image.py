"""The text-to-image model: a latent U-Net with cross-attention, written out as a diffusers pipeline folder."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.data import clip_caption_table, draw_captions, fashion_for_diffusion
from sdlearn.losses import diffusion_loss
from sdlearn.models.autoencoder import encode_dataset
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.recipes.common import finish_run
from sdlearn.recipes.ddpm import DDPMRecipe
from sdlearn.training import TrainConfig, train


@dataclass
class Text2ImageRecipe:
    """A latent U-Net with cross-attention, conditioned on the frozen text encoder of `clip_fashion`."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
        attention_levels=(True, True), mid_attention=True, attention_head_dim=32, norm_num_groups=8,
        cross_attention_dim=64))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3600, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=200, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    snr_gamma: float | None = 5.0
    superclass_p: float = 0.3        # the captions of the CLIP recipe
    mirror_p: float = 0.5
    say_direction_p: float = 0.5
    upside_down_p: float = 0.1
    drop_caption_p: float = 0.1      # the empty caption instead: the unconditional model of guidance
    autoencoder: str = "vae_fashion"
    text_encoder: str = "clip_fashion"
    num_train_timesteps: int = 1000

    noise_schedule = DDPMRecipe.noise_schedule


def run_text2image(recipe: Text2ImageRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
                   stop_after: int | None = None) -> dict:
    """Train the text-to-image U-Net and write a complete diffusers folder (see `sdlearn.pipelines`)."""
    from sdlearn.models.conversion import to_diffusers
    from sdlearn.pipelines import write_pipeline
    from sdlearn.tokenizer import tokenize

    torch.manual_seed(recipe.train.seed)
    vae = weights.load(recipe.autoencoder)
    clip = weights.load(recipe.text_encoder)
    images, labels = fashion_for_diffusion("train")
    started = time.perf_counter()
    variants = [encode_dataset(vae, images), encode_dataset(vae, images.flip(-1)),         # as is, mirrored,
                encode_dataset(vae, images.flip(-2)), encode_dataset(vae, images.flip(-1).flip(-2))]  # upside down
    captions, lookup = clip_caption_table()
    with torch.no_grad():                          # the text encoder is frozen: encode each caption once
        context = clip.text_features(tokenize(captions + [""]))
    empty = len(captions)
    encode_seconds = time.perf_counter() - started
    schedule = recipe.noise_schedule()
    alphas_cumprod = schedule.alphas_cumprod
    model = UNet(recipe.model)

    def loss_fn(m, batch, generator):
        *z, y = batch
        mirrored, upside_down, index = draw_captions(y, recipe, lookup, generator)
        drop = torch.rand(len(y), generator=generator) < recipe.drop_caption_p
        index = torch.where(drop, torch.full_like(index, empty), index)
        choice = (mirrored.long() + 2 * upside_down.long()).to(y.device)[:, None, None, None]
        x0 = torch.where(choice == 0, z[0], torch.where(choice == 1, z[1], torch.where(choice == 2, z[2], z[3])))
        ctx = context[index].to(x0.device)

        def conditioned(x, t):                     # the U-Net, reading this batch's captions
            return m(x, t, encoder_hidden_states=ctx)

        return diffusion_loss(conditioned, x0, alphas_cumprod, generator,
                              prediction_type=recipe.prediction_type, snr_gamma=recipe.snr_gamma)

    extra = {"recipe": "text2image", "model": asdict(recipe.model), "prediction_type": recipe.prediction_type,
             "beta_schedule": recipe.beta_schedule, "snr_gamma": recipe.snr_gamma,
             "captions": [recipe.superclass_p, recipe.mirror_p, recipe.say_direction_p, recipe.upside_down_p,
                          recipe.drop_caption_p], "autoencoder": recipe.autoencoder,
             "text_encoder": recipe.text_encoder}
    result = train(model, loss_fn, (*variants, labels), recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    folder = out.with_suffix("") if out.suffix == ".safetensors" else out

    def save(final, info):                         # a diffusers folder: U-Net, VAE, text encoder, tokenizer, scheduler
        write_pipeline(folder, unet=to_diffusers(final.float()), vae=vae, text_encoder=clip.text_model,
                       beta_schedule=recipe.beta_schedule, prediction_type=recipe.prediction_type, info=info)

    info = finish_run(result, out, "text2image", recipe, save=save,
                      extra={"encode_seconds": round(encode_seconds, 1), **schedule.record()})
    if result.is_main_process:
        info["folder"] = str(folder)
    return info

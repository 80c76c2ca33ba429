"""The inpainting model: the text-to-image U-Net given 5 more input channels and fine-tuned on random masks.

Stable Diffusion's inpainting model reads 9 channels: the 4 noisy latents, the mask shrunk to
the latents' size (1), and the latents of the image with the masked pixels set to 0 (4). It
starts from the text-to-image U-Net with the weights of the 5 new input channels set to zero,
so that at step 0 it is exactly the text-to-image model (`widen_conv_in`), and learns to read
them: every training image gets a random mask (`sdlearn.masks.random_masks`: rectangles,
ellipses, brush strokes, and a share of masks that cover everything), and the loss is the
text-to-image loss on the whole image. The result is a diffusers folder that
`StableDiffusionInpaintPipeline.from_pretrained` loads; it shares its VAE, text encoder and
tokenizer with `fashion_text2image` on disk.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.data import clip_caption_table, draw_captions, fashion_for_diffusion
from sdlearn.losses import diffusion_loss
from sdlearn.masks import latent_mask, masked_images, random_masks
from sdlearn.models.autoencoder import autoencoder_factor, encode_latents
from sdlearn.models.conversion import from_diffusers
from sdlearn.models.unet import UNet
from sdlearn.recipes.common import finish_run
from sdlearn.recipes.text2image import Text2ImageRecipe
from sdlearn.training import TrainConfig, train

MASK_CHANNELS = 1 + 4          # the mask, and the masked image's latents


def widen_conv_in(model: UNet, extra_channels: int = MASK_CHANNELS) -> UNet:
    """A copy of `model` that reads `extra_channels` more input channels, through zero weights.

    The new channels are appended after the old ones (diffusers' order: latents, mask, masked
    image's latents), and their weights in `conv_in` are zero, so the copy computes exactly what
    `model` computes, whatever is in them, until training changes those weights.
    """
    config = model.config.__class__(**{**asdict(model.config),
                                       "in_channels": model.config.in_channels + extra_channels})
    wide = UNet(config)
    state = model.state_dict()
    weight = state["conv_in.weight"]                                     # (out, in, 3, 3)
    zeros = weight.new_zeros(weight.shape[0], extra_channels, *weight.shape[2:])
    state["conv_in.weight"] = torch.cat([weight, zeros], dim=1)
    wide.load_state_dict(state)
    return wide.to(next(model.parameters()).dtype)


@dataclass
class InpaintingRecipe:
    """Fine-tune `fashion_text2image`'s U-Net, widened to 9 input channels, on randomly masked images."""

    start_from: str = "fashion_text2image"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1600, batch_size=128, lr=5e-4, weight_decay=0.0, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    full_mask_p: float = 0.25        # masks that cover everything: the model still draws from nothing
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    snr_gamma: float | None = 5.0
    superclass_p: float = 0.3        # the captions of the text-to-image recipe
    mirror_p: float = 0.5
    say_direction_p: float = 0.5
    upside_down_p: float = 0.1
    drop_caption_p: float = 0.1
    num_train_timesteps: int = 1000

    noise_schedule = Text2ImageRecipe.noise_schedule


def run_inpainting(recipe: InpaintingRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
                   stop_after: int | None = None) -> dict:
    """Train the 9-channel inpainting U-Net and write a diffusers inpainting folder (see `sdlearn.pipelines`)."""
    from sdlearn.models.conversion import to_diffusers
    from sdlearn.pipelines import write_pipeline
    from sdlearn.text_to_image import encode_prompts

    torch.manual_seed(recipe.train.seed)
    base = weights.load(recipe.start_from)
    vae, text_encoder = base.vae.eval(), base.text_encoder.eval()
    factor = autoencoder_factor(vae)
    images, labels = fashion_for_diffusion("train")
    captions, lookup = clip_caption_table()
    started = time.perf_counter()
    context = encode_prompts(base.tokenizer, text_encoder, captions + [""])  # frozen: each caption once
    encode_seconds = time.perf_counter() - started
    empty = len(captions)
    alphas_cumprod = recipe.noise_schedule().alphas_cumprod
    model = widen_conv_in(from_diffusers(base.unet).float())

    def loss_fn(m, batch, generator):
        x, y = batch
        mirrored, upside_down, index = draw_captions(y, recipe, lookup, generator)
        drop = torch.rand(len(y), generator=generator) < recipe.drop_caption_p
        index = torch.where(drop, torch.full_like(index, empty), index)
        x = torch.where(mirrored[:, None, None, None].to(x.device), x.flip(-1), x)
        x = torch.where(upside_down[:, None, None, None].to(x.device), x.flip(-2), x)
        masks = random_masks(len(x), x.shape[-1], generator=generator, full_p=recipe.full_mask_p).to(x.device)
        with torch.no_grad():                      # the clean and the masked image, through the frozen encoder
            both = encode_latents(vae, torch.cat([x, masked_images(x, masks)]))
        x0, masked = both.chunk(2)
        extra = torch.cat([latent_mask(masks, factor), masked], dim=1)   # (B, 5, h, w)
        ctx = context[index].to(x.device)

        def conditioned(z, t):                     # the U-Net reads the noisy latents, the mask, the masked image
            return m(torch.cat([z, extra.to(z.dtype)], dim=1), t, encoder_hidden_states=ctx)

        return diffusion_loss(conditioned, x0, alphas_cumprod, generator,
                              prediction_type=recipe.prediction_type, snr_gamma=recipe.snr_gamma)

    extra = {"recipe": "inpainting", "start_from": recipe.start_from, "full_mask_p": recipe.full_mask_p,
             "prediction_type": recipe.prediction_type, "beta_schedule": recipe.beta_schedule,
             "snr_gamma": recipe.snr_gamma}
    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    folder = out.with_suffix("") if out.suffix == ".safetensors" else out

    def save(final, info):                         # a diffusers inpainting folder that shares the base's parts
        write_pipeline(folder, unet=to_diffusers(final.float()), vae=vae, text_encoder=text_encoder,
                       beta_schedule=recipe.beta_schedule, prediction_type=recipe.prediction_type, info=info,
                       pipeline="inpaint", share_with=weights.resolve(recipe.start_from))

    info = finish_run(result, out, "inpainting", recipe, save=save,
                      extra={"encode_seconds": round(encode_seconds, 1), **recipe.noise_schedule().record()})
    if result.is_main_process:
        info["folder"] = str(folder)
    return info

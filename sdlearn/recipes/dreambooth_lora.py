"""A DreamBooth LoRA: one bag from Fashion-MNIST's test split, taught to `fashion_text2image` as "sks bag".

The subject is one picture (test image 1375, a bag with a tall strap) in ten copies: five
positions, each also mirrored (`sdlearn.finetune.subject_copies`). The class pictures are 64
bags that the frozen model draws for "a photo of a bag" before training; every step trains on
a batch of subject copies under "a photo of a sks bag" and as many class pictures under "a
photo of a bag", the two losses added (prior preservation, weight 1), as diffusers'
`train_dreambooth_lora.py` does. Only rank-4 LoRA matrices on the U-Net's attention
projections are trained; the result is a `pytorch_lora_weights.safetensors` that
`pipe.load_lora_weights` reads, with a record naming the pipeline it adapts. Lesson 19 trains
the same thing for fewer steps and measures what this run ships.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.data import fashion_for_diffusion
from sdlearn.finetune.dreambooth import check_instance_images, check_prior_loss_weight, class_images, dreambooth_loss
from sdlearn.finetune.dreambooth import subject_copies
from sdlearn.finetune.lora import add_lora, count_parameters, save_lora
from sdlearn.models.autoencoder import encode_latents
from sdlearn.recipes.common import finish_run
from sdlearn.training import TrainConfig, train
from sdlearn.utils import atomic_write


@dataclass
class DreamBoothLoRARecipe:
    """LoRA DreamBooth of one test-split bag on `fashion_text2image`, with prior preservation."""

    base: str = "fashion_text2image"
    subject_index: int = 1375              # in Fashion-MNIST's test split: a bag with a tall strap
    instance_prompt: str = "a photo of a sks bag"
    class_prompt: str = "a photo of a bag"
    num_class_images: int = 64             # drawn once by the frozen model (diffusers' default is 100)
    class_guidance_scale: float = 2.0
    class_inference_steps: int = 10       # as lesson 19 samples
    prior_loss_weight: float = 1.0
    rank: int = 4
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=400, batch_size=4, lr=2e-3, weight_decay=1e-2, grad_clip=1.0, mixed_precision="auto", seed=0,
        checkpoint_every=100))


def subject_images(recipe: DreamBoothLoRARecipe) -> torch.Tensor:
    """The recipe's ten training copies of its subject, (10, 1, 32, 32) in [0, 1]."""
    images, _ = fashion_for_diffusion("test")
    return check_instance_images(subject_copies((images[recipe.subject_index] + 1) / 2))


def run_dreambooth_lora(recipe: DreamBoothLoRARecipe, out: Path, checkpoint_dir: Path | None = None,
                        progress: bool = True, stop_after: int | None = None) -> dict:
    """Train the LoRA and write `out` (without its suffix) as a folder: the LoRA file and its record."""
    from sdlearn.pipelines import load as load_pipeline
    from sdlearn.text_to_image import encode_prompts

    weight = check_prior_loss_weight(recipe.prior_loss_weight)
    torch.manual_seed(recipe.train.seed)
    pipe = load_pipeline(weights.resolve(recipe.base))
    instance = subject_images(recipe)
    started = time.perf_counter()
    prior = class_images(pipe, recipe.class_prompt, recipe.num_class_images,
                         torch.Generator().manual_seed(recipe.train.seed), guidance_scale=recipe.class_guidance_scale,
                         num_inference_steps=recipe.class_inference_steps)
    class_seconds = time.perf_counter() - started
    with torch.no_grad():                      # the frozen autoencoder and text encoder: once, before training
        instance_latents = encode_latents(pipe.vae, instance * 2 - 1)
        class_latents = encode_latents(pipe.vae, prior * 2 - 1)
        instance_context = encode_prompts(pipe.tokenizer, pipe.text_encoder, [recipe.instance_prompt])
        class_context = encode_prompts(pipe.tokenizer, pipe.text_encoder, [recipe.class_prompt])
    # one example is a pair, as in diffusers' DreamBoothDataset: subject copy i % 10 and class picture i
    pairs = (instance_latents[torch.arange(len(class_latents)) % len(instance_latents)], class_latents)
    unet = pipe.unet
    add_lora(unet, rank=recipe.rank, seed=recipe.train.seed)

    def loss_fn(model, batch, generator):
        inst, cls = batch
        return dreambooth_loss(pipe, inst, instance_context, generator, class_latents=cls if weight > 0 else None,
                               class_context=class_context, prior_loss_weight=weight, unet=model)

    extra = {"recipe": "dreambooth_lora", "base": recipe.base, "subject_index": recipe.subject_index,
             "instance_prompt": recipe.instance_prompt, "class_prompt": recipe.class_prompt,
             "num_class_images": recipe.num_class_images, "prior_loss_weight": weight, "rank": recipe.rank}
    result = train(unet, loss_fn, pairs, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    folder = out.with_suffix("") if out.suffix == ".safetensors" else out

    def save(final, info):                     # the LoRA file, then its record
        save_lora(final, folder)
        with atomic_write(folder / weights.PIPELINE_INFO, "w") as handle:
            json.dump(info, handle, indent=1)

    info = finish_run(result, out, "dreambooth_lora", recipe, save=save,
                      extra={**{k: v for k, v in extra.items() if k != "recipe"}, "class_seconds": round(class_seconds, 1),
                             "trainable_parameters": count_parameters(unet, trainable=True)})
    if result.is_main_process:
        info["folder"] = str(folder)
    return info


__all__ = ["DreamBoothLoRARecipe", "run_dreambooth_lora", "subject_images"]

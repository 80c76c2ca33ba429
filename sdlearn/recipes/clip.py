"""The small CLIP: image and text encoders trained on captioned Fashion-MNIST."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdlearn.data import clip_batch, clip_caption_table, fashion_for_diffusion
from sdlearn.losses import contrastive_loss
from sdlearn.models.clip import CLIPConfig, SmallCLIP
from sdlearn.recipes.common import finish_run
from sdlearn.tokenizer import tokenize
from sdlearn.training import TrainConfig, train


@dataclass
class CLIPRecipe:
    model: CLIPConfig = field(default_factory=CLIPConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=256, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), warmup_steps=100,
        lr_schedule="cosine", ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    superclass_p: float = 0.3        # captions that name the superclass ("a shoe") instead of the class
    mirror_p: float = 0.5            # horizontal flips; a mirrored shoe faces right
    say_direction_p: float = 0.5     # a shoe's caption says which way it faces
    upside_down_p: float = 0.1       # vertical flips, always said: "..., upside down"


def run_clip(recipe: CLIPRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    from sdlearn.metrics import evaluate_clip

    torch.manual_seed(recipe.train.seed)
    images, labels = fashion_for_diffusion("train")
    test_images, test_labels = fashion_for_diffusion("test")
    captions, lookup = clip_caption_table()
    caption_ids = tokenize(captions)
    model = SmallCLIP(recipe.model)

    def loss_fn(m, batch, generator):
        x, caption_index = clip_batch(batch[0], batch[1], recipe, lookup, generator)
        unique, inverse = torch.unique(caption_index, return_inverse=True)   # encode each caption once
        text = m.encode_text(caption_ids[unique].to(x.device))[inverse.to(x.device)]
        logits = m.logits(m.encode_image(x), text)
        return contrastive_loss(logits.float(), caption_index.to(x.device))

    def evaluate(final) -> dict:
        return {**evaluate_clip(final, test_images, test_labels), "temperature": 1 / final.logit_scale.exp().item()}

    extra = {"recipe": "clip", "model": asdict(recipe.model),
             "captions": [recipe.superclass_p, recipe.mirror_p, recipe.say_direction_p, recipe.upside_down_p]}
    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    return finish_run(result, out, "clip", recipe, extra={"captions": len(captions)}, evaluate=evaluate,
                      dtype=torch.float16)

"""The Fashion-MNIST classifier that `sdlearn.metrics` judges generated images with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdlearn.data import load_fashion_mnist
from sdlearn.losses import classification_loss
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier, accuracy
from sdlearn.recipes.common import finish_run
from sdlearn.training import TrainConfig, train


@dataclass
class ClassifierRecipe:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(channels=32, hidden=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=4000, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="no", seed=0))
    flip: bool = True                 # random horizontal flips: a flipped shoe is still a shoe


def run_classifier(recipe: ClassifierRecipe, out: Path, checkpoint_dir: Path | None = None,
                   progress: bool = True, stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    model = SmallClassifier(recipe.model)

    def loss_fn(m, batch, generator):
        return classification_loss(m, batch[0], batch[1], generator, flip=recipe.flip)

    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir,
                   extra={"recipe": "classifier", "flip": recipe.flip, "model": asdict(recipe.model)},
                   progress=progress, stop_after=stop_after)
    return finish_run(result, out, "classifier", recipe,
                      evaluate=lambda final: {"test_accuracy": accuracy(final, test_images, test_labels)})

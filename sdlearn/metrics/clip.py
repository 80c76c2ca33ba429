"""How well a CLIP model reads Fashion-MNIST: zero-shot accuracies on held-out images."""

from __future__ import annotations

import torch

from sdlearn.data import FASHION_SUPERCLASSES, SHOE_CLASSES, fashion_caption, superclass_of


@torch.no_grad()
def evaluate_clip(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Zero-shot accuracies on held-out images: classes, superclasses, and which way a shoe faces."""
    from sdlearn.models.clip import zero_shot_classify      # here: it loads transformers, which most users of
                                                            # sdlearn.metrics never need
    model.eval()
    classes = [fashion_caption(c) for c in range(10)]
    result = {"zero_shot_accuracy": (zero_shot_classify(model, images, classes) == labels).float().mean().item()}
    names = list(FASHION_SUPERCLASSES)
    prompts = [fashion_caption(members[0], superclass=True) for members in FASHION_SUPERCLASSES.values()]
    truth = torch.tensor([names.index(superclass_of(int(y))) for y in labels])
    result["superclass_accuracy"] = (zero_shot_classify(model, images, prompts) == truth).float().mean().item()
    shoes = torch.isin(labels, torch.tensor(SHOE_CLASSES))
    shoe_images, shoe_labels = images[shoes], labels[shoes]
    mirrored = torch.arange(len(shoe_labels)) % 2 == 1
    shoe_images = torch.where(mirrored[:, None, None, None], shoe_images.flip(-1), shoe_images)
    correct = 0
    for label in SHOE_CLASSES:                  # for each shoe class: "facing left" or "facing right"?
        mask = shoe_labels == label
        prompts = [f"{fashion_caption(label)} facing left", f"{fashion_caption(label)} facing right"]
        correct += (zero_shot_classify(model, shoe_images[mask], prompts) == mirrored[mask].long()).sum().item()
    result["direction_accuracy"] = correct / len(shoe_labels)
    return result

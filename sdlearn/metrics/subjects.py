"""Judging a model fine-tuned on a few pictures of one subject (lesson 19).

- `subject_distance`: fidelity, how far each picture is from the subject in the shipped
  classifier's feature space: near for the subject moved or mirrored, far for another object
  of the same class;
- `nearest_copy_distance`: memorisation, how close each picture comes to the nearest training
  picture, pixel by pixel (0 is a copy).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def subject_distance(images: torch.Tensor, subject: torch.Tensor, classifier=None) -> torch.Tensor:
    """How far each picture is from one subject in the classifier's feature space (its 128 hidden units).

    `images` (N, 1, 32, 32) and `subject` (1, 32, 32) or (1, 1, 32, 32), in [0, 1], as the
    pipelines make them (the classifier sees the 28x28 inside). The Euclidean distance of the
    penultimate features: small when the classifier sees the same object, whatever the exact
    pixels (a picture shifted by a pixel is near, another bag of the same class is not).
    Returns (N,).
    """
    from sdlearn.metrics import classify, shipped_classifier

    subject = subject.reshape(1, *subject.shape[-3:])
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 32, 32) or tuple(subject.shape[1:]) != (1, 32, 32):
        raise ValueError(f"expected images (N, 1, 32, 32) and a subject (1, 32, 32) in [0, 1], got "
                         f"{tuple(images.shape)} and {tuple(subject.shape)}")
    classifier = shipped_classifier() if classifier is None else classifier
    _, features = classify(classifier, torch.cat([subject, images])[..., 2:30, 2:30].float())
    return (features[1:] - features[0]).norm(dim=1)


def nearest_copy_distance(images: torch.Tensor, copies: torch.Tensor) -> torch.Tensor:
    """For each image (N, C, H, W), the root mean square pixel difference to the nearest of `copies` (M, C, H, W).

    0 is an exact copy of a training picture. Returns (N,).
    """
    if images.ndim != 4 or copies.ndim != 4 or images.shape[1:] != copies.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)} and copies {tuple(copies.shape)} must both be (N, C, H, W) "
                         f"of the same picture size")
    pixels = images[0].numel()
    return torch.cdist(images.flatten(1).double(), copies.flatten(1).double()).min(dim=1).values.float() / pixels ** 0.5


__all__ = ["nearest_copy_distance", "subject_distance"]

"""How good are generated Fashion-MNIST images? Measured with the shipped classifier.

- class histogram and its normalised entropy: 1.0 when all ten classes are equally common,
  0.0 when every image is one class (mode collapse);
- mean confidence: the classifier's average top probability (blurry or broken images get
  low confidence);
- accuracy against the intended labels, for class- or text-conditioned models;
- Fréchet distance between the classifier's features of the samples and of the test set
  (as FID does with Inception features), beside the real-against-real baseline: the
  distance from 2,000 training images to the test set;
- for a text-to-image pipeline, `evaluate_prompt`: accuracy, diversity and saturation of the
  images one prompt makes, at a given guidance scale and negative prompt.

Images go in as (N, 1, 28, 28) in [0, 1] (`sdlearn.recipes.to_classifier_range` converts
the DDPM's 32x32 [-1, 1] images).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import linalg

from sdlearn.data import FASHION_CLASSES, load_fashion_mnist


@torch.no_grad()
def classify(classifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, 10) and penultimate features (N, hidden) of a batch of images."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images (N, 1, 28, 28) in [0, 1], got {tuple(images.shape)}; convert 32x32 "
                         "diffusion samples with sdlearn.recipes.to_classifier_range")
    classifier.eval()
    probs, features = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].float()
        h = classifier.features(batch)
        features.append(h)
        probs.append(classifier.fc2(h).softmax(-1))
    return torch.cat(probs), torch.cat(features)


def normalized_entropy(histogram) -> float:
    """Entropy of a histogram divided by log(number of bins): 1 for uniform, 0 for one bin."""
    counts = np.asarray(histogram, dtype=np.float64)
    p = counts / counts.sum()
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / math.log(len(p)))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussian fits."""
    a = features_a.double().numpy()
    b = features_b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # With fewer samples than feature dimensions a covariance is singular; the square root of
        # the product is still well defined (its small imaginary rounding part is dropped below).
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


@dataclass
class SampleReport:
    n: int
    histogram: list[int]
    entropy: float
    mean_confidence: float
    accuracy: float | None
    frechet: float
    frechet_real: float

    def __repr__(self) -> str:
        lines = [f"{self.n} images",
                 "classes: " + ", ".join(f"{name} {count}" for name, count in zip(FASHION_CLASSES, self.histogram)),
                 f"normalised class entropy {self.entropy:.3f}   mean confidence {self.mean_confidence:.3f}"]
        if self.accuracy is not None:
            lines.append(f"accuracy against intended labels {self.accuracy:.3f}")
        lines.append(f"Fréchet distance to the test set {self.frechet:.2f}   (real training images: {self.frechet_real:.2f})")
        return "\n".join(lines)


@lru_cache(maxsize=4)
def _reference_features(classifier_id: int, classifier) -> tuple[torch.Tensor, float]:
    test_images, _ = load_fashion_mnist("test")
    train_images, _ = load_fashion_mnist("train")
    _, test_features = classify(classifier, test_images)
    generator = torch.Generator().manual_seed(0)
    subset = train_images[torch.randperm(len(train_images), generator=generator)[:2000]]
    _, real_features = classify(classifier, subset)
    return test_features, frechet_distance(real_features, test_features)


@lru_cache(maxsize=1)
def shipped_classifier():
    """The shipped Fashion-MNIST classifier, loaded once per process."""
    from sdlearn.weights import load
    return load("fashion_classifier")


def evaluate_samples(images: torch.Tensor, classifier=None, labels: torch.Tensor | None = None) -> SampleReport:
    """Score generated images (N, 1, 28, 28) in [0, 1] with the shipped (or a given) classifier."""
    if classifier is None:
        classifier = shipped_classifier()
    probs, features = classify(classifier, images)
    predicted = probs.argmax(-1)
    histogram = torch.bincount(predicted, minlength=10).tolist()
    test_features, frechet_real = _reference_features(id(classifier), classifier)
    accuracy = None if labels is None else (predicted == labels).float().mean().item()
    return SampleReport(n=len(images), histogram=histogram, entropy=normalized_entropy(histogram),
                        mean_confidence=probs.max(-1).values.mean().item(), accuracy=accuracy,
                        frechet=frechet_distance(features, test_features), frechet_real=frechet_real)


# --------------------------------------------------------------------------- text-to-image prompts

SATURATION_LEVEL = 0.98      # a pixel at or above this (in [0, 1]) counts as burnt-out white


@dataclass
class PromptReport:
    """What the shipped classifier says about `n` images generated from one prompt."""
    prompt: str
    negative_prompt: str | None
    guidance_scale: float
    n: int
    histogram: list[int]        # images per Fashion-MNIST class
    accuracy: float | None      # fraction classified into the target classes (None without a target)
    mean_confidence: float      # the classifier's average top probability
    diversity: float            # mean pairwise feature distance, relative to real images of the same classes
    saturation: float           # fraction of pixels >= SATURATION_LEVEL
    saturation_real: float      # the same for real images of the same classes
    seconds: float              # time to generate the images
    images: torch.Tensor | None = None    # (n, 1, 32, 32) in [0, 1]; left out of the printed report

    def __repr__(self) -> str:
        guided = f"guidance {self.guidance_scale:g}"
        negative = f", negative {self.negative_prompt!r}" if self.negative_prompt else ""
        counts = ", ".join(f"{name} {c}" for name, c in zip(FASHION_CLASSES, self.histogram) if c)
        accuracy = "" if self.accuracy is None else f"accuracy {self.accuracy:.1%}   "
        return (f"{self.prompt!r} ({guided}{negative}): {self.n} images in {self.seconds:.1f} s\n"
                f"  {accuracy}confidence {self.mean_confidence:.3f}   diversity {self.diversity:.2f}   "
                f"saturated pixels {self.saturation:.2%} (real {self.saturation_real:.2%})\n  classes: {counts}")


def _targets(target) -> list[int] | None:
    if target is None:
        return None
    targets = [int(target)] if isinstance(target, int) else [int(t) for t in target]
    if not targets or any(t < 0 or t > 9 for t in targets):
        raise ValueError(f"target must be a Fashion-MNIST class (0 to 9) or a list of them, got {target!r}")
    return targets


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Average Euclidean distance between two different rows of (N, D) features."""
    if len(features) < 2:
        raise ValueError("diversity needs at least 2 images")
    distances = torch.cdist(features.double(), features.double())
    n = len(features)
    return float(distances.sum() / (n * (n - 1)))


@lru_cache(maxsize=16)
def _real_reference(classifier_id: int, classifier, classes: tuple[int, ...] | None) -> tuple[float, float]:
    """Mean pairwise feature distance and saturation of up to 1,000 test images of `classes`."""
    images, labels = load_fashion_mnist("test")
    if classes is not None:
        images = images[torch.isin(labels, torch.tensor(classes))]
    images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:1000]]
    _, features = classify(classifier, images)
    return mean_pairwise_distance(features), (images >= SATURATION_LEVEL).float().mean().item()


def evaluate_prompt(pipe, prompt: str, target=None, *, negative_prompt: str | None = None,
                    guidance_scale: float = 7.5, n: int = 50, num_inference_steps: int = 25, seed: int = 0,
                    classifier=None, keep_images: bool = False) -> PromptReport:
    """Generate `n` images from one prompt with a Fashion-MNIST pipeline and score them.

    `target` is the class (or list of classes) the prompt asks for: accuracy is the fraction
    of images the classifier puts there. Diversity divides the mean distance between two
    generated images' classifier features by the same for real test images of the target
    classes (all classes without a target): 1 is as varied as the real thing, 0 is one image
    repeated. The images come from one `torch.Generator` seeded with `seed`.
    """
    targets = _targets(target)
    if n < 2:
        raise ValueError(f"n must be at least 2 to measure diversity, got {n}")
    if classifier is None:
        classifier = shipped_classifier()
    started = time.perf_counter()
    images = pipe([prompt] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                  guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                  generator=torch.Generator().manual_seed(seed), output_type="pt").images
    seconds = time.perf_counter() - started
    images = images.float().cpu()
    if tuple(images.shape[1:]) != (1, 32, 32):
        raise ValueError(f"expected a Fashion-MNIST pipeline making (1, 32, 32) images, got {tuple(images.shape[1:])}")
    probs, features = classify(classifier, images[..., 2:30, 2:30])
    predicted = probs.argmax(-1)
    histogram = torch.bincount(predicted, minlength=10).tolist()
    accuracy = None if targets is None else torch.isin(predicted, torch.tensor(targets)).float().mean().item()
    real_distance, real_saturation = _real_reference(id(classifier), classifier,
                                                     None if targets is None else tuple(sorted(targets)))
    return PromptReport(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, n=n,
                        histogram=histogram, accuracy=accuracy, mean_confidence=probs.max(-1).values.mean().item(),
                        diversity=mean_pairwise_distance(features) / real_distance,
                        saturation=(images[..., 2:30, 2:30] >= SATURATION_LEVEL).float().mean().item(),
                        saturation_real=real_saturation, seconds=seconds, images=images if keep_images else None)

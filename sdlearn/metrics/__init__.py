"""How good are generated Fashion-MNIST images? Measured with the shipped classifier.

- class histogram and its normalised entropy: 1.0 when all ten classes are equally common,
  0.0 when every image is one class (mode collapse);
- mean confidence: the classifier's average top probability (blurry or broken images get
  low confidence);
- accuracy against the intended labels, for class- or text-conditioned models;
- realism, per image: is what the classifier sees in it as close to real training images as a
  real test image's is (`realism`)? Confidence cannot tell: speckle can make the classifier sure;
- Fréchet distance between the classifier's features of the samples and of the test set
  (as FID does with Inception features), beside the real-against-real baseline: the
  distance from 2,000 training images to the test set;
- for a text-to-image pipeline, `evaluate_prompt`: accuracy, diversity, realism and saturation
  of the images one prompt makes, at a given guidance scale and negative prompt.

Images go in as (N, 1, 28, 28) in [0, 1] (`sdlearn.data.to_classifier_range` converts the
DDPM's 32x32 [-1, 1] images).

Two more kinds of judgement live beside it, and are imported here too:

- `sdlearn.metrics.images`: comparing an image with a reference: `psnr` and `ssim` (how well
  an autoencoder reconstructs), `faces_flipped` (does a generated shoe face the way its
  prompt asked?), and for inpainting `change_outside` (what an edit changed that it should have
  kept) and `seam` (a visible border around the repainted part);
- `sdlearn.metrics.subjects`: for fine-tuning on a few pictures of one subject, `subject_distance`
  (fidelity, in the classifier's feature space) and `nearest_copy_distance` (memorisation);
- `sdlearn.metrics.clip`: `evaluate_clip`, the zero-shot accuracies of a CLIP model.
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
from sdlearn.metrics.clip import evaluate_clip
from sdlearn.metrics.images import change_outside, faces_flipped, psnr, seam, ssim
from sdlearn.metrics.subjects import nearest_copy_distance, subject_distance

__all__ = ["PromptReport", "RealismReport", "SampleReport", "change_outside", "classify", "evaluate_clip",
           "evaluate_prompt", "evaluate_samples", "faces_flipped", "frechet_distance", "mean_pairwise_distance",
           "nearest_copy_distance", "normalized_entropy", "psnr", "realism", "realism_features", "seam",
           "shipped_classifier", "ssim", "subject_distance"]


# Images per forward pass of the classifier. Its first activations take 200 x 32 x 28 x 28 floats
# (20 MB) at this size, which the memory allocator reuses from batch to batch; at 1,000 a batch
# (100 MB) is mapped afresh each time, and judging the 10,000 test images took 2.5 times as long.
# The results do not depend on it: each image is computed on its own.
BATCH_SIZE = 200


@torch.no_grad()
def classify(classifier, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, 10) and penultimate features (N, hidden) of a batch of images."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images (N, 1, 28, 28) in [0, 1], got {tuple(images.shape)}; convert 32x32 "
                         "diffusion samples with sdlearn.data.to_classifier_range")
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


# --------------------------------------------------------------------------- realism: does each image look real?
# A confident class says nothing about realism: speckle can make the classifier sure of a "Bag".
# An image counts as realistic when what the classifier sees in it lies as close to some real
# images as a real test image's does: its distance to the k-th nearest of 10,000 training images,
# against the 99th percentile of that distance over the 10,000 test images.

REALISM_REFERENCE_SIZE = 10_000   # real training images (a fixed seeded subset) that samples are compared with
REALISM_NEIGHBOUR = 5             # k: one or two near-duplicates in the training set are not enough to pass
REALISM_QUANTILE = 0.99           # a real test image is judged realistic with this probability


@torch.no_grad()
def realism_features(classifier, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> list[torch.Tensor]:
    """What the classifier sees in each image at three depths: [(N, 16), (N, 32), (N, hidden)].

    How strongly each filter of the first convolution fires, averaged over the image (strokes
    and edges), the same for the second (textures and parts), and the penultimate features
    (which garment). The penultimate features alone are not enough: uniform noise lands among
    real images there. The two convolutions are recorded with forward hooks as the classifier runs.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images (N, 1, 28, 28) in [0, 1], got {tuple(images.shape)}; convert 32x32 "
                         "diffusion samples with sdlearn.data.to_classifier_range")
    if not all(hasattr(classifier, name) for name in ("conv1", "conv2", "act")):
        raise TypeError(f"realism needs a SmallClassifier (with conv1, conv2 and act), got {type(classifier).__name__}")
    classifier.eval()
    fired = []

    def record(module, inputs, output):
        fired.append(classifier.act(output).mean((2, 3)))        # (B, channels)

    handles = [classifier.conv1.register_forward_hook(record), classifier.conv2.register_forward_hook(record)]
    conv1, conv2, penultimate = [], [], []
    try:
        for start in range(0, len(images), batch_size):
            fired.clear()
            penultimate.append(classifier.features(images[start:start + batch_size].float()))
            conv1.append(fired[0])
            conv2.append(fired[1])
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(conv1), torch.cat(conv2), torch.cat(penultimate)]


def _kth_neighbour_distance(features: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Euclidean distance from each row of `features` to its k-th nearest row of `reference`, (N,)."""
    distances = []
    for start in range(0, len(features), 1000):
        to_reference = torch.cdist(features[start:start + 1000], reference)        # (B, R)
        distances.append(to_reference.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(distances)


def _scaled(blocks: list[torch.Tensor], scales: list[float]) -> torch.Tensor:
    """The three depths, each divided by its scale, side by side: (N, 16 + 32 + hidden) in float64."""
    return torch.cat([block.double() / scale for block, scale in zip(blocks, scales)], dim=1)


@lru_cache(maxsize=4)
def _test_set_features(classifier_id: int, classifier) -> list[torch.Tensor]:
    """`realism_features` of the 10,000 test images (the last block is what `classify` returns)."""
    test_images, _ = load_fashion_mnist("test")
    return realism_features(classifier, test_images)


@lru_cache(maxsize=4)
def _realism_reference(classifier_id: int, classifier) -> tuple[list[float], torch.Tensor, float, float]:
    """Block scales, scaled reference features, threshold, and the real test images' mean realism."""
    train_images, _ = load_fashion_mnist("train")
    subset = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:REALISM_REFERENCE_SIZE]
    blocks = realism_features(classifier, train_images[subset])
    # Each depth divided by the square root of its total variance, so that the three weigh the same.
    scales = [block.double().var(0).sum().sqrt().item() for block in blocks]
    reference = _scaled(blocks, scales)
    test_distance = _kth_neighbour_distance(_scaled(_test_set_features(classifier_id, classifier), scales),
                                            reference, REALISM_NEIGHBOUR)
    threshold = torch.quantile(test_distance, REALISM_QUANTILE).item()
    return scales, reference, threshold, (threshold / test_distance).mean().item()


@dataclass
class RealismReport:
    """Per image: is it as close to real training images as a real test image is?"""
    distance: torch.Tensor      # (N,) distance to the k-th nearest real training image (scaled realism features)
    threshold: float            # the same distance's 99th percentile over the real test images
    real_mean_realism: float    # mean realism of the real test images, for comparison

    @property
    def realism(self) -> torch.Tensor:
        """(N,) threshold / distance: 1 at the threshold, about 2 for a typical real image, near 0 for noise."""
        return self.threshold / self.distance

    @property
    def realistic(self) -> torch.Tensor:
        """(N,) bool: distance <= threshold (true for 99% of real test images)."""
        return self.distance <= self.threshold

    def __repr__(self) -> str:
        return (f"{len(self.distance)} images: {self.realistic.float().mean().item():.1%} judged realistic, "
                f"mean realism {self.realism.mean().item():.2f}   (real test images: "
                f"{REALISM_QUANTILE:.0%} and {self.real_mean_realism:.2f})")


def realism(images: torch.Tensor, classifier=None) -> RealismReport:
    """Judge each image (N, 1, 28, 28) in [0, 1]: realistic, and how much (see `RealismReport`)."""
    if classifier is None:
        classifier = shipped_classifier()
    return _judge(classifier, realism_features(classifier, images))


def _judge(classifier, blocks: list[torch.Tensor]) -> RealismReport:
    """The realism of images whose `realism_features` are `blocks`."""
    scales, reference, threshold, real_mean_realism = _realism_reference(id(classifier), classifier)
    distance = _kth_neighbour_distance(_scaled(blocks, scales), reference, REALISM_NEIGHBOUR)
    return RealismReport(distance=distance, threshold=threshold, real_mean_realism=real_mean_realism)


@torch.no_grad()
def _classify_and_judge(classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, RealismReport]:
    """`classify` and `realism` from one pass of the classifier: (probabilities, features, realism)."""
    blocks = realism_features(classifier, images)
    return classifier.fc2(blocks[-1]).softmax(-1), blocks[-1], _judge(classifier, blocks)


# --------------------------------------------------------------------------- end of realism


@dataclass
class SampleReport:
    n: int
    histogram: list[int]
    entropy: float
    mean_confidence: float
    accuracy: float | None
    frechet: float
    frechet_real: float
    realistic: float            # fraction of images judged realistic by `realism`
    mean_realism: float         # their mean realism (threshold / distance; real test images about 2)
    real_mean_realism: float    # the same for the real test images

    def __repr__(self) -> str:
        lines = [f"{self.n} images",
                 "classes: " + ", ".join(f"{name} {count}" for name, count in zip(FASHION_CLASSES, self.histogram)),
                 f"normalised class entropy {self.entropy:.3f}   mean confidence {self.mean_confidence:.3f}"]
        if self.accuracy is not None:
            lines.append(f"accuracy against intended labels {self.accuracy:.3f}")
        lines.append(f"Fréchet distance to the test set {self.frechet:.2f}   (real training images: {self.frechet_real:.2f})")
        lines.append(f"judged realistic {self.realistic:.1%}   mean realism {self.mean_realism:.2f}   "
                     f"(real test images: {REALISM_QUANTILE:.0%} and {self.real_mean_realism:.2f})")
        return "\n".join(lines)


@lru_cache(maxsize=4)
def _reference_features(classifier_id: int, classifier) -> tuple[torch.Tensor, float]:
    train_images, _ = load_fashion_mnist("train")
    test_features = _test_set_features(classifier_id, classifier)[-1]      # classify's features, computed once
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
    probs, features, judged = _classify_and_judge(classifier, images)
    predicted = probs.argmax(-1)
    histogram = torch.bincount(predicted, minlength=10).tolist()
    test_features, frechet_real = _reference_features(id(classifier), classifier)
    accuracy = None if labels is None else (predicted == labels).float().mean().item()
    return SampleReport(n=len(images), histogram=histogram, entropy=normalized_entropy(histogram),
                        mean_confidence=probs.max(-1).values.mean().item(), accuracy=accuracy,
                        frechet=frechet_distance(features, test_features), frechet_real=frechet_real,
                        realistic=judged.realistic.float().mean().item(), mean_realism=judged.realism.mean().item(),
                        real_mean_realism=judged.real_mean_realism)


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
    realistic: float            # fraction judged realistic by `realism` (real test images: 99%)
    mean_realism: float         # their mean realism (threshold / distance; real test images about 2)
    seconds: float              # time to generate the images
    images: torch.Tensor | None = None    # (n, 1, 32, 32) in [0, 1]; left out of the printed report

    def __repr__(self) -> str:
        guided = f"guidance {self.guidance_scale:g}"
        negative = f", negative {self.negative_prompt!r}" if self.negative_prompt else ""
        counts = ", ".join(f"{name} {c}" for name, c in zip(FASHION_CLASSES, self.histogram) if c)
        accuracy = "" if self.accuracy is None else f"accuracy {self.accuracy:.1%}   "
        return (f"{self.prompt!r} ({guided}{negative}): {self.n} images in {self.seconds:.1f} s\n"
                f"  {accuracy}confidence {self.mean_confidence:.3f}   diversity {self.diversity:.2f}   "
                f"saturated pixels {self.saturation:.2%} (real {self.saturation_real:.2%})\n  classes: {counts}\n"
                f"  judged realistic {self.realistic:.1%}   mean realism {self.mean_realism:.2f}")


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
    """Mean pairwise feature distance and saturation of up to 1,000 test images of `classes`.

    The features are rows of the test set's, computed once per classifier (`_test_set_features`).
    """
    images, labels = load_fashion_mnist("test")
    features = _test_set_features(classifier_id, classifier)[-1]
    if classes is not None:
        chosen = torch.isin(labels, torch.tensor(classes))
        images, features = images[chosen], features[chosen]
    subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:1000]
    images, features = images[subset], features[subset]
    return mean_pairwise_distance(features), (images >= SATURATION_LEVEL).float().mean().item()


def evaluate_prompt(pipe, prompt: str, target=None, *, negative_prompt: str | None = None,
                    guidance_scale: float = 7.5, n: int = 50, num_inference_steps: int = 25,
                    generator: torch.Generator | None = None, classifier=None,
                    keep_images: bool = False) -> PromptReport:
    """Generate `n` images from one prompt with a Fashion-MNIST pipeline and score them.

    `target` is the class (or list of classes) the prompt asks for: accuracy is the fraction
    of images the classifier puts there. Diversity divides the mean distance between two
    generated images' classifier features by the same for real test images of the target
    classes (all classes without a target): 1 is as varied as the real thing, 0 is one image
    repeated. The images are drawn with `generator` (default: `torch.Generator().manual_seed(0)`).
    """
    targets = _targets(target)
    if n < 2:
        raise ValueError(f"n must be at least 2 to measure diversity, got {n}")
    if classifier is None:
        classifier = shipped_classifier()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    images = pipe([prompt] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                  guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                  generator=generator, output_type="pt").images
    seconds = time.perf_counter() - started
    images = images.float().cpu()
    if tuple(images.shape[1:]) != (1, 32, 32):
        raise ValueError(f"expected a Fashion-MNIST pipeline making (1, 32, 32) images, got {tuple(images.shape[1:])}")
    probs, features, judged = _classify_and_judge(classifier, images[..., 2:30, 2:30])
    predicted = probs.argmax(-1)
    histogram = torch.bincount(predicted, minlength=10).tolist()
    accuracy = None if targets is None else torch.isin(predicted, torch.tensor(targets)).float().mean().item()
    real_distance, real_saturation = _real_reference(id(classifier), classifier,
                                                     None if targets is None else tuple(sorted(targets)))
    return PromptReport(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, n=n,
                        histogram=histogram, accuracy=accuracy, mean_confidence=probs.max(-1).values.mean().item(),
                        diversity=mean_pairwise_distance(features) / real_distance,
                        saturation=(images[..., 2:30, 2:30] >= SATURATION_LEVEL).float().mean().item(),
                        saturation_real=real_saturation, realistic=judged.realistic.float().mean().item(),
                        mean_realism=judged.realism.mean().item(), seconds=seconds,
                        images=images if keep_images else None)

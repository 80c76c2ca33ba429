"""Training losses, one per kind of model the course trains.

- `diffusion_loss`: the DDPM noise- (or velocity-) prediction loss, optionally Min-SNR weighted;
- `classification_loss`: cross-entropy, with random flips;
- `vae_loss`: reconstruction plus the KL term of a variational autoencoder;
- `flow_matching_loss`: the rectified-flow loss, the velocity noise - x0 on the straight path;
- `contrastive_loss`: CLIP's symmetric InfoNCE loss over a batch of image-caption pairs;
- `PerceptualDistance`: an LPIPS-style distance between images, from the shipped classifier's features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sdlearn.data import random_hflip
from sdlearn.flow import flow_interpolate
from sdlearn.schedules import add_noise, signal_to_noise, velocity

if TYPE_CHECKING:
    from sdlearn.models.autoencoder import Autoencoder


def diffusion_loss(model, x0: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator, *,
                   prediction_type: str = "epsilon", snr_gamma: float | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """The DDPM training loss (Ho et al., 2020, Algorithm 1), optionally Min-SNR weighted.

    1. draw an index t uniformly from {0, ..., T-1} (the paper's timestep t + 1) and noise
       eps ~ N(0, I), one per image;
    2. x_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) eps;
    3. the model predicts eps ("epsilon") or v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x0;
    4. mean squared error per image, weighted by min(SNR_t, gamma) / SNR_t for epsilon or
       min(SNR_t, gamma) / (SNR_t + 1) for v (Hang et al., 2023), then averaged.
    With snr_gamma=None every image has weight 1: the "simple" loss of DDPM. `reduction="none"`
    returns the (weighted) loss of every image, shape (B,), instead of their mean.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    b = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
    x_t = add_noise(x0, noise, t, alphas_cumprod)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = velocity(x0, noise, t, alphas_cumprod)
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    prediction = model(x_t, t)
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, x0.ndim)))
    if snr_gamma is not None:
        snr = signal_to_noise(alphas_cumprod.to(x0.device))[t]
        clipped = torch.clamp(snr, max=snr_gamma)
        per_image = per_image * (clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1))
    return per_image.mean() if reduction == "mean" else per_image


FLOW_TIME_SAMPLING = ("uniform", "logit_normal")


def flow_matching_loss(model, x0: torch.Tensor, generator: torch.Generator, *, num_train_timesteps: int = 1000,
                       time_sampling: str = "logit_normal", noise: torch.Tensor | None = None) -> torch.Tensor:
    """The flow-matching loss (Lipman et al., 2023; rectified flow, Liu et al., 2023) as SD3 trains it.

    1. draw a time t in (0, 1) per image: uniformly, or logit-normal (sigmoid of a standard normal,
       Esser et al., 2024), which spends more of the training on the middle of the path;
    2. x_t = (1 - t) x0 + t noise, the straight path from the image to the noise;
    3. the model, given x_t and t * num_train_timesteps, predicts the velocity dx_t/dt = noise - x0;
    4. the mean squared error.

    `noise` given: the noise each image is paired with, instead of fresh noise (reflow trains on a
    trained model's own noise-image pairs, `sdlearn.recipes.reflow`); the times are drawn as before.
    """
    if time_sampling not in FLOW_TIME_SAMPLING:
        raise ValueError(f"time_sampling must be one of {FLOW_TIME_SAMPLING}, got {time_sampling!r}")
    b = x0.shape[0]
    if time_sampling == "uniform":
        t = torch.rand(b, generator=generator)
    else:
        t = torch.sigmoid(torch.randn(b, generator=generator))
    t = t.to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the images' shape {tuple(x0.shape)}: one noise per image")
    x_t = flow_interpolate(x0, noise, t)
    prediction = model(x_t, t * num_train_timesteps)
    return F.mse_loss(prediction.float(), (noise - x0).float())


def classification_loss(model, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                        flip: bool = False) -> torch.Tensor:
    """Cross-entropy, with an optional random horizontal flip of half the images."""
    if flip:
        images = random_hflip(images, generator)
    return F.cross_entropy(model(images), labels)

def vae_loss(model: Autoencoder, x: torch.Tensor, generator: torch.Generator | None = None,
             kl_weight: float = 1e-3) -> torch.Tensor:
    """Mean squared reconstruction error plus kl_weight times the KL term per image number.

    For a plain autoencoder this is the reconstruction error alone.
    """
    reconstruction, encoded = model(x, generator=generator)
    loss = F.mse_loss(reconstruction, x)
    if model.config.variational:
        loss = loss + kl_weight * encoded.kl().mean() / x[0].numel()
    return loss


def contrastive_loss(logits_per_image: torch.Tensor, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric InfoNCE loss of CLIP: image i's caption is text i, and text i's image is image i.

    Cross-entropy over each row (which text goes with this image?) and over each column (which
    image goes with this text?), averaged. With `caption_ids` (B,), texts that are the same
    caption count as the same answer: the target of a row is spread evenly over every column
    with that caption (a batch of Fashion-MNIST captions repeats captions often).

    When the copies of a caption have the same embedding, as they do when the text encoder sees
    them all, their columns are identical and both forms give the same loss and the same
    gradients; the shared targets matter when copies differ (for example, with dropout in the
    text encoder). Either way, a batch with repeated captions cannot reach a loss of 0: lesson
    12 measures the floor.
    """
    if logits_per_image.ndim != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(f"expected a square matrix of logits (one caption per image), got "
                         f"{tuple(logits_per_image.shape)}")
    n = logits_per_image.shape[0]
    if caption_ids is None:
        targets = torch.arange(n, device=logits_per_image.device)
        return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2
    if caption_ids.shape != (n,):
        raise ValueError(f"caption_ids must have one id per image, shape ({n},), got {tuple(caption_ids.shape)}")
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


class PerceptualDistance:
    """An LPIPS-style perceptual distance (Zhang et al., 2018) from a classifier the project trained.

    Johnson et al. (2016) and LPIPS compare two images by what a trained network sees in them
    rather than pixel by pixel. Here the network is the shipped Fashion-MNIST classifier
    (`sdlearn.models.classifier.SmallClassifier`), and the layers are its activations at three depths:

        conv1   act(conv1(x))          (N, c, 28, 28)   strokes and edges
        conv2   act(conv2(pool(.)))    (N, 2c, 14, 14)  textures and parts, after one 2x pooling
        fc1     the features           (N, hidden)      which garment, nothing left of where
    (c = 32 and hidden = 128 for the shipped classifier.)

    For each layer l: y_l = features / their norm over the channels at each position (so a layer
    counts by the direction of its activations, not by how strongly they fire), then
    d_l = mean over positions of ||y_l(x) - y_l(y)||^2, and the distance is the sum of the d_l.
    LPIPS also learns a weight per channel from human judgements; here every channel weighs 1.

    `distance(x, y)` takes two batches (N, 1, 28, 28) in [0, 1] (the classifier's range; 32x32
    diffusion images go through `sdlearn.data.to_classifier_range`) and returns (N,). It is
    differentiable in both images; the classifier's weights are frozen.
    """

    LAYERS = ("conv1", "conv2", "fc1")

    def __init__(self, classifier=None, layers: tuple[str, ...] = LAYERS, eps: float = 1e-10):
        if classifier is None:
            from sdlearn.metrics import shipped_classifier
            classifier = shipped_classifier()
        unknown = [name for name in layers if name not in self.LAYERS]
        if unknown or not layers:
            raise ValueError(f"layers must be a non-empty subset of {self.LAYERS}, got {layers!r}")
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.layers = tuple(layers)
        self.eps = eps
        config = classifier.config
        self.image_shape = (config.in_channels, config.image_size, config.image_size)

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The classifier's activations at each of `layers`, (N, C, H, W) each (fc1 as (N, hidden, 1, 1))."""
        net = self.classifier
        h1 = net.act(net.conv1(x))                               # (N, c, 28, 28)
        h2 = net.act(net.conv2(net.pool(h1, 2)))                 # (N, 2c, 14, 14)
        f = net.act(net.fc1(net.pool(h2, 2).flatten(1)))         # (N, hidden)
        raw = {"conv1": h1, "conv2": h2, "fc1": f[:, :, None, None]}
        return {name: raw[name] for name in self.layers}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The activations unit-normalised over the channels at each position."""
        return {name: a / (a.norm(dim=1, keepdim=True) + self.eps) for name, a in self.activations(x).items()}

    def per_layer(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """d_l for each layer, (N,) each."""
        self._check(x, y)
        fx, fy = self.features(x), self.features(y)
        return {name: (fx[name] - fy[name]).pow(2).sum(dim=1).mean(dim=(1, 2)) for name in self.layers}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The perceptual distance between x[i] and y[i], (N,)."""
        return sum(self.per_layer(x, y).values())

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for name, image in (("x", x), ("y", y)):
            if not isinstance(image, torch.Tensor) or image.ndim != 4:
                shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"{name} must be a batch of images (N, C, H, W), got {shape}")
        if x.shape[1:] != y.shape[1:]:
            raise ValueError(f"the perceptual distance compares images of the same size and channels, got "
                             f"{tuple(x.shape[1:])} and {tuple(y.shape[1:])}: resize or crop one of them "
                             f"(32x32 diffusion images: sdlearn.data.to_classifier_range)")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"the classifier sees images {self.image_shape}, got {tuple(x.shape[1:])}: "
                             f"32x32 diffusion images in [-1, 1] go through sdlearn.data.to_classifier_range")
        if x.shape[0] != y.shape[0] and 1 not in (x.shape[0], y.shape[0]):
            raise ValueError(f"x has {x.shape[0]} images and y {y.shape[0]}: give the same number, or one "
                             f"image to compare with all of the others")

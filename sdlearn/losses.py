"""Training losses, one per kind of model the course trains.

- `diffusion_loss`: the DDPM noise- (or velocity-) prediction loss, optionally Min-SNR weighted;
- `classification_loss`: cross-entropy, with random flips;
- `vae_loss`: reconstruction plus the KL term of a variational autoencoder;
- `contrastive_loss`: CLIP's symmetric InfoNCE loss over a batch of image-caption pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sdlearn.data import random_hflip
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

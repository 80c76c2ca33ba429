"""Training losses: the diffusion (noise-prediction) loss with its weightings, and classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdlearn.schedules import add_noise, signal_to_noise, velocity


def diffusion_loss(model, x0: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator, *,
                   prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """The DDPM training loss (Ho et al., 2020, Algorithm 1), optionally Min-SNR weighted.

    1. draw t uniformly from {0, ..., T-1} and noise eps ~ N(0, I), one per image;
    2. x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps;
    3. the model predicts eps ("epsilon") or v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x0;
    4. mean squared error per image, weighted by min(SNR_t, gamma) / SNR_t for epsilon or
       min(SNR_t, gamma) / (SNR_t + 1) for v (Hang et al., 2023), then averaged.
    With snr_gamma=None every image has weight 1: the "simple" loss of DDPM.
    """
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
    if snr_gamma is None:
        return per_image.mean()
    snr = signal_to_noise(alphas_cumprod.to(x0.device))[t]
    clipped = torch.clamp(snr, max=snr_gamma)
    weight = clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1)
    return (weight * per_image).mean()


def classification_loss(model, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                        flip: bool = False) -> torch.Tensor:
    """Cross-entropy, with an optional random horizontal flip of half the images."""
    if flip:
        mask = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return F.cross_entropy(model(images), labels)

"""Judging an image against a reference: how well it is reconstructed, and which way it faces.

- `psnr`: peak signal-to-noise ratio, 10 log10(range^2 / MSE), per image;
- `ssim`: structural similarity (Wang et al., 2004), per image, from local means, variances
  and covariances: closer to what a viewer notices than the squared error;
- `faces_flipped`: is a generated image closer to a reference (such as the average real
  sneaker, which faces left) or to the reference mirrored? A judge for prompts such as
  "a sneaker facing right".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(reconstruction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, 10 log10(range^2 / MSE); range 2 for images in [-1, 1]."""
    mse = (reconstruction.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 7) -> torch.Tensor:
    """Structural similarity per image (Wang et al., 2004) with a uniform window, on each channel, averaged.

    Images (B, C, H, W); returns (B,). 1 means identical.
    """
    x, y = x.float(), y.float()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = window // 2

    def local_mean(t):
        return F.avg_pool2d(F.pad(t, (pad,) * 4, mode="reflect"), window, stride=1)

    mx, my = local_mean(x), local_mean(y)
    vx = local_mean(x * x) - mx ** 2
    vy = local_mean(y * y) - my ** 2
    cov = local_mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def faces_flipped(images: torch.Tensor, reference: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """For each image (N, C, H, W): is it closer to `reference` flipped along `dim` than to `reference`?

    Closeness is the cosine similarity after subtracting each image's mean. With the average
    real sneaker as reference (which faces left) and dim=-1, True means "faces right"; with
    dim=-2, True means "upside down". Returns a boolean tensor (N,).
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(reference.shape[-3:]):
        raise ValueError(f"images (N, C, H, W) must match the reference's shape {tuple(reference.shape[-3:])}, "
                         f"got {tuple(images.shape)}")

    def centred_unit(x):
        x = x.reshape(len(x), -1).double()
        x = x - x.mean(dim=1, keepdim=True)
        return F.normalize(x, dim=1)

    reference = reference.reshape(1, *reference.shape[-3:])
    x = centred_unit(images)
    as_is = x @ centred_unit(reference).T                     # (N, 1)
    flipped = x @ centred_unit(reference.flip(dim)).T         # (N, 1)
    return (flipped > as_is)[:, 0]

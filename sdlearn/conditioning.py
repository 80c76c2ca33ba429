"""Conditioning a diffusion model on a class label: the embedding, the loss, sampling per class.

    loss = class_conditional_loss(unet, latents, labels, alphas_cumprod, generator,
                                  null_class=10, drop_label_p=0.1, prediction_type="v_prediction")
    latents = generate_for_classes(unet, torch.arange(10).repeat_interleave(8),
                                   alphas_cumprod=alphas_cumprod, prediction_type="v_prediction", shape=(4, 8, 8))

A class-conditional U-Net (`UNetConfig(num_class_embeds=...)`, or diffusers' `num_class_embeds`)
keeps one learned vector per class and adds the label's vector to the time embedding, so the
label reaches every ResNet block the way the noise level does. A one-hot vector times that
table picks one row (`one_hot_embedding`): the embedding is a lookup. Training is the DDPM loss
with the label passed to the network; with `drop_label_p`, some labels are replaced by an extra
"no class" label (`null_class`), so the same network also learns the unconditional model that
classifier-free guidance needs (lesson 14). Text conditioning, through cross-attention, needs
no code here: the text encoder's output goes to the U-Net as `encoder_hidden_states` (lessons 13 to 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdlearn.losses import diffusion_loss
from sdlearn.samplers import NoiseModel, generate


def one_hot_embedding(labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The rows of `table` (C, D) for integer `labels` (B,), computed as one-hot (B, C) @ table.

    Equal to `table[labels]`, which is what `nn.Embedding` does without building the one-hot.
    """
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers (class indices), got {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= table.shape[0]):
        raise ValueError(f"labels must lie in [0, {table.shape[0]}) for a table of {table.shape[0]} rows, "
                         f"got values from {labels.min().item()} to {labels.max().item()}")
    one_hot = F.one_hot(labels, num_classes=table.shape[0]).to(table.dtype)   # (B, C): a single 1 per row
    return one_hot @ table                                                     # (B, D)


def with_null_class(labels: torch.Tensor, drop: torch.Tensor, null_class: int) -> torch.Tensor:
    """A copy of `labels` with the positions where `drop` is True set to `null_class`.

    The null class is an extra row of the embedding table (index `num_classes` for labels
    0 to num_classes - 1), so that "no class" is never confused with a real one.
    """
    labels = torch.as_tensor(labels)
    drop = torch.as_tensor(drop, device=labels.device)
    if drop.dtype != torch.bool or drop.shape != labels.shape:
        raise ValueError(f"drop must be a boolean mask shaped like labels {tuple(labels.shape)}, "
                         f"got {drop.dtype} {tuple(drop.shape)}")
    if labels.numel() and labels.max() >= null_class:
        raise ValueError(f"null_class {null_class} is also a real label here (labels go up to {labels.max().item()}); "
                         f"use the number of classes, one past the last label")
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def drop_labels(labels: torch.Tensor, p: float, null_class: int, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each label by `null_class` with probability `p` (one uniform draw per label)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    device = generator.device if generator is not None else "cpu"       # draw where the generator lives
    drop = torch.rand(len(labels), generator=generator, device=device) < p
    return with_null_class(labels, drop.to(torch.as_tensor(labels).device), null_class)


def class_conditional_loss(model, x0: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                           generator: torch.Generator, *, null_class: int | None = None, drop_label_p: float = 0.0,
                           prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """The DDPM loss of `sdlearn.losses.diffusion_loss`, with the network told each image's class.

    1. with probability `drop_label_p`, a label becomes `null_class` (drawn first from `generator`);
    2. the network is called as `model(x_t, t, class_labels=labels)`;
    3. the rest (timesteps, noise, target, weighting) is `diffusion_loss`, unchanged.
    """
    if len(labels) != len(x0):
        raise ValueError(f"{len(x0)} images but {len(labels)} labels; give one label per image")
    if drop_label_p > 0:
        if null_class is None:
            raise ValueError("drop_label_p > 0 needs null_class: the index of the extra 'no class' embedding")
        labels = drop_labels(labels, drop_label_p, null_class, generator)
    labels = labels.to(x0.device)

    def conditioned(x, t):              # the U-Net, reading this batch's labels
        return model(x, t, class_labels=labels)

    return diffusion_loss(conditioned, x0, alphas_cumprod, generator, prediction_type=prediction_type,
                          snr_gamma=snr_gamma)


def generate_for_classes(model, labels: torch.Tensor, *, alphas_cumprod: torch.Tensor, batch_size: int = 250,
                         generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                         **generate_kwargs) -> torch.Tensor:
    """One sample per entry of `labels` from a class-conditional model, with `sdlearn.samplers.generate`.

    The labels are split into batches of `batch_size`; all batches draw their noise, in order,
    from `generator` (default: `torch.Generator().manual_seed(0)`), so the result is the same on
    every run. Other keyword arguments
    (`num_inference_steps`, `prediction_type`, `shape`, `decode`, `sampler`, ...) go to `generate`.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels must be a non-empty 1-d tensor of class indices, got shape {tuple(labels.shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, len(labels), batch_size):
        chunk = labels[start:start + batch_size].to(device)
        noise_model = NoiseModel(model, class_labels=chunk)          # calls model(x, t, class_labels=chunk)
        out.append(generate(noise_model, len(chunk), alphas_cumprod=alphas_cumprod, batch_size=len(chunk),
                            generator=generator, device=device, **generate_kwargs))
    return torch.cat(out)

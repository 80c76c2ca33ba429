"""DreamBooth (Ruiz et al., 2023): fine-tune the generator itself on a few pictures of one subject.

    instance = check_instance_images(copies)                       # (N, 1, 32, 32) in [0, 1]
    prior = class_images(pipe, "a photo of a bag", 64, generator)  # drawn once by the frozen model
    loss = dreambooth_loss(pipe, instance_latents, instance_context, generator,
                           class_latents=prior_latents, class_context=class_context, prior_loss_weight=1.0)

Textual inversion (`sdlearn.finetune.textual_inversion`) moves one word and leaves the U-Net as
it was; DreamBooth trains the U-Net (all of it, or low-rank adapters: `sdlearn.finetune.lora`)
on the subject's pictures under a prompt with a rare word, "a photo of a sks bag". Left alone,
that also teaches the model that every bag is this bag (language drift) and fewer kinds of
bag (less diversity). Prior preservation counters both: pictures of the class drawn by the
frozen model before training, "a photo of a bag", trained on at the same time with the plain
class prompt, so that the model keeps drawing what it drew. As in diffusers'
`examples/dreambooth/train_dreambooth.py`, each step puts the instance and the class examples
into one batch, runs the U-Net once, splits the prediction in two and adds the class half's
loss with a weight.
"""

from __future__ import annotations

import math

import torch

from sdlearn.losses import diffusion_loss


def check_instance_images(images: torch.Tensor, size: int = 32, channels: int = 1) -> torch.Tensor:
    """Check a batch of subject pictures, (N, channels, size, size) in [0, 1]; return it as float32.

    The pictures go through the pipeline's autoencoder, which was trained at one size; the
    pipelines and this package take pictures in [0, 1] (the autoencoder's [-1, 1] is made inside).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"instance images must be a tensor (N, {channels}, {size}, {size}), got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise ValueError(f"instance images must be (N, {channels}, {size}, {size}), got {tuple(images.shape)}: "
                         f"the model was trained on {size}x{size} pictures with {channels} channel(s) (Fashion-MNIST "
                         f"is 28x28: pad it by 2 on each side, as sdlearn.data.fashion_for_diffusion does)")
    if len(images) == 0:
        raise ValueError("no instance images: DreamBooth needs a few pictures of the subject")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError("instance images contain NaN or infinite values")
    low, high = images.min().item(), images.max().item()
    if low < 0 or high > 1:
        hint = (" They look like [-1, 1]: map them with (x + 1) / 2." if low >= -1 and high <= 1
                else " They look like [0, 255]: divide by 255." if low >= 0 and high <= 255 else "")
        raise ValueError(f"instance images must be in [0, 1], got values from {low:.3g} to {high:.3g}.{hint}")
    return images


def check_prior_loss_weight(weight: float) -> float:
    """The weight of the class (prior-preservation) loss: a finite number >= 0 (0 switches it off)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"prior_loss_weight must be a number >= 0 (diffusers' default is 1.0; 0 trains without "
                         f"prior preservation), got {weight!r}")
    return float(weight)


def subject_copies(image: torch.Tensor, shifts=((0, 0), (0, 1), (1, 0), (-1, 0), (0, -1)), mirror: bool = True,
                   ) -> torch.Tensor:
    """A few copies of one picture (1, H, W) or (1, 1, H, W): shifted by whole pixels, and mirrored left to right.

    Each (dy, dx) in `shifts` rolls the picture by that many pixels (Fashion-MNIST's padded
    border is black, so nothing wraps round that was not black); with `mirror`, the mirror image
    of each copy follows it. Returns (len(shifts) * (2 if mirror else 1), 1, H, W).
    """
    image = image.reshape(1, *image.shape[-3:])
    copies = []
    for dy, dx in shifts:
        shifted = image.roll((dy, dx), dims=(-2, -1))
        copies += [shifted, shifted.flip(-1)] if mirror else [shifted]
    return torch.cat(copies)


@torch.no_grad()
def class_images(pipe, class_prompt: str, n: int, generator: torch.Generator, *, batch_size: int = 32,
                 **kwargs) -> torch.Tensor:
    """`n` pictures of the class prompt from the pipeline as it is now (before fine-tuning), (n, C, H, W) in [0, 1].

    diffusers' script generates them once, before training, and keeps them on disk; they are
    the prior that the fine-tuned model is asked to keep drawing. `kwargs` go to
    `sdlearn.text_to_image.text_to_image` (guidance_scale, num_inference_steps, ...).
    """
    from sdlearn.text_to_image import text_to_image

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    pictures = [text_to_image(pipe, [class_prompt] * min(batch_size, n - start), generator=generator, **kwargs)
                for start in range(0, n, batch_size)]
    return torch.cat(pictures)


def dreambooth_loss(pipe, instance_latents: torch.Tensor, instance_context: torch.Tensor,
                    generator: torch.Generator, *, class_latents: torch.Tensor | None = None,
                    class_context: torch.Tensor | None = None, prior_loss_weight: float = 1.0,
                    unet=None, return_parts: bool = False):
    """The DreamBooth loss of one step: the subject's diffusion loss plus `prior_loss_weight` times the class's.

    - `instance_latents` (N, 4, h, w), `instance_context` (N or 1, 77, D): the subject's latents and
      the text encoder's output for its prompt ("a photo of a sks bag");
    - `class_latents` (M, 4, h, w), `class_context` (M or 1, 77, D): the prior's, under the class
      prompt ("a photo of a bag"); None trains without prior preservation.
    Both go through the U-Net (`unet`, default `pipe.unet`) in one batch, with the pipeline's
    prediction type and noise schedule; the prediction is split where the class examples start.
    With `return_parts` it returns (loss, instance loss, prior loss or None), the parts detached.
    """
    weight = check_prior_loss_weight(prior_loss_weight)
    unet = pipe.unet if unet is None else unet
    scheduler = pipe.scheduler
    n = len(instance_latents)
    contexts = [instance_context.expand(n, -1, -1) if len(instance_context) == 1 else instance_context]
    latents = [instance_latents]
    if class_latents is not None:
        if class_context is None:
            raise ValueError("class_latents were given without class_context (the class prompt's text encoding)")
        contexts.append(class_context.expand(len(class_latents), -1, -1) if len(class_context) == 1 else class_context)
        latents.append(class_latents)
    latents, context = torch.cat(latents), torch.cat(contexts)
    if len(context) != len(latents):
        raise ValueError(f"{len(context)} text encodings for {len(latents)} latents: give one per picture, or one "
                         f"for all the pictures of a prompt")

    def model(x, t):
        return unet(x, t, encoder_hidden_states=context.to(x.dtype)).sample

    per_image = diffusion_loss(model, latents, scheduler.alphas_cumprod.to(latents.device), generator,
                               prediction_type=scheduler.config.prediction_type, reduction="none")
    instance_loss = per_image[:n].mean()
    prior_loss = per_image[n:].mean() if class_latents is not None else None
    loss = instance_loss if prior_loss is None else instance_loss + weight * prior_loss
    if return_parts:
        return loss, instance_loss.detach(), None if prior_loss is None else prior_loss.detach()
    return loss


__all__ = ["check_instance_images", "check_prior_loss_weight", "class_images", "dreambooth_loss", "subject_copies"]

"""Guidance: classifier-free guidance (the formula, negative prompts, a guided U-Net for the samplers),
and guidance with any differentiable loss.

    guided = classifier_free_guidance(uncond, cond, guidance_scale=7.5)
    model = GuidedNoiseModel(pipe.unet, prompt_embeds, negative_prompt_embeds, guidance_scale=7.5)
    latents = sample_euler(model, latents, schedule, prediction_type="v_prediction")

Classifier-free guidance (Ho and Salimans, 2021): one model, trained with the caption sometimes
dropped, predicts the noise twice, with the prompt and without it; the difference is the
direction the prompt pulls in, and the guidance scale says how far to go along it:

    guided = uncond + scale * (cond - uncond)

A negative prompt takes the place of the empty prompt as the reference, so guidance also pushes
away from what it describes. As in diffusers, a guidance scale of 1 or less switches guidance
off: the model runs once per step, on the prompt alone, and the negative prompt is not used.

`GuidedNoiseModel` wraps a text-conditioned U-Net and the prompts' embeddings into the
`model(x, t)` that every sampler of `sdlearn.samplers` takes (the idea of k-diffusion's
`CFGDenoiser`), and the text-to-image loop (`sdlearn.text_to_image`) calls the same wrapper, so
that guidance is written once for both.

Loss guidance (lesson 20) steers with any differentiable loss on the predicted clean image instead:
`sample_loss_guided` is Euler's method with that estimate pushed down the loss's gradient at each
step, `loss_guided_estimate` one such push.
"""

from __future__ import annotations

import torch

from sdlearn.samplers import Callback, NoiseModel, Step, check_sampler_input, denoise
from sdlearn.schedules import Schedule
from sdlearn.tokenizer import check_prompts


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond): scale 0 gives uncond, 1 gives cond, more goes past cond."""
    if uncond.shape != cond.shape:
        raise ValueError(f"the two predictions must have the same shape, got {tuple(uncond.shape)} "
                         f"and {tuple(cond.shape)}")
    return uncond + scale * (cond - uncond)


def uses_guidance(guidance_scale: float) -> bool:
    """Whether a guidance scale turns guidance on: diffusers' rule, scale > 1."""
    return guidance_scale > 1.0


def check_negative_prompts(prompts: list[str], negative_prompt) -> list[str]:
    """The negative prompts, one per prompt: None gives "", a string is repeated, a list must match."""
    if negative_prompt is None:
        return [""] * len(prompts)
    if isinstance(negative_prompt, str):
        return [negative_prompt] * len(prompts)
    negatives = check_prompts(negative_prompt)
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts: give one negative prompt "
                         f"per prompt, or a single string to use for all of them")
    return negatives


class GuidedNoiseModel(NoiseModel):
    """A text-conditioned U-Net with classifier-free guidance, as the samplers' `model(x, t)`.

    unet                     a diffusers `UNet2DConditionModel`, or sdlearn's UNet with cross-attention:
                             anything called as `unet(sample, timestep, encoder_hidden_states=...)`
    prompt_embeds            (B, 77, D) the prompts' context vectors (`sdlearn.text_to_image.encode_prompts`)
    negative_prompt_embeds   (B, 77, D) the reference: the empty or the negative prompts; needed when
                             guidance is on, unused when it is off
    guidance_scale           above 1 (`uses_guidance`), each call runs the U-Net once on the doubled batch
                             [x; x] with the contexts [negative; prompt] (diffusers' order) and returns
                             `classifier_free_guidance` of the two halves; at 1 or less it runs once on x
                             with the prompts alone and returns that prediction, as diffusers does
    extra_channels           (B, k, h, w) or None: concatenated after the sample's channels on every call
                             (doubled with it when guided), for U-Nets that read more than the latents,
                             such as an inpainting U-Net's mask and masked-image latents (4 + 1 + 4 = 9)

    `x` (B, C, h, w) is the sample the U-Net sees, already scaled for it (the samplers and
    diffusers' `scale_model_input` do that); `t` is one timestep, or one per image.
    """

    def __init__(self, unet, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None = None, *,
                 guidance_scale: float = 7.5, extra_channels: torch.Tensor | None = None):
        self.guided = uses_guidance(guidance_scale)
        if self.guided:
            if negative_prompt_embeds is None:
                raise ValueError(f"guidance_scale {guidance_scale:g} turns guidance on, which needs the reference "
                                 f"embeddings: pass negative_prompt_embeds (the empty prompt's, for no negative "
                                 f"prompt), or a guidance_scale of 1 or less to run without guidance")
            if negative_prompt_embeds.shape != prompt_embeds.shape:
                raise ValueError(f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} and prompt_embeds "
                                 f"{tuple(prompt_embeds.shape)} must have the same shape: one reference per prompt")
            context = torch.cat([negative_prompt_embeds, prompt_embeds])      # (2B, 77, D): reference first
        else:
            context = prompt_embeds
        if extra_channels is not None and extra_channels.shape[0] != prompt_embeds.shape[0]:
            raise ValueError(f"extra_channels has {extra_channels.shape[0]} images for {prompt_embeds.shape[0]} "
                             f"prompts: give one per prompt")
        super().__init__(unet, encoder_hidden_states=context)
        self.batch_size = prompt_embeds.shape[0]
        self.guidance_scale = guidance_scale
        self.extra_channels = extra_channels

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"x has {x.shape[0]} images but the model was given {self.batch_size} prompts: "
                             f"draw one starting sample per prompt")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t                 # (B,)
        extra = self.extra_channels
        if self.guided:
            # 1. one copy of the batch for each context: [reference; prompt]
            x = torch.cat([x, x])                                      # (2B, C, h, w)
            t = torch.cat([t, t])                                      # (2B,)
            extra = torch.cat([extra, extra]) if extra is not None else None
        if extra is not None:
            x = torch.cat([x, extra.to(x.device, x.dtype)], dim=1)    # (B or 2B, C + k, h, w)
        # 2. the U-Net on the whole batch
        output = super().__call__(x, t)
        if not self.guided:
            return output
        # 3. guidance: from the reference's prediction past the prompt's
        uncond, cond = output.chunk(2)
        return classifier_free_guidance(uncond, cond, self.guidance_scale)


# --------------------------------------------------------------------------- guidance with a loss (lesson 20)

def _guidance_gradient(loss_fn, denoised: torch.Tensor, index: int) -> torch.Tensor:
    """The gradient of loss_fn at the predicted clean image, with a clear error for a bad loss."""
    with torch.enable_grad():
        x0 = denoised.detach().requires_grad_()
        loss = loss_fn(x0)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"the guidance loss must return one number (a scalar tensor), got {shape}: "
                             f"add up the per-image losses with .sum()")
        if not torch.isfinite(loss):
            raise ValueError(f"the guidance loss is {loss.item()} at step {index}: it must be finite for the "
                             f"predicted clean images (which can lie outside the data range early on; clamp or "
                             f"guard divisions and logs)")
        if not loss.requires_grad:
            raise ValueError("the guidance loss does not depend on the image it is given: compute it from that "
                             "tensor with differentiable operations")
        (grad,) = torch.autograd.grad(loss, x0)
    return grad


def loss_guided_estimate(denoised: torch.Tensor, sigma, loss_fn, guidance_scale: float, *,
                         index: int = 0) -> torch.Tensor:
    """One push of loss guidance: D - guidance_scale * sigma^2 / (1 + sigma^2) * grad loss_fn(D).

    denoised   D, the predicted clean images (B, C, H, W)
    sigma      the noise level they were predicted at
    index      the step number, for error messages
    """
    weight = sigma ** 2 / (1 + sigma ** 2)                      # 1 - alpha-bar_t: 1 for noise, 0 for a clean image
    return denoised - guidance_scale * weight * _guidance_gradient(loss_fn, denoised, index)


@torch.no_grad()
def sample_loss_guided(model, x, schedule: Schedule, loss_fn, *, guidance_scale: float, guide_every: int = 1,
                       prediction_type: str = "epsilon", generator=None,
                       callback: Callback | None = None) -> torch.Tensor:
    """Euler's method with the predicted clean image pushed down the gradient of any differentiable loss.

    loss_fn       loss_fn(x0) -> one number: a loss on the predicted clean images (B, C, H, W), summed over them
    denoised      D(x; sigma_i), the model's estimate of the clean image
    guided        D - guidance_scale * sigma^2 / (1 + sigma^2) * grad loss_fn(D): the push is full strength
                  while the image is mostly noise and fades to nothing as sigma -> 0, so the last steps
                  are the model's alone (sigma^2 / (1 + sigma^2) is 1 - alpha-bar_t)
    guide_every   apply the push at steps 0, k, 2k, ... only (each costs one backward pass of loss_fn)
    The gradient is taken with respect to the predicted clean image, not through the network: a
    guided step costs one network call, as an unguided one does. With guidance_scale 0 this is `sample_euler`.
    """
    check_sampler_input(x, schedule, prediction_type)
    if not guidance_scale >= 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
    if not isinstance(guide_every, int) or guide_every < 1:
        raise ValueError(f"guide_every must be a whole number >= 1, got {guide_every!r}")
    sigmas = schedule.sigmas
    for i in range(schedule.num_inference_steps):
        sigma = sigmas[i]
        # 1. denoise
        denoised = denoise(model, x, schedule, i, sigma, prediction_type)
        # 2. push the estimate of the clean image down the loss
        if guidance_scale > 0 and i % guide_every == 0:
            denoised = loss_guided_estimate(denoised, sigma, loss_fn, guidance_scale, index=i)
        # 3. an Euler step towards the guided estimate
        d = (x - denoised) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
        if callback is not None:
            callback(Step(index=i, timestep=schedule.timesteps[i].item(), sample=x, pred_x0=denoised))
    return x

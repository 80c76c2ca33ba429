"""Checks for the exercises of lesson 17, inpainting."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.masks import box_mask, latent_mask, masked_images
from sdlearn.pipelines import scheduler_config

_close = partial(same_tensor, rtol=1e-5, atol=1e-6)


def _tensor(got, what: str, expected: torch.Tensor) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return {what} as a tensor, got {type(got).__name__}.")
    if got.shape != expected.shape:
        raise Failed(f"{what} should have shape {tuple(expected.shape)}, got {tuple(got.shape)}.")
    return got.detach().float()


# --------------------------------------------------------------------------- 17.1

def _odd_mask() -> torch.Tensor:
    """A mask whose box does not line up with the 4x4 cells of the latents, so that the rules differ."""
    mask = box_mask(32, 5, 3, 14, 22)
    mask[..., 25:31, 25:31] = 1.0
    return mask


@exercise("17.1", "the mask at the latents' size")
def check_shrink_mask(shrink_mask):
    mask = _odd_mask()
    expected = latent_mask(mask, 4)                                   # (1, 1, 8, 8): nearest neighbour
    got = _tensor(shrink_mask(mask.clone(), 4), "the latent mask", expected)
    wrong = {
        "that averages each 4x4 cell (average pooling): diffusers takes the nearest pixel, "
        "F.interpolate(mask, size=...) with its default mode, so the small mask stays 0 or 1.":
            F.avg_pool2d(mask, 4),
        "that takes the largest value of each 4x4 cell (max pooling), which grows the hole; diffusers takes the "
        "nearest pixel: F.interpolate(mask, size=(H // factor, W // factor)).": F.max_pool2d(mask, 4),
        "bilinear interpolation gives values between 0 and 1; use the default (nearest) mode, as diffusers does.":
            F.interpolate(mask, size=(8, 8), mode="bilinear", align_corners=False),
        "that is the mask of the part to keep; 1 marks the part to repaint, keep it that way.":
            1 - expected,
    }
    name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the small mask differs from F.interpolate(mask, size=(H // factor, W // factor)).")
    wide = box_mask(64, 10, 6, 30, 40)[..., 8:56, :]                 # 48x64, factor 8: latents 6x8
    again = shrink_mask(wide, 8)
    if not _close(again, latent_mask(wide, 8)):
        raise Failed("right for a 32x32 mask and factor 4, wrong for a 48x64 mask and factor 8: compute the size "
                     "from the mask's own height and width and the factor you are given.")
    return "the mask diffusers hands the U-Net and the blend."


# --------------------------------------------------------------------------- 17.2

@exercise("17.2", "the masked image")
def check_mask_out(mask_out):
    g = torch.Generator().manual_seed(172)
    images = torch.rand((2, 1, 32, 32), generator=g) * 2 - 1           # in [-1, 1]
    masks = torch.cat([box_mask(32, 4, 4, 20, 10), box_mask(32, 16, 0, 16, 32)])
    masks = masks * 0.8 + 0.1 * (masks == 0)                           # soft values: 0.1 keeps, 0.9 repaints
    expected = masked_images(images, masks)
    got = _tensor(mask_out(images.clone(), masks.clone()), "the masked images", expected)
    hard = (masks >= 0.5).float()
    wrong = {
        "the hidden pixels should be 0, mid-grey in [-1, 1], as diffusers sets them; -1 is black, which the "
        "model would read as background.": images * (1 - hard) - hard,
        "that hides the part to keep and keeps the part to repaint: keep the pixels where the mask is below 0.5.":
            images * hard,
        "multiplying by (1 - mask) leaves soft masks half-hidden; compare with 0.5 as diffusers does: "
        "images * (mask < 0.5).": images * (1 - masks),
    }
    name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the masked images differ from images * (mask < 0.5).")
    return "the picture the inpainting U-Net reads, beside its mask."


# --------------------------------------------------------------------------- 17.3

def _ddim():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    scheduler.set_timesteps(10)
    return scheduler


@exercise("17.3", "one blend of the known region")
def check_blend(blend):
    scheduler = _ddim()
    timesteps = scheduler.timesteps
    g = torch.Generator().manual_seed(173)
    latents, known, noise = (torch.randn((2, 4, 8, 8), generator=g) for _ in range(3))
    mask = latent_mask(torch.cat([box_mask(32, 0, 0, 16, 32), box_mask(32, 8, 8, 16, 16)]), 4)

    def reference(i, noised_to=None, invert=False, last_noised=False):
        m = 1 - mask if invert else mask
        if i < len(timesteps) - 1 or last_noised:
            t = timesteps[min(i + 1, len(timesteps) - 1)] if noised_to is None else noised_to
            proper = scheduler.add_noise(known, noise, torch.tensor([t]))
        else:
            proper = known
        return (1 - m) * proper + m * latents

    i = 3
    got = _tensor(blend(scheduler, latents.clone(), known.clone(), noise.clone(), mask.clone(), timesteps, i),
                  "the blended latents", reference(i))
    wrong = {
        "the known latents went in clean; after step i the latents sit at timestep timesteps[i + 1], so noise "
        "the known latents to that timestep first (scheduler.add_noise).": (1 - mask) * known + mask * latents,
        "that noises the known latents to timesteps[i], the step just taken; the new latents are at "
        "timesteps[i + 1].": reference(i, noised_to=timesteps[i]),
        "the mask is the wrong way round: keep the known latents where the mask is 0, the new latents where it is "
        "1.": reference(i, invert=True),
    }
    name_the_mistake(got, wrong)
    if not _close(got, reference(i)):
        raise Failed("the blend differs from (1 - mask) * add_noise(known, noise, timesteps[i + 1]) + mask * latents.")
    last = len(timesteps) - 1
    got = _tensor(blend(scheduler, latents.clone(), known.clone(), noise.clone(), mask.clone(), timesteps, last),
                  "the blended latents", reference(last))
    if _close(got, reference(last, last_noised=True)):
        raise Failed("after the last step there is no next timestep: put back the clean known latents, unnoised.")
    if not _close(got, reference(last)):
        raise Failed("right in the middle of the run, wrong after the last step: there, blend the clean known "
                     "latents in.")
    return "the blend StableDiffusionInpaintPipeline does after every step with a 4-channel U-Net."


# --------------------------------------------------------------------------- 17.4

@exercise("17.4", "the 9-channel input")
def check_nine_channels(unet_input):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(174)
    latents = torch.randn((2, 4, 8, 8), generator=g) * 3
    mask = latent_mask(torch.cat([box_mask(32, 0, 0, 16, 32), box_mask(32, 4, 4, 20, 20)]), 4)
    masked = torch.randn((2, 4, 8, 8), generator=g)
    t = scheduler.timesteps[2]
    doubled = torch.cat([latents] * 2)
    scaled = scheduler.scale_model_input(doubled, t)
    extra = [torch.cat([mask] * 2), torch.cat([masked] * 2)]
    expected = torch.cat([scaled, *extra], dim=1)
    got = _tensor(unet_input(scheduler, latents.clone(), mask.clone(), masked.clone(), t), "the U-Net's input",
                  expected)
    wrong = {
        "the channels are in the wrong order: the latents first, then the mask, then the masked image's latents "
        "(the order the U-Net was trained on).": torch.cat([scaled, extra[1], extra[0]], dim=1),
        "the mask and the masked latents go first here; the noisy latents come first.":
            torch.cat([*extra, scaled], dim=1),
        "you forgot scheduler.scale_model_input on the latents (an Euler scheduler's latents must be divided by "
        "sqrt(sigma^2 + 1) before the U-Net sees them).": torch.cat([doubled, *extra], dim=1),
        "scale only the latents: scheduler.scale_model_input on all nine channels also shrinks the mask and the "
        "masked latents, which the U-Net saw unscaled in training.":
            scheduler.scale_model_input(torch.cat([doubled, *extra], dim=1), t),
    }
    name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the input differs from torch.cat([scale_model_input(torch.cat([latents] * 2), t), "
                     "torch.cat([mask] * 2), torch.cat([masked_latents] * 2)], dim=1).")
    return "what StableDiffusionInpaintPipeline feeds its 9-channel U-Net at every step."

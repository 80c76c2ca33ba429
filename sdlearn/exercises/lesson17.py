"""Checks for the exercises of lesson 17, inpainting."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, as_tensor, exercise, name_the_mistake, same_tensor
from sdlearn.masks import box_mask, latent_mask, masked_images
from sdlearn.pipelines import scheduler_config

_close = partial(same_tensor, rtol=1e-5, atol=1e-6)


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
    got = as_tensor(shrink_mask(mask.clone(), 4), "the latent mask", expected.shape)
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
    got = as_tensor(mask_out(images.clone(), masks.clone()), "the masked images", expected.shape)
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

KEEP_ROWS = 10               # exercise 17.3: the mask must keep the top rows (neckline and shoulders)
MIN_DRESSES = 7              # of the 8 t-shirts
MAX_CHANGE_OUTSIDE = 0.10    # mean |change| of the pixels the mask keeps
_inpainting = {}


def _dress_edit(mask: torch.Tensor) -> tuple[list[int], float]:
    """The first 8 test t-shirts inpainted with the 9-channel model as "a photo of a dress": classes, change outside."""
    from sdlearn.data import fashion_caption, fashion_for_diffusion
    from sdlearn.editing import inpaint
    from sdlearn.metrics import change_outside, classify, shipped_classifier
    from sdlearn.pipelines import load

    if "pipe" not in _inpainting:
        _inpainting["pipe"] = load("fashion_inpainting")
        images, labels = fashion_for_diffusion("test")
        _inpainting["shirts"] = (images[labels == 0][:8] + 1) / 2
    shirts = _inpainting["shirts"]
    results = inpaint(_inpainting["pipe"], [fashion_caption(3)] * 8, shirts, mask, guidance_scale=5.0,
                      num_inference_steps=15, generator=torch.Generator().manual_seed(0))
    probabilities, _ = classify(shipped_classifier(), results[..., 2:30, 2:30])
    return probabilities.argmax(1).tolist(), change_outside(results, shirts, mask).mean().item()


@exercise("17.3", "a mask for a dress, found by experiment")
def check_dress_mask(dress_mask):
    from sdlearn.data import FASHION_CLASSES

    mask = dress_mask()
    if not isinstance(mask, torch.Tensor):
        raise Failed(f"return the mask as a tensor, (1, 1, 32, 32), not {type(mask).__name__}.")
    if mask.shape != (1, 1, 32, 32):
        raise Failed(f"the mask should have shape (1, 1, 32, 32), one for every picture, got {tuple(mask.shape)}.")
    mask = mask.detach().float()
    if not torch.all((mask == 0) | (mask == 1)):
        raise Failed("the mask holds only 0 (keep) and 1 (repaint); round or threshold yours.")
    if mask.sum() == 0:
        raise Failed("the mask is all 0: nothing would be repainted.")
    if mask[..., :KEEP_ROWS, :].any():
        rows = sorted(set(mask[0, 0, :KEEP_ROWS].nonzero()[:, 0].tolist()))
        raise Failed(f"the mask repaints rows {rows} of the top {KEEP_ROWS}, the neckline and shoulders the edit "
                     "must keep. Keep them at 0.")
    classes, outside = _dress_edit(mask)
    dresses = classes.count(3)
    covered = f"your mask repaints {mask.mean().item():.0%} of the picture"
    if dresses < MIN_DRESSES:
        others = ", ".join(f"{FASHION_CLASSES[c]} {classes.count(c)}" for c in sorted(set(classes)) if c != 3)
        raise Failed(f"{covered}, and {dresses} of the 8 results are dresses ({others}): what the mask keeps "
                     "still says t-shirt. Repaint more of what makes it one (the lesson's lower half was not "
                     "enough), or its shape.")
    if outside > MAX_CHANGE_OUTSIDE:
        raise Failed(f"{covered}; {dresses} of 8 are dresses, but the pixels it keeps changed by {outside:.3f} on "
                     f"average, more than {MAX_CHANGE_OUTSIDE}: the 9-channel model moves the kept part too (the "
                     "lesson's table). Change the mask's shape, so the kept part fits a dress better.")
    return (f"{covered}; {dresses} of 8 are dresses and the kept pixels changed by {outside:.3f}: the top stays, and "
            "enough of the shirt is repainted for the prompt to win.")


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
    got = as_tensor(unet_input(scheduler, latents.clone(), mask.clone(), masked.clone(), t), "the U-Net's input",
                    expected.shape)
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

"""Lesson 17's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check

# 17.1: the mask at the latents' size


def shrink_mask(mask, factor):
    return F.interpolate(mask, size=(mask.shape[-2] // factor, mask.shape[-1] // factor))


def average_pool(mask, factor):
    return F.avg_pool2d(mask, factor)


def max_pool(mask, factor):
    return F.max_pool2d(mask, factor)


def bilinear(mask, factor):
    return F.interpolate(mask, size=(mask.shape[-2] // factor, mask.shape[-1] // factor), mode="bilinear")


def inverted(mask, factor):
    return 1 - shrink_mask(mask, factor)


def fixed_factor(mask, factor):
    return F.interpolate(mask, size=(8, 8))


@pytest.mark.parametrize("answer,message", [
    (average_pool, "average pooling"), (max_pool, "max pooling"), (bilinear, "bilinear"),
    (inverted, "the part to keep"), (fixed_factor, "the factor you are given"),
])
def test_17_1_names_the_mistake(answer, message):
    verdict = check("17.1", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_17_1_right_answer_passes():
    assert check("17.1", shrink_mask).passed


# 17.2: the masked image

def mask_out(images, masks):
    return images * (masks < 0.5)


def black(images, masks):
    hard = (masks >= 0.5).float()
    return images * (1 - hard) - hard


def hides_the_wrong_part(images, masks):
    return images * (masks >= 0.5)


def soft(images, masks):
    return images * (1 - masks)


@pytest.mark.parametrize("answer,message", [
    (black, "mid-grey"), (hides_the_wrong_part, "hides the part to keep"), (soft, "soft masks"),
])
def test_17_2_names_the_mistake(answer, message):
    verdict = check("17.2", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_17_2_right_answer_passes():
    assert check("17.2", mask_out).passed


# 17.3: a mask for a dress, found by experiment

def _rows_from(row):
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., row:, :] = 1
    return mask


def dress_mask():
    return _rows_from(12)


def dress_mask_lower_half():
    return _rows_from(16)


def dress_mask_everything():
    return torch.ones(1, 1, 32, 32)


def dress_mask_soft():
    return 0.5 * _rows_from(12)


def dress_mask_pixels_only():
    return _rows_from(12)[0, 0]


def dress_mask_empty():
    return torch.zeros(1, 1, 32, 32)


@pytest.mark.parametrize("answer,message", [
    (dress_mask_everything, "must keep"), (dress_mask_soft, "only 0 (keep) and 1 (repaint)"),
    (dress_mask_pixels_only, "should have shape (1, 1, 32, 32)"), (dress_mask_empty, "nothing would be repainted"),
])
def test_17_3_names_the_mistake(answer, message):
    verdict = check("17.3", answer)
    assert not verdict.passed and message in verdict.message, verdict


# 17.3 inpaints 8 pictures per answer (a few seconds on a quiet 2-core CPU)
@pytest.mark.slow
def test_17_3_measures_the_mask():
    assert check("17.3", dress_mask).passed
    verdict = check("17.3", dress_mask_lower_half)
    assert not verdict.passed and "still says t-shirt" in verdict.message, verdict


# 17.4: the 9-channel input

def unet_input(scheduler, latents, mask, masked_latents, t):
    scaled = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    return torch.cat([scaled, torch.cat([mask] * 2), torch.cat([masked_latents] * 2)], dim=1)


def wrong_order(scheduler, latents, mask, masked_latents, t):
    scaled = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    return torch.cat([scaled, torch.cat([masked_latents] * 2), torch.cat([mask] * 2)], dim=1)


def extras_first(scheduler, latents, mask, masked_latents, t):
    scaled = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    return torch.cat([torch.cat([mask] * 2), torch.cat([masked_latents] * 2), scaled], dim=1)


def unscaled(scheduler, latents, mask, masked_latents, t):
    return torch.cat([torch.cat([latents] * 2), torch.cat([mask] * 2), torch.cat([masked_latents] * 2)], dim=1)


def all_scaled(scheduler, latents, mask, masked_latents, t):
    return scheduler.scale_model_input(unscaled(scheduler, latents, mask, masked_latents, t), t)


@pytest.mark.parametrize("answer,message", [
    (wrong_order, "wrong order"), (extras_first, "go first"), (unscaled, "forgot scheduler.scale_model_input"),
    (all_scaled, "scale only the latents"),
])
def test_17_4_names_the_mistake(answer, message):
    verdict = check("17.4", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_17_4_right_answer_passes():
    assert check("17.4", unet_input).passed

"""Inpainting masks (sdlearn.masks): the training masks of the inpainting recipe, and the lessons' masks."""

import pytest
import torch

from sdlearn.masks import KINDS, box_mask, half_mask, latent_mask, masked_images, random_masks


def test_random_masks_are_binary_reproducible_and_mix_the_kinds():
    masks = random_masks(400, 32, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (400, 1, 32, 32) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(masks, random_masks(400, 32, generator=torch.Generator().manual_seed(0)))
    covered = masks.flatten(1).mean(1)
    full = (covered == 1).float().mean().item()
    assert 0.18 < full < 0.32                                     # full_p = 0.25, give or take sampling
    assert (covered > 0).all()                                    # no mask is empty
    assert ((covered > 0.02) & (covered < 0.9)).float().mean() > 0.6   # most are a part of the picture


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_draws_shapes_inside_the_picture(kind):
    masks = random_masks(200, 32, generator=torch.Generator().manual_seed(1), full_p=0.0, kinds=(kind,))
    covered = masks.flatten(1).mean(1)
    assert (covered > 0).all() and (covered < 1).all()
    if kind == "brush":
        assert covered.mean() < 0.3                               # strokes are thin
    if kind == "rectangle":                                       # a rectangle fills its bounding box
        rows, cols = masks[:, 0].amax(2), masks[:, 0].amax(1)
        assert torch.equal(rows.sum(1) * cols.sum(1), masks.flatten(1).sum(1))


def test_full_p_one_and_zero():
    assert random_masks(10, 16, generator=torch.Generator().manual_seed(2), full_p=1.0).eq(1).all()
    assert (random_masks(50, 16, generator=torch.Generator().manual_seed(2), full_p=0.0)
            .flatten(1).mean(1) < 1).all()


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="probability"):
        random_masks(4, 32, full_p=1.5)
    with pytest.raises(ValueError, match="kinds"):
        random_masks(4, 32, kinds=("circle",))
    with pytest.raises(ValueError, match="does not fit"):
        box_mask(32, 20, 0, 16, 4)
    with pytest.raises(ValueError, match="which must be one of"):
        half_mask(32, "middle")


def test_named_masks_and_the_latent_mask():
    lower = half_mask(32, "lower")
    assert lower[..., :16, :].sum() == 0 and lower[..., 16:, :].eq(1).all()
    small = latent_mask(lower, 4)
    assert small.shape == (1, 1, 8, 8) and small[..., :4, :].sum() == 0 and small[..., 4:, :].eq(1).all()
    image = torch.full((1, 1, 32, 32), -0.5)
    hidden = masked_images(image, lower)
    assert hidden[..., 16:, :].eq(0).all() and hidden[..., :16, :].eq(-0.5).all()

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from sdlearn.plotting import animate, show_images, show_side_by_side


@pytest.mark.parametrize("images, n", [
    (torch.rand(5, 1, 8, 8), 5),        # (N, 1, H, W)
    (torch.rand(3, 3, 8, 8), 3),        # (N, 3, H, W)
    (torch.rand(4, 8, 8), 4),           # (N, H, W)
    (torch.rand(1, 8, 8), 1),           # one (1, H, W) image
    (np.zeros((8, 8), np.uint8), 1),    # one uint8 image
    ([torch.rand(8, 8), torch.rand(1, 8, 8)], 2),
])
def test_show_images_accepts_the_documented_layouts(images, n):
    fig = show_images(images, ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == n


def test_grid_shape_and_titles():
    fig = show_images(torch.rand(10, 1, 4, 4), nrows=2, titles=[str(i) for i in range(10)])
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes][:3] == ["0", "1", "2"]


def test_figsize_is_passed_to_matplotlib():
    fig = show_images(torch.rand(2, 1, 4, 4), figsize=(7, 2))
    assert tuple(fig.get_size_inches()) == (7, 2)


@pytest.mark.parametrize("images, error, match", [
    (torch.rand(2, 5, 8, 8), ValueError, r"expected \(H, W\)"),
    (torch.rand(2, 2, 2, 2, 2), ValueError, "expected"),
    (torch.zeros(3, 8, 8, dtype=torch.bool), TypeError, "dtype"),
    (np.zeros((8, 8), np.int32), TypeError, "uint8"),
    ("not images", TypeError, "tensor, an array or a list"),
    (torch.rand(0, 1, 8, 8), ValueError, "empty"),
])
def test_bad_images_are_clear_errors(images, error, match):
    with pytest.raises(error, match=match):
        show_images(images)


def test_title_count_must_match():
    with pytest.raises(ValueError, match="one title per image"):
        show_images(torch.rand(3, 1, 4, 4), titles=["a"])


def test_side_by_side_needs_equal_batches():
    fig = show_side_by_side(torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4))
    assert len([ax for ax in fig.axes if ax.images]) == 6
    with pytest.raises(ValueError, match="must match"):
        show_side_by_side(torch.rand(3, 1, 4, 4), torch.rand(2, 1, 4, 4))


def test_animation_is_self_contained_and_repeatable():
    frames = [torch.full((1, 6, 6), v) for v in (0.0, 0.5, 1.0)]
    first = animate(frames, titles=["a", "b", "c"])._repr_html_()
    second = animate(frames, titles=["a", "b", "c"])._repr_html_()
    assert first.count("data:image/png;base64,") == 3
    assert first == second
    with pytest.raises(ValueError, match="one title per frame"):
        animate(frames, titles=["a"])


def test_draw_unet_draws_every_stage():
    from matplotlib.patches import Rectangle

    from sdlearn.models.unet import UNetConfig
    from sdlearn.plotting import draw_unet

    config = UNetConfig(block_out_channels=(16, 32, 64), attention_levels=(False, False, True), sample_size=32)
    fig = draw_unet(config)
    rectangles = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rectangles) == 2 * 3 + 1                      # down and up at each level, and the middle
    assert fig.boxes[0] == "16x32x32" and fig.boxes[-1] == "mid 64x8x8\n+ attn"
    assert "64x8x8\n+ attn" in fig.boxes
    plt.close(fig)

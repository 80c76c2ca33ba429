"""Pictures for the lessons: image grids, side-by-side comparisons, and animations.

Images may be given as a tensor or array of shape (N, C, H, W), (N, H, W), (C, H, W) or
(H, W), or as a list of single images; C is 1 (grey) or 3 (RGB). A 3-D tensor whose first
dimension is 1 or 3 is one image; pass three grey images as (3, 1, H, W). Float images are shown on
the range given by `vmin`/`vmax` (default [0, 1]); uint8 images on [0, 255].
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from fastcore.meta import delegates
from matplotlib import animation


def _to_numpy_image(image, index: int | None = None) -> np.ndarray:
    """One image as an (H, W) or (H, W, 3) float array, with a clear error for bad input."""
    where = "image" if index is None else f"image {index}"
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.bfloat16 or image.dtype == torch.float16:
            image = image.float()
        image = image.numpy()
    image = np.asarray(image)
    if image.dtype == bool or np.issubdtype(image.dtype, np.complexfloating) or image.dtype == object:
        raise TypeError(f"{where} has dtype {image.dtype}; show_images takes float images (in [0, 1] by default) "
                        "or uint8 images in [0, 255].")
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))  # (C, H, W) -> (H, W, C)
    elif image.ndim == 3 and image.shape[-1] in (1, 3):
        image = image[..., 0] if image.shape[-1] == 1 else image
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"{where} has shape {image.shape}; expected (H, W), (1, H, W) or (3, H, W). "
                         "To show a batch, pass (N, C, H, W) or a list of images.")
    if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
        raise TypeError(f"{where} has integer dtype {image.dtype}; use uint8 in [0, 255] or floats in [0, 1].")
    return image


def _split_batch(images) -> list:
    """Turn the accepted batch layouts into a list of single images."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 4:
            return [images[i] for i in range(images.shape[0])]
        if images.ndim == 3 and images.shape[0] not in (1, 3):
            return [images[i] for i in range(images.shape[0])]  # (N, H, W)
        if images.ndim in (2, 3):
            return [images]
        raise ValueError(f"images has shape {tuple(images.shape)}; expected (N, C, H, W), (N, H, W), "
                         "(C, H, W) or (H, W).")
    raise TypeError(f"images must be a tensor, an array or a list of images, got {type(images).__name__}")


def show_image(image, ax=None, title: str | None = None, cmap: str = "gray",
               vmin: float | None = None, vmax: float | None = None):
    """Show one image on `ax` (a new axes if None), without ticks. Returns the axes."""
    array = _to_numpy_image(image)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    if array.dtype == np.uint8:
        vmin = 0 if vmin is None else vmin
        vmax = 255 if vmax is None else vmax
    else:
        vmin = 0.0 if vmin is None else vmin
        vmax = 1.0 if vmax is None else vmax
    if array.ndim == 3 and array.dtype != np.uint8:
        array = np.clip((array - vmin) / (vmax - vmin), 0.0, 1.0)  # RGB floats are shown on [0, 1]
    ax.imshow(array, cmap=None if array.ndim == 3 else cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


@delegates(plt.subplots, keep=True)
def show_images(images, nrows: int | None = None, ncols: int | None = None,
                titles: Sequence[str] | None = None, cmap: str = "gray",
                vmin: float | None = None, vmax: float | None = None,
                imsize: float = 1.5, suptitle: str | None = None, **kwargs):
    """Show images in a grid and return the figure.

    `ncols` defaults to at most 8 per row; `imsize` is the size in inches of one image.
    Extra keyword arguments go to `matplotlib.pyplot.subplots` (for example `figsize`).
    """
    items = _split_batch(images)
    if len(items) == 0:
        raise ValueError("images is empty: there is nothing to show")
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"{len(titles)} titles for {len(items)} images; give one title per image")
    arrays = [_to_numpy_image(item, i) for i, item in enumerate(items)]
    if ncols is None:
        ncols = min(len(arrays), 8) if nrows is None else int(np.ceil(len(arrays) / nrows))
    if nrows is None:
        nrows = int(np.ceil(len(arrays) / ncols))
    if nrows * ncols < len(arrays):
        raise ValueError(f"a {nrows}x{ncols} grid has room for {nrows * ncols} images, not {len(arrays)}")
    kwargs.setdefault("figsize", (imsize * ncols, imsize * nrows + (0.3 if suptitle else 0.0)))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, **kwargs)
    for i, ax in enumerate(axes.flat):
        if i < len(arrays):
            show_image(arrays[i], ax=ax, title=None if titles is None else titles[i], cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig



def save_image_grid(images, path, *, ncols: int = 8, vmin: float = -1.0, vmax: float = 1.0, imsize: float = 1.0,
                    title: str | None = None) -> None:
    """Write a grid of images (by default in [-1, 1], the diffusion models' range) to a PNG file.

    The file is written to a temporary name and renamed, so an interrupted run never leaves
    half an image behind.
    """
    from sdlearn.utils import atomic_path

    fig = show_images(images, ncols=ncols, vmin=vmin, vmax=vmax, imsize=imsize, suptitle=title)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)

def show_side_by_side(left, right, titles: tuple[str, str] = ("before", "after"), **kwargs):
    """Two batches of the same size as two rows, for before/after comparisons."""
    left_items, right_items = _split_batch(left), _split_batch(right)
    if len(left_items) != len(right_items):
        raise ValueError(f"left has {len(left_items)} images and right has {len(right_items)}; they must match")
    n = len(left_items)
    row_titles = [titles[0]] + [""] * (n - 1) + [titles[1]] + [""] * (n - 1)
    return show_images(left_items + right_items, nrows=2, ncols=n, titles=row_titles, **kwargs)


class Animation:
    """Frames played as a JavaScript animation, in Jupyter and in the built book alike.

    The HTML is self-contained (frames embedded as PNG), so it needs no running kernel.
    """

    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return "<Animation>"

    def save(self, path: str) -> None:
        from sdlearn.utils import atomic_write
        with atomic_write(path, "w") as handle:
            handle.write(self.html)


def animate(frames, titles: Sequence[str] | None = None, interval: int = 150, cmap: str = "gray",
            vmin: float | None = None, vmax: float | None = None, imsize: float = 3.0) -> Animation:
    """Turn a list of images into an `Animation` that plays in the notebook and the book."""
    items = _split_batch(frames)
    if len(items) == 0:
        raise ValueError("frames is empty: there is nothing to animate")
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"{len(titles)} titles for {len(items)} frames; give one title per frame")
    arrays = [_to_numpy_image(item, i) for i, item in enumerate(items)]
    fig, ax = plt.subplots(figsize=(imsize, imsize))
    show_image(arrays[0], ax=ax, title=None if titles is None else titles[0], cmap=cmap, vmin=vmin, vmax=vmax)
    image_artist = ax.images[0]

    def draw(i):
        image_artist.set_data(arrays[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        return [image_artist]

    anim = animation.FuncAnimation(fig, draw, frames=len(arrays), interval=interval, blit=False)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    # matplotlib names the player with a random id; a stable one keeps re-runs identical.
    fingerprint = hashlib.sha1(np.stack([a.astype(np.float32) for a in arrays]).tobytes())
    fingerprint.update(repr((titles, interval, cmap, vmin, vmax)).encode())
    stable_id = fingerprint.hexdigest()[:32]
    match = re.search(r"_anim_img([0-9a-f]{32})", html)
    if match is not None:
        html = html.replace(match.group(1), stable_id)
    return Animation(html)


def draw_unet(config, ax=None, title: str | None = None):
    """Draw a U-Net's layout: one box per stage (channels x resolution), skip connections as arrows.

    `config` is a `sdlearn.models.unet.UNetConfig`. Boxes on the left are the down path, on the
    right the up path, at a height given by the resolution; "A" marks attention (self-attention,
    or a spatial transformer with cross-attention when the U-Net takes a context).
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    channels = list(config.block_out_channels)
    levels = len(channels)
    size = config.sample_size
    if ax is None:
        _, ax = plt.subplots(figsize=(2.0 + 2.3 * levels, 1.2 + 0.9 * levels))
    width, height, step = 1.3, 0.55, 1.45
    boxes = []

    def box(x, y, label, colour):
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, facecolor=colour, edgecolor="black"))
        ax.text(x, y, label, ha="center", va="center", fontsize=8)
        boxes.append(label)

    attention = "cross-attn" if config.cross_attention_dim is not None else "attn"
    for level, ch in enumerate(channels):
        y = levels - level
        res = size // 2 ** level
        tag = f"\n+ {attention}" if config.attention_levels[level] else ""
        box(step * level, y, f"{ch}x{res}x{res}{tag}", "#cfe2f3")                            # down
        box(step * (2 * levels - level), y, f"{ch}x{res}x{res}{tag}", "#d9ead3")               # up
        ax.add_patch(FancyArrowPatch((step * level + width / 2, y), (step * (2 * levels - level) - width / 2, y),
                                     arrowstyle="->", mutation_scale=10, color="grey", linestyle="--"))
        if level < levels - 1:
            ax.add_patch(FancyArrowPatch((step * level + 0.2, y - height / 2), (step * (level + 1) - 0.2,
                                         y - 1 + height / 2), arrowstyle="->", mutation_scale=10))
            ax.add_patch(FancyArrowPatch((step * (2 * levels - level - 1) + 0.2, y - 1 + height / 2),
                                         (step * (2 * levels - level) - 0.2, y - height / 2), arrowstyle="->",
                                         mutation_scale=10))
    res = size // 2 ** (levels - 1)
    mid = f"mid {channels[-1]}x{res}x{res}" + (f"\n+ {attention}" if config.mid_attention else "")
    box(step * levels, 0.0, mid, "#fce5cd")
    ax.add_patch(FancyArrowPatch((step * (levels - 1), 1 - height / 2), (step * levels - width / 2, 0.0),
                                 arrowstyle="->", mutation_scale=10))
    ax.add_patch(FancyArrowPatch((step * levels + width / 2, 0.0), (step * (levels + 1), 1 - height / 2),
                                 arrowstyle="->", mutation_scale=10))
    ax.text(-width / 2, levels + 0.45, f"in: {config.in_channels}x{size}x{size}", fontsize=8)
    ax.text(step * 2 * levels + width / 2, levels + 0.45, f"out: {config.out_channels}x{size}x{size}", fontsize=8,
            ha="right")
    ax.text(step * levels, levels + 0.2, "skip connections (concatenated)", ha="center", fontsize=8, color="grey")
    ax.set_xlim(-width / 2 - 0.1, step * 2 * levels + width / 2 + 0.1)
    ax.set_ylim(-0.5, levels + 0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    ax.figure.boxes = boxes
    return ax.figure

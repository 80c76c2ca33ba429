"""Inpainting masks: 1 where the picture is to be repainted, 0 where it is kept.

    masks = random_masks(128, 32, generator=torch.Generator().manual_seed(0))   # (128, 1, 32, 32)

`random_masks` draws what the inpainting recipe trains on: rectangles, ellipses and brush
strokes, and a share of masks that cover everything (so the model still draws from nothing).
The named masks (`box_mask`, `half_mask`) are the ones the lessons edit with. All are float
tensors of 0s and 1s, (N, 1, H, W), the layout diffusers' `mask_image` takes.
"""

from __future__ import annotations

import torch

KINDS = ("rectangle", "ellipse", "brush")


def _grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (rows, columns), each (1, size, size), in pixels."""
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    return coords[None, :, None].expand(1, size, size), coords[None, None, :].expand(1, size, size)


def _uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def rectangles(n: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Axis-aligned rectangles, each side 1/4 of the image to all of it, anywhere inside it: (n, size, size) bool."""
    h, w = _uniform(n, size / 4, size, generator), _uniform(n, size / 4, size, generator)
    top, left = torch.rand(n, generator=generator) * (size - h), torch.rand(n, generator=generator) * (size - w)
    rows, cols = _grid(size, "cpu")
    r, c = top[:, None, None], left[:, None, None]
    return (rows >= r) & (rows < r + h[:, None, None]) & (cols >= c) & (cols < c + w[:, None, None])


def ellipses(n: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotated ellipses, radii 1/8 to 3/8 of the image, centred in its middle half: (n, size, size) bool."""
    cy, cx = _uniform(n, size / 4, 3 * size / 4, generator), _uniform(n, size / 4, 3 * size / 4, generator)
    ry, rx = _uniform(n, size / 8, 3 * size / 8, generator), _uniform(n, size / 8, 3 * size / 8, generator)
    angle = _uniform(n, 0, torch.pi, generator)
    rows, cols = _grid(size, "cpu")
    dy, dx = rows - cy[:, None, None], cols - cx[:, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    return (u / rx[:, None, None]) ** 2 + (v / ry[:, None, None]) ** 2 <= 1


def brush_strokes(n: int, size: int, generator: torch.Generator | None = None, segments: int = 6) -> torch.Tensor:
    """Free-hand strokes: a random walk of `segments` straight pieces drawn with a round brush, (n, size, size) bool.

    Each piece is 1/8 to 3/8 of the image long and turns by up to 90 degrees from the last; the
    brush is 2 to 5 pixels wide. A pixel is painted when its centre lies within half the brush
    width of any piece (the distance from a point to a line segment, for every piece at once).
    """
    start = torch.rand(n, 2, generator=generator) * size * 0.5 + size * 0.25            # (n, 2): row, col
    heading = _uniform(n, 0, 2 * torch.pi, generator)
    turns = _uniform(n * segments, -torch.pi / 2, torch.pi / 2, generator).view(n, segments)
    lengths = _uniform(n * segments, size / 8, 3 * size / 8, generator).view(n, segments)
    radius = _uniform(n, 1.5, 3.5, generator)[:, None, None]
    angles = heading[:, None] + turns.cumsum(1)                                          # (n, segments)
    steps = torch.stack([angles.sin(), angles.cos()], -1) * lengths[..., None]           # (n, segments, 2)
    points = torch.cat([start[:, None], start[:, None] + steps.cumsum(1)], 1).clamp(0, size)  # (n, segments + 1, 2)
    a, b = points[:, :-1], points[:, 1:]                                                 # each piece from a to b
    rows, cols = _grid(size, "cpu")
    p = torch.stack([rows[0], cols[0]], -1).view(1, 1, size * size, 2)                   # (1, 1, P, 2)
    ab = (b - a)[:, :, None]                                                             # (n, segments, 1, 2)
    ap = p - a[:, :, None]                                                               # (n, segments, P, 2)
    s = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0, 1)              # nearest point on the piece
    distance = (ap - s[..., None] * ab).norm(dim=-1).amin(1).view(n, size, size)
    return distance <= radius


def random_masks(n: int, size: int = 32, *, generator: torch.Generator | None = None, full_p: float = 0.25,
                 kinds: tuple[str, ...] = KINDS) -> torch.Tensor:
    """`n` random inpainting masks (n, 1, size, size) of 0s and 1s: the training masks of the inpainting recipe.

    A share `full_p` covers the whole image (inpainting everything is text to image); the rest
    are each one shape of a kind drawn uniformly from `kinds`: `rectangles`, `ellipses` or
    `brush_strokes`. Drawn on the CPU from `generator`, so a seed fixes them on any machine.
    """
    if n < 1 or size < 4:
        raise ValueError(f"need at least one mask of at least 4x4 pixels, got n={n}, size={size}")
    if not 0.0 <= full_p <= 1.0:
        raise ValueError(f"full_p is a probability in [0, 1], got {full_p}")
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {kinds}")
    draw = {"rectangle": rectangles, "ellipse": ellipses, "brush": brush_strokes}
    choice = torch.randint(len(kinds), (n,), generator=generator)
    full = torch.rand(n, generator=generator) < full_p
    shapes = torch.stack([draw[kind](n, size, generator) for kind in kinds])             # (K, n, size, size)
    masks = shapes.gather(0, choice.view(1, n, 1, 1).expand(1, n, size, size))[0]
    masks = masks | full[:, None, None]
    return masks[:, None].float()


def box_mask(size: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """One rectangle of 1s in a (1, 1, size, size) mask: rows top..top+height, columns left..left+width."""
    if not (0 <= top < top + height <= size and 0 <= left < left + width <= size):
        raise ValueError(f"the box rows {top}..{top + height}, columns {left}..{left + width} does not fit in a "
                         f"{size}x{size} image")
    mask = torch.zeros(1, 1, size, size)
    mask[..., top:top + height, left:left + width] = 1.0
    return mask


def half_mask(size: int, which: str) -> torch.Tensor:
    """The upper, lower, left or right half of a (1, 1, size, size) mask set to 1."""
    half = size // 2
    boxes = {"upper": (0, 0, half, size), "lower": (half, 0, size - half, size),
             "left": (0, 0, size, half), "right": (0, half, size, size - half)}
    if which not in boxes:
        raise ValueError(f"which must be one of {sorted(boxes)}, got {which!r}")
    return box_mask(size, *boxes[which])


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A pixel mask (N, 1, H, W) shrunk to the latents' (N, 1, H / factor, W / factor), as diffusers does it.

    Nearest-neighbour interpolation (`torch.nn.functional.interpolate`'s default), the way
    `StableDiffusionInpaintPipeline.prepare_mask_latents` resizes it.
    """
    return torch.nn.functional.interpolate(mask, size=(mask.shape[-2] // factor, mask.shape[-1] // factor))


def masked_images(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1] with the masked pixels set to 0 (mid-grey), what an inpainting U-Net is shown.

    `images * (masks < 0.5)`, as `StableDiffusionInpaintPipeline` computes its masked image.
    """
    return images * (masks < 0.5)

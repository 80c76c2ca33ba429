"""Datasets for the lessons: scikit-learn's handwritten digits and Fashion-MNIST.

Every loader returns float images in [0, 1] with shape (N, 1, H, W) and int64 labels.
`fashion_for_diffusion` gives the 32x32, [-1, 1] form the diffusion models train on, and
`to_classifier_range` takes generated images back to what the classifier reads. The caption
helpers at the end turn labels into the captions the text models train on, flipping each
image to match what its caption says.
Nothing here downloads from a model hub; Fashion-MNIST is looked for on disk first and
downloaded from its canonical address only where a network exists (Colab).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from sdlearn.utils import atomic_write

# --------------------------------------------------------------------------- class names

DIGIT_CLASSES = [str(d) for d in range(10)]

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# The words a caption uses for each class (lower case, singular where English allows).
FASHION_CAPTION_NAMES = [
    "t-shirt", "pair of trousers", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]

# Superclasses group classes the way a shopper would: prompts like "a shoe" or "a top"
# name a group, so a text-to-image model has to choose among its members.
FASHION_SUPERCLASSES = {
    "top": [0, 2, 4, 6],      # t-shirt, pullover, coat, shirt
    "trousers": [1],
    "dress": [3],
    "shoe": [5, 7, 9],        # sandal, sneaker, ankle boot
    "bag": [8],
}


def superclass_of(label: int) -> str:
    """The superclass ("top", "shoe", ...) of a Fashion-MNIST label."""
    _check_fashion_label(label)
    for name, members in FASHION_SUPERCLASSES.items():
        if label in members:
            return name
    raise AssertionError("every label belongs to a superclass")  # unreachable by construction


def fashion_caption(label: int, *, superclass: bool = False) -> str:
    """A short caption for a Fashion-MNIST label: "a photo of a sneaker" or "a photo of a shoe"."""
    _check_fashion_label(label)
    noun = superclass_of(label) if superclass else FASHION_CAPTION_NAMES[label]
    if noun == "trousers":
        noun = "pair of trousers"
    article = "an" if noun[0] in "aeiou" else "a"
    return f"a photo of {article} {noun}"


SHOE_CLASSES = (5, 7, 9)          # sandal, sneaker, ankle boot: in Fashion-MNIST their toes point left


def fashion_caption_with_attributes(label: int, *, superclass: bool = False, mirrored: bool = False,
                                    upside_down: bool = False, say_direction: bool = True) -> str:
    """A caption that also describes how the image was changed, so that a text encoder must read it.

    Shoes in Fashion-MNIST face left (toe on the left); mirrored, they face right. Any image
    flipped vertically is "upside down". For example "a photo of a sneaker facing right" or
    "a photo of a top, upside down". With `say_direction=False` a shoe's direction is left
    out: "a photo of a sneaker" is true of a shoe facing either way.
    """
    caption = fashion_caption(label, superclass=superclass)
    if int(label) in SHOE_CLASSES and say_direction:
        caption += " facing right" if mirrored else " facing left"
    if upside_down:
        caption += ", upside down"
    return caption


def _check_fashion_label(label) -> None:
    if isinstance(label, torch.Tensor):
        label = label.item()
    if not isinstance(label, (int, np.integer)) or not 0 <= int(label) < 10:
        raise ValueError(f"A Fashion-MNIST label is an int from 0 to 9, got {label!r}")


# --------------------------------------------------------------------------- digits

def load_digits(size: int | None = None, interpolation: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 handwritten digits that ship with scikit-learn (UCI optical digits).

    Each was drawn on a 32x32 bitmap, then every 4x4 block was replaced by its count of
    inked pixels: 8x8 images with integer values 0-16.

    Returns `(images, labels)`: images as float32 of shape (N, 1, H, W) with values in
    [0, 1] (0 is background, 1 is ink), labels as int64 digits 0-9. With `size`, images are
    resized to `size` x `size` with `torch.nn.functional.interpolate` in the given
    `interpolation` mode ("bilinear", "bicubic", "nearest" or "area"; bicubic can
    overshoot, so the result is clamped to [0, 1]).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    if size is not None:
        images = resize_images(images, size, interpolation)
    return images, labels


def resize_images(images: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a batch (N, C, H, W) to `size` x `size`, keeping values in [0, 1]."""
    modes = ("bilinear", "bicubic", "nearest", "area")
    if interpolation not in modes:
        raise ValueError(f"interpolation must be one of {modes}, got {interpolation!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if images.ndim != 4:
        raise ValueError(f"Expected a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    align = {"align_corners": False} if interpolation in ("bilinear", "bicubic") else {}
    out = F.interpolate(images, size=(size, size), mode=interpolation, **align)
    return out.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# File name -> (sha256 of the decompressed IDX bytes, number of items). Checking the
# decompressed bytes makes the same check valid for every mirror, however it gzipped them.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 60000),
    "train-labels-idx1-ubyte.gz": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60000),
    "t10k-images-idx3-ubyte.gz": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 10000),
    "t10k-labels-idx1-ubyte.gz": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10000),
}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor downloadable."""


class CorruptDatasetError(ValueError):
    """Raised when a dataset file is truncated, corrupt or not the expected file."""


def data_dir() -> Path:
    """The cache directory for datasets: `$SDLEARN_DATA`, or `~/.cache/sdlearn`."""
    return Path(os.environ.get("SDLEARN_DATA", Path.home() / ".cache" / "sdlearn")).expanduser()


def load_fashion_mnist(split: str = "train", *, download: bool = True,
                       base_url: str = FASHION_MNIST_URL) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as `(images, labels)`: float32 (N, 1, 28, 28) in [0, 1], int64 labels.

    The IDX files are looked for in this order:

    1. the cache directory `data_dir() / "fashion-mnist"` (set `SDLEARN_DATA` to move it);
    2. Debian's package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`);
    3. a download from `base_url` into the cache directory (only with `download=True`),
       written to a temporary file and renamed, then checked against its sha256.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _SPLIT_PREFIX[split]
    images = _read_idx(_locate(f"{prefix}-images-idx3-ubyte.gz", download, base_url))
    labels = _read_idx(_locate(f"{prefix}-labels-idx1-ubyte.gz", download, base_url))
    if images.shape[0] != labels.shape[0]:
        raise CorruptDatasetError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels. "
            f"Delete the files in {data_dir() / 'fashion-mnist'} and load again."
        )
    images_t = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    return images_t, labels_t


def _locate(name: str, download: bool, base_url: str) -> Path:
    cached = data_dir() / "fashion-mnist" / name
    if cached.exists():
        return cached
    debian = DEBIAN_FASHION_MNIST_DIR / name
    if debian.exists():
        return debian
    if download:
        try:
            return _download(base_url + name, cached)
        except (urllib.error.URLError, OSError) as exc:
            if isinstance(exc, PermissionError):
                raise
            reason = f"the download from {base_url} failed ({exc})"
    else:
        reason = "downloading is switched off (download=False)"
    raise DatasetNotFoundError(
        f"Fashion-MNIST file {name} was not found and {reason}. Get it in one of three ways:\n"
        f"  1. put the four IDX .gz files in {cached.parent} (or set SDLEARN_DATA to a directory "
        "holding a fashion-mnist/ folder with them);\n"
        "  2. on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist "
        f"(installs them in {DEBIAN_FASHION_MNIST_DIR});\n"
        f"  3. with a network connection: load_fashion_mnist(download=True) fetches them from {FASHION_MNIST_URL}."
    )


def _download(url: str, target: Path) -> Path:
    print(f"Downloading {url} to {target}")
    with urllib.request.urlopen(url, timeout=60) as response:
        payload = response.read()
    _parse_idx(payload, target.name, f"The download from {url}")  # verify before anything is written
    with atomic_write(target) as handle:
        handle.write(payload)
    return target


_IDX_DTYPES = {0x08: np.uint8}


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file from disk, checking its header, length and sha256."""
    path = Path(path)
    return _parse_idx(path.read_bytes(), path.name, str(path),
                      fix=f"Delete {path} and load again (or reinstall dataset-fashion-mnist if it is Debian's copy).")


def _parse_idx(payload: bytes, name: str, where: str, fix: str = "Try the download again.") -> np.ndarray:
    try:
        raw = gzip.decompress(payload)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CorruptDatasetError(f"{where} is not a readable gzip file ({exc}). {fix}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDatasetError(f"{where} does not start with an IDX header of unsigned bytes. {fix}")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_len:
        raise CorruptDatasetError(f"{where} has a truncated IDX header. {fix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + int(np.prod(shape))
    if len(raw) != expected:
        raise CorruptDatasetError(
            f"{where} holds {len(raw)} bytes but its header {shape} says {expected}: "
            f"the file is truncated or padded. {fix}"
        )
    known = FASHION_MNIST_FILES.get(name)
    if known is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != known[0]:
            raise CorruptDatasetError(f"{where} has sha256 {digest[:12]}..., expected {known[0][:12]}.... {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


# --------------------------------------------------------------------------- torch datasets

class ImageDataset(Dataset):
    """Images and labels as a torch Dataset; items are `(image, label)` pairs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


def make_loader(images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 64, shuffle: bool = True,
                generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling draws from `generator` (default: seeded with 0): the same seed, the same batches."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return DataLoader(ImageDataset(images, labels), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, drop_last=drop_last)


def split_indices(n: int, test_fraction: float = 0.2, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of `range(n)` into train and test indices, drawn from `generator` (default: seeded with 0)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


# --------------------------------------------------------------------------- images for diffusion models

def fashion_for_diffusion(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST padded to 32x32 and scaled to [-1, 1] (background -1), with labels."""
    images, labels = load_fashion_mnist(split)
    images = F.pad(images, (2, 2, 2, 2))                # (N, 1, 32, 32): 32 divides by 2 three times
    return images * 2 - 1, labels


def to_classifier_range(images: torch.Tensor) -> torch.Tensor:
    """Undo `fashion_for_diffusion`: crop the 28x28 centre and map [-1, 1] back to [0, 1]."""
    return ((images[..., 2:30, 2:30] + 1) / 2).clamp(0, 1)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image (N, C, H, W) left to right with probability `p`: a mirrored shoe is still a shoe.

    The coin flips are drawn on the generator's device and moved to the images'.
    """
    device = generator.device if generator is not None else images.device
    flip = (torch.rand(images.shape[0], generator=generator, device=device) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


# --------------------------------------------------------------------------- captions for text models

def clip_caption_table() -> tuple[list[str], torch.Tensor]:
    """Every training caption, and a lookup (label, superclass, mirrored, upside_down, say_direction) -> index."""
    captions, lookup = [], torch.zeros(10, 2, 2, 2, 2, dtype=torch.long)
    for label in range(10):
        for sup in (0, 1):
            for mirrored in (0, 1):
                for upside_down in (0, 1):
                    for say in (0, 1):
                        text = fashion_caption_with_attributes(label, superclass=bool(sup), mirrored=bool(mirrored),
                                                               upside_down=bool(upside_down), say_direction=bool(say))
                        if text not in captions:
                            captions.append(text)
                        lookup[label, sup, mirrored, upside_down, say] = captions.index(text)
    return captions, lookup


def draw_captions(labels: torch.Tensor, probabilities, lookup: torch.Tensor, generator: torch.Generator):
    """Random caption settings for a batch: (mirrored, upside_down, caption indices), flags as bool tensors.

    `probabilities` is anything with the attributes `superclass_p`, `mirror_p`, `upside_down_p`
    and `say_direction_p` (the CLIP and text-to-image recipes); the caller flips each image as
    the flags say.
    """
    p = torch.tensor([probabilities.superclass_p, probabilities.mirror_p, probabilities.upside_down_p,
                      probabilities.say_direction_p])
    sup, mirrored, upside_down, say = (torch.rand(4, len(labels), generator=generator) < p[:, None]).long()
    return mirrored.bool(), upside_down.bool(), lookup[labels.cpu(), sup, mirrored, upside_down, say]


def clip_batch(images: torch.Tensor, labels: torch.Tensor, probabilities, lookup: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip a batch of images and caption each one to match: (images, caption indices)."""
    mirrored, upside_down, index = draw_captions(labels, probabilities, lookup, generator)
    images = torch.where(mirrored[:, None, None, None].to(images.device), images.flip(-1), images)
    images = torch.where(upside_down[:, None, None, None].to(images.device), images.flip(-2), images)
    return images, index

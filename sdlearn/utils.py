"""Small helpers every module uses: device choice, seeding, and atomic file writes."""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def default_device() -> torch.device:
    """The best device present: CUDA, then Apple's MPS, then the CPU.

    Lessons call this instead of hard-coding a device, so the same notebook runs on a
    laptop, in Colab and on a GPU runner.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU `torch.Generator` seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    For libraries that write files by name (safetensors' `save_file`, for example). If the
    block raises, or the process dies, `path` keeps its old content and the temporary file
    is removed (or, after a crash, left as a hidden .tmp file beside it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(
            f"Cannot create the directory {path.parent} ({exc.strerror}). "
            "Choose a writable location (for data, set SDLEARN_DATA to a writable directory)."
        ) from exc
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(
            f"The directory {path.parent} is not writable. "
            "Choose a writable location (for data, set SDLEARN_DATA to a writable directory)."
        )
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp_name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes files private (0600); use the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file beside `path` for writing; on success rename it onto `path`.

    A reader never sees a half-written file: if the block raises (or the process dies),
    `path` keeps its old content.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())

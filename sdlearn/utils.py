"""Small helpers every module uses: device choice, seeding, and atomic file writes."""

from __future__ import annotations

import math
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


def agreement(difference, tolerance: float = 1e-5, *, exact_zero: bool = True) -> str:
    """A difference between two results, in words that read the same on every CPU.

    The last digits of a float32 difference (9.5e-07 here, 1.2e-06 there) depend on the
    kernels a CPU runs; whether it is below a tolerance does not. So printed comparisons say
    "0" when the results are identical, "below 1e-05" when they agree to rounding, and give the
    difference itself only when it is larger than the tolerance:

        >>> agreement(3.1e-07)
        'below 1e-05'
        >>> agreement(0.02)
        '2.0e-02 (above 1e-05)'

    Say `exact_zero=False` where two computations only *happen* to give identical bits on some
    CPUs (the same sums in another order): 0 then reads "below 1e-05" like any rounding.
    """
    if isinstance(difference, torch.Tensor):
        difference = difference.abs().max().item()
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    if difference != difference:     # NaN
        return "nan"
    if difference == 0 and exact_zero:
        return "0"
    if difference < tolerance:
        return f"below {tolerance:.0e}"
    return f"{difference:.1e} (above {tolerance:.0e})"


def magnitude(error: float) -> str:
    """An error's order of magnitude, as the power of ten just above it: "below 1e-06".

    For printing errors whose leading digit depends on the CPU (a finite-difference error of
    4e-04 on one machine is 6e-04 on another) but whose size does not:

        >>> magnitude(3.6e-07)
        'below 1e-06'
    """
    if isinstance(error, torch.Tensor):
        error = error.abs().max().item()
    error = abs(error)
    if error == 0:
        return "0"
    if error != error or error == float("inf"):
        return str(error)
    bound = 10.0 ** math.ceil(math.log10(error))
    if error >= bound:          # an exact power of ten
        bound *= 10
    return f"below {bound:.0e}"


def randn_tensor(shape, generator: torch.Generator | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """Gaussian noise as diffusers' `randn_tensor` draws it: on the generator's device, then moved to `device`.

    So a CPU generator gives the same numbers whether the model runs on the CPU or on a GPU (and
    does not raise, as `torch.randn(..., generator=cpu_generator, device="cuda")` would). Without a
    generator the noise is drawn on `device` from the global generator.
    """
    draw_on = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_on, dtype=dtype).to(device)

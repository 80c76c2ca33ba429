"""The precision a training run uses: bf16 autocast where the hardware has it, float32 elsewhere.

bf16 autocast halves the bytes every matrix product and convolution moves, and on hardware that
computes in bf16 natively (CPUs with AVX512-BF16 or AMX, GPUs from NVIDIA's Ampere on) it trains
faster. Everywhere else PyTorch emulates bf16 in software: on a CPU with AVX2 only, one training
step of the course's DDPM U-Net takes about 13 times longer in bf16 than in float32. So one
function decides, and the recipes, the lessons and the benchmarks ask it:

    >>> from sdlearn.precision import choose_mixed_precision
    >>> choice = choose_mixed_precision("cpu")
    >>> choice.mixed_precision          # "bf16" or "no" (float32)
    >>> print(choice.reason)

It says "bf16" only where the device supports bf16 natively *and* a short measurement (a few
forward and backward passes of a small convolutional network) shows bf16 to be faster; the
answer is cached for the process. `TrainConfig(mixed_precision="auto")` asks it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

# Instruction-set extensions that make a CPU compute bf16 products in hardware (Linux's names).
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_ARM_BF16_FLAGS = ("bf16",)
MIN_SPEEDUP = 1.1   # bf16 must beat float32 by this factor to be chosen


@dataclass(frozen=True)
class PrecisionChoice:
    mixed_precision: str       # "bf16" or "no" (float32); what TrainConfig.mixed_precision takes
    device: str                # the device type asked about: "cpu", "cuda", "mps"
    native_bf16: bool          # the hardware computes bf16 natively
    speedup: float | None      # float32 time / bf16 time, measured; None if not measured
    reason: str                # one sentence: why this precision

    def __str__(self) -> str:
        name = "bf16 autocast" if self.mixed_precision == "bf16" else "float32"
        return f"{name} on {self.device}: {self.reason}"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):     # x86, then ARM
            return frozenset(value.split())
    return frozenset()


def onednn_isa_limit(environ=None) -> str | None:
    """The instruction-set limit set for oneDNN (ONEDNN_MAX_CPU_ISA or DNNL_MAX_CPU_ISA), if any."""
    environ = os.environ if environ is None else environ
    value = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value else None


def _limit_allows_bf16(limit: str | None) -> bool:
    # oneDNN's ISA names that include bf16 instructions: AVX512_CORE_BF16, ..._AMX, AVX10_*.
    return limit is None or limit == "ALL" or "BF16" in limit or "AMX" in limit or limit.startswith("AVX10")


def native_bf16(device: str | torch.device = "cpu", *, flags=None, environ=None) -> bool:
    """Whether `device` computes bf16 in hardware (so that autocast to bf16 is not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8                        # Ampere and later
    if device.type != "cpu":
        return False
    flags = cpu_flags() if flags is None else frozenset(flags)
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        return any(f in flags for f in _X86_BF16_FLAGS) and _limit_allows_bf16(onednn_isa_limit(environ))
    if machine in ("aarch64", "arm64"):
        return any(f in flags for f in _ARM_BF16_FLAGS)
    return False


def _timed_steps(model, x, bf16: bool, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):                 # the first pass warms up and is not counted
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().square().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure_bf16_speedup(device: str | torch.device = "cpu", repeats: int = 3) -> float:
    """float32 time over bf16-autocast time for forward and backward passes of a small conv net.

    The network is shaped like a block of the course's U-Nets (3x3 convolutions, group norm,
    SiLU, 64 channels at 16x16); it takes about a second in all on a 2-core CPU.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.GroupNorm(8, 64), torch.nn.SiLU()]
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    model.to(device)
    x = torch.randn(32, 64, 16, 16, generator=generator).to(device)
    float32 = _timed_steps(model, x, False, device, repeats)
    bf16 = _timed_steps(model, x, True, device, repeats)
    return float32 / bf16


@lru_cache(maxsize=None)
def _choose(device_type: str, index: int | None, measure: bool) -> PrecisionChoice:
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    if not native_bf16(device):
        if device.type == "cpu":
            limit = onednn_isa_limit()
            if limit and not _limit_allows_bf16(limit) and any(f in cpu_flags() for f in _X86_BF16_FLAGS):
                why = f"the CPU has bf16 instructions, but ONEDNN_MAX_CPU_ISA={limit} keeps oneDNN from using them"
            else:
                why = "this CPU has no native bf16 (no AVX512-BF16 or AMX), so bf16 would be emulated and slower"
        else:
            why = f"{device.type} has no native bf16 autocast support here"
        return PrecisionChoice("no", device.type, False, None, why)
    if not measure:
        return PrecisionChoice("bf16", device.type, True, None, "native bf16 (speed not measured)")
    speedup = measure_bf16_speedup(device)
    if speedup < MIN_SPEEDUP:
        return PrecisionChoice("no", device.type, True, speedup,
                               f"native bf16, but measured only {speedup:.2f}x as fast as float32")
    return PrecisionChoice("bf16", device.type, True, speedup,
                           f"native bf16, measured {speedup:.2f}x as fast as float32")


def choose_mixed_precision(device: str | torch.device | None = None, *, measure: bool = True) -> PrecisionChoice:
    """bf16 where `device` (default: the CPU, or CUDA when present) has it natively and it is faster.

    The answer is cached per device for the life of the process, so the measurement runs once.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    index = device.index
    if device.type == "cuda" and index is None:     # "cuda" and "cuda:0" are one device: measure it once
        index = torch.cuda.current_device()
    return _choose(device.type, index, measure)


def resolve_mixed_precision(mixed_precision: str, device: str | torch.device) -> str:
    """Turn TrainConfig.mixed_precision into what runs: "auto" asks `choose_mixed_precision`.

    An explicit "bf16" is kept, with a warning where the device would emulate it.
    """
    if mixed_precision == "auto":
        return choose_mixed_precision(device).mixed_precision
    if mixed_precision == "bf16" and not native_bf16(device):
        warnings.warn(f"bf16 autocast on this {torch.device(device).type} is emulated in software and runs several "
                      "times slower than float32; use mixed_precision='auto' to let sdlearn choose",
                      stacklevel=3)
    return mixed_precision

"""Reproducible CPU numerics: the kernel settings under which the lessons are run and tested.

The same float32 program gives different last digits on different CPUs: PyTorch, oneDNN and
MKL each pick the widest instructions the processor has (AVX-512 on one machine, AVX2 on
another), and the number of threads decides how sums are split. A lesson that prints a training
loss after 60 steps would then print another number on every kind of machine. `numerics.env`,
beside this module, fixes all of these; `make`, `conftest.py`, the book build and
`benchmarks/lesson_times.py` apply it before PyTorch starts.

    python -m sdlearn.numerics            # print the settings, one NAME=value a line
    python -m sdlearn.numerics --check    # also say whether this process runs under them

This module imports nothing heavy, so it can run before `import torch`; the settings take
effect only in processes that start after they are set (a notebook kernel, a test run).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_FILE = Path(__file__).with_name("numerics.env")


def pinned_environment() -> dict[str, str]:
    """The settings in numerics.env, as {NAME: value}."""
    settings = {}
    for number, line in enumerate(ENV_FILE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"{ENV_FILE}:{number}: expected NAME=value, got {line!r}")
        settings[name] = value
    return settings


def apply(environ: dict | None = None) -> dict[str, str]:
    """Set the pinned settings in `environ` (default os.environ) where they are not set already.

    A variable the caller set explicitly is kept, so that the tests can be run under other
    kernels on purpose. Returns the settings now in force.
    """
    environ = os.environ if environ is None else environ
    return {name: environ.setdefault(name, value) for name, value in pinned_environment().items()}


def describe() -> str:
    """One line on the kernels this process uses (import torch first)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    pinned = {name: os.environ.get(name, "(not set)") for name in pinned_environment()}
    return (f"ATen kernels {capability}, oneDNN limit {pinned['ONEDNN_MAX_CPU_ISA']}, "
            f"MKL path {pinned['MKL_CBWR']}, {torch.get_num_threads()} threads")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for name, value in pinned_environment().items():
        print(f"{name}={value}")
    if "--check" in argv:
        differs = {n: os.environ.get(n) for n, v in pinned_environment().items() if os.environ.get(n) != v}
        print("this process:", describe())
        if differs:
            print("not under the pinned settings:", ", ".join(f"{n}={v}" for n, v in differs.items()))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

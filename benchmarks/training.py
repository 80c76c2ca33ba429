"""U-Net training throughput (images/s) in float32 and with bf16 autocast, through sdlearn.training.

    python benchmarks/training.py

Both precisions are measured on every machine, and the table says which one
`sdlearn.precision.choose_mixed_precision` (the recipes' "auto") picks there and why: bf16 is
fast only where the CPU computes it natively (AVX512-BF16 or AMX); elsewhere it is emulated.

Uses the shipped DDPM recipe's U-Net and loss on Fashion-MNIST, 40 steps of 128 images after
5 warm-up steps. The table goes to book/_generated/training.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn.losses import diffusion_loss  # noqa: E402
from sdlearn.models.unet import UNet  # noqa: E402
from sdlearn.precision import choose_mixed_precision  # noqa: E402
from sdlearn.data import fashion_for_diffusion  # noqa: E402
from sdlearn.recipes import DDPMRecipe  # noqa: E402
from sdlearn.training import TrainConfig, train  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "training.md"


def main() -> int:
    recipe = DDPMRecipe()
    images, _ = fashion_for_diffusion("train")
    alphas_cumprod = recipe.noise_schedule().alphas_cumprod

    def loss_fn(m, x0, generator):
        return diffusion_loss(m, x0, alphas_cumprod, generator, prediction_type=recipe.prediction_type,
                              snr_gamma=recipe.snr_gamma)

    rows = ["| precision | images/s |", "| --- | ---: |"]
    params = None
    for precision in ("no", "bf16"):
        torch.manual_seed(0)
        model = UNet(recipe.model)
        params = sum(p.numel() for p in model.parameters())
        train(model, loss_fn, images, TrainConfig(steps=5, batch_size=128, mixed_precision=precision), progress=False)
        result = train(model, loss_fn, images, TrainConfig(steps=40, batch_size=128, mixed_precision=precision,
                                                           ema_decay=0.999), progress=False)
        label = "float32" if precision == "no" else "bf16 autocast"
        rows.append(f"| {label} | {result.images_per_second:.0f} |")
        print(rows[-1], flush=True)
    text = (f"U-Net of the shipped DDPM ({params / 1e6:.2f}M parameters), 32x32, batch 128, "
            f"{torch.get_num_threads()} CPU threads ({torch.backends.cpu.get_cpu_capability()} kernels), EMA on:\n\n"
            + "\n".join(rows) + f"\n\nThe recipes' choice here: {choose_mixed_precision('cpu')}.\n")
    print(text)
    with atomic_write(TABLE, "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

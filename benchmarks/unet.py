"""The from-scratch U-Net and attention against diffusers' and PyTorch's, at equal weights.

    python benchmarks/unet.py

1. Forward + backward throughput (images/s) of `sdlearn.models.unet.UNet` and of the diffusers
   U-Net built from the same configuration and loaded with the same weights, for the shipped
   pixel DDPM (UNet2DModel layout) and a small text-conditional layout (UNet2DConditionModel).
2. Our written-out `attention` against `torch.nn.functional.scaled_dot_product_attention`, at
   the sizes of attention inside these U-Nets and inside Stable Diffusion 1.5 at 64x64 latents.

Each figure is the median of several timed repeats after warm-up. The table goes to
book/_generated/unet.md (shown on the Benchmarks page).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn.models.attention import attention  # noqa: E402
from sdlearn.models.conversion import to_diffusers  # noqa: E402
from sdlearn.models.unet import UNet, UNetConfig, count_parameters  # noqa: E402
from sdlearn.recipes import DDPMRecipe  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "unet.md"


def _median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unet_rows(repeats: int = 7) -> list[str]:
    conditional = UNetConfig(in_channels=4, out_channels=4, sample_size=16, block_out_channels=(64, 128, 128),
                             layers_per_block=1, attention_levels=(True, True, False), cross_attention_dim=64,
                             num_attention_heads=4, norm_num_groups=32)
    cases = [("shipped pixel DDPM (UNet2DModel)", DDPMRecipe().model, 64, 32, None),
             ("text-conditional, 4x16x16, 77 tokens (UNet2DConditionModel)", conditional, 32, 16, 77)]
    rows = []
    for label, config, batch, size, tokens in cases:
        torch.manual_seed(0)
        ours = UNet(config).train()
        theirs = to_diffusers(ours).train()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, config.in_channels, size, size, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        context = torch.randn(batch, tokens, config.cross_attention_dim, generator=g) if tokens else None

        def step_ours():
            ours.zero_grad(set_to_none=True)
            ours(x, t, encoder_hidden_states=context).square().mean().backward()

        def step_theirs():
            theirs.zero_grad(set_to_none=True)
            kwargs = {"encoder_hidden_states": context} if context is not None else {}
            theirs(x, t, **kwargs).sample.square().mean().backward()

        ours_s = _median_seconds(step_ours, repeats)
        theirs_s = _median_seconds(step_theirs, repeats)
        rows.append(f"| {label} | {count_parameters(ours) / 1e6:.2f}M | {batch} | {batch / ours_s:.0f} | "
                    f"{batch / theirs_s:.0f} | {ours_s / theirs_s:.2f} |")
        print(rows[-1], flush=True)
    return rows


def attention_rows(repeats: int = 15) -> list[str]:
    # (label, batch, heads, queries, keys, head dim)
    cases = [("pixel DDPM, 4x4 level", 64, 4, 16, 16, 32),
             ("conditional, 16x16 cross-attention", 32, 4, 256, 77, 16),
             ("SD 1.5, 64x64 self-attention", 1, 8, 4096, 4096, 40),
             ("SD 1.5, 64x64 cross-attention", 1, 8, 4096, 77, 40)]
    rows = []
    g = torch.Generator().manual_seed(0)
    for label, b, h, n, m, d in cases:
        q, k, v = torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g), \
            torch.randn(b, h, m, d, generator=g)
        ours_s = _median_seconds(lambda: attention(q, k, v), repeats)
        fused_s = _median_seconds(lambda: F.scaled_dot_product_attention(q, k, v), repeats)
        error = (attention(q, k, v)[0] - F.scaled_dot_product_attention(q, k, v)).abs().max().item()
        rows.append(f"| {label} | ({b}, {h}, {n}, {m}, {d}) | {ours_s * 1e3:.2f} | {fused_s * 1e3:.2f} | "
                    f"{ours_s / fused_s:.2f} | {error:.1e} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    lines = ["Forward and backward pass, float32, the same weights in both (`benchmarks/unet.py`, "
             f"{torch.get_num_threads()} CPU threads):", "",
             "| U-Net | parameters | batch | ours (images/s) | diffusers (images/s) | time ratio ours/diffusers |",
             "| --- | ---: | ---: | ---: | ---: | ---: |", *unet_rows(), "",
             "Attention, forward only: the written-out `sdlearn.models.attention.attention` (which returns "
             "the weights, so lessons can draw them) against PyTorch's fused kernel, which the U-Net always "
             "uses (`sdlearn.attention_maps` computes the weights again, written out, only while recording):", "",
             "| where | (B, heads, queries, keys, d) | ours (ms) | fused (ms) | ratio | max abs difference |",
             "| --- | --- | ---: | ---: | ---: | ---: |", *attention_rows()]
    text = "\n".join(lines) + "\n"
    print(text)
    with atomic_write(TABLE, "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of the shipped text-to-image pipeline, and the hand-written loop against it.

    python benchmarks/text2image.py              # 25 DDIM steps, guidance 7.5
    python benchmarks/text2image.py --repeats 9  # more repeats, steadier medians

- images per second of `StableDiffusionPipeline` (the shipped `fashion_text2image`) at batch
  1 and batch 16, text encoding and decoding included;
- `sdlearn.text_to_image.text_to_image`, the loop written out, against the pipeline on the same
  inputs: the ratio of their times (the two are run alternately and the medians compared),
  and the largest pixel difference;
- peak memory: the process's resident set size while generating a batch of 16, and above
  what it held before (sampled every 5 ms).

It prints a table and writes it to book/_generated/text2image_speed.md (the benchmarks page
and the model card show it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesson_times import PeakMemory  # noqa: E402  (benchmarks/ is on the path when run as a script)

from sdlearn import pipelines  # noqa: E402
from sdlearn.text_to_image import text_to_image  # noqa: E402
from sdlearn.models.unet import count_parameters  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "text2image_speed.md"
PROMPTS = ["a photo of a sneaker", "a photo of a bag facing left", "a photo of a dress", "a photo of a shoe"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per setting (default 5)")
    parser.add_argument("--model", default="fashion_text2image", help="pipeline name or folder")
    parser.add_argument("--no-table", action="store_true", help="print only; do not write the table")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    pipe = pipelines.load(args.model)

    def settings(batch, seed):
        return dict(prompt=[PROMPTS[i % len(PROMPTS)] for i in range(batch)], guidance_scale=args.guidance,
                    num_inference_steps=args.steps, generator=torch.Generator().manual_seed(seed))

    def with_pipeline(batch, seed=0):
        return pipe(**settings(batch, seed), output_type="pt").images

    def by_hand(batch, seed=0):
        return text_to_image(pipe, **settings(batch, seed))

    rows = []
    for batch in (1, 16):
        with_pipeline(batch), by_hand(batch)                  # warm-up
        pipe_times, hand_times = [], []
        for repeat in range(args.repeats):                    # alternate, so drifts in CPU speed hit both
            for run, times in ((with_pipeline, pipe_times), (by_hand, hand_times)):
                start = time.perf_counter()
                run(batch, seed=repeat)
                times.append(time.perf_counter() - start)
        difference = (with_pipeline(batch, 7) - by_hand(batch, 7)).abs().max().item()
        rows.append({"batch": batch, "pipe": statistics.median(pipe_times), "hand": statistics.median(hand_times),
                     "difference": difference})
        print(rows[-1], flush=True)

    process = psutil.Process()
    before = process.memory_info().rss
    monitor = PeakMemory(process.pid, interval=0.005)
    monitor.start()
    try:
        with_pipeline(16)
    finally:
        monitor.stop()
    peak = max(monitor.peak, before)

    parts = {"U-Net": pipe.unet, "text encoder": pipe.text_encoder, "autoencoder": pipe.vae}
    lines = [f"| batch | images/s (pipeline) | ms per image | hand-written loop / pipeline | largest pixel difference |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['batch']} | {row['batch'] / row['pipe']:.1f} | {1000 * row['pipe'] / row['batch']:.1f} | "
                     f"{row['hand'] / row['pipe']:.3f}x | {row['difference']:.1e} |")
    lines += ["", f"Peak resident memory while generating 16 images: {peak / 2**20:.0f} MiB "
              f"({(peak - before) / 2**20:.0f} MiB above the {before / 2**20:.0f} MiB held before; most of that is "
              f"PyTorch and the libraries). Parameters: "
              + ", ".join(f"{name} {count_parameters(m):,}" for name, m in parts.items()) + ".", "",
              f"{args.steps} DDIM steps at guidance scale {args.guidance:g} (two U-Net passes per step), 32x32 images "
              f"from 4x8x8 latents, text encoding and decoding included; medians of {args.repeats} runs on "
              f"{torch.get_num_threads()} CPU threads, measured by `benchmarks/text2image.py`."]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

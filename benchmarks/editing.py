"""Speed of image editing: image to image against strength, and inpainting, ours against diffusers.

    python benchmarks/editing.py               # 25 DDIM steps, guidance 7.5, batch 16
    python benchmarks/editing.py --repeats 9   # more repeats, steadier medians

- image to image (`sdlearn.editing.image_to_image` on `fashion_text2image`): milliseconds per
  image at strengths 0.2 to 1.0. Strength sets how many of the steps run, int(steps x strength),
  so the time should grow in proportion; beside it, `StableDiffusionImg2ImgPipeline` on the
  same inputs and the ratio of the two;
- inpainting (`sdlearn.editing.inpaint`): by blending with the 4-channel text-to-image U-Net,
  and with the 9-channel `fashion_inpainting` U-Net, against `StableDiffusionInpaintPipeline`
  on the same inputs: milliseconds per image, the ratio (the target is 1.05x or less), and the
  largest pixel difference.

Ours and diffusers' run alternately and the medians are compared, so that drifts in the CPU's
speed hit both. It prints a table and writes it to book/_generated/editing_speed.md (the
benchmarks page shows it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import pipelines  # noqa: E402
from sdlearn.data import fashion_for_diffusion  # noqa: E402
from sdlearn.editing import image_to_image, inpaint, steps_for_strength  # noqa: E402
from sdlearn.masks import random_masks  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "editing_speed.md"
PROMPTS = ["a photo of an ankle boot", "a photo of a dress", "a photo of a bag", "a photo of a sneaker"]


def timed(first, second, repeats: int) -> tuple[float, float, float]:
    """Median seconds of `first()` and `second()`, run alternately after a warm-up, and their largest difference."""
    a, b = first(), second()
    difference = (a - b).abs().max().item()
    times = ([], [])
    for _ in range(repeats):
        for run, bucket in zip((first, second), times):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), difference


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    parser.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per setting (default 5)")
    parser.add_argument("--no-table", action="store_true", help="print only; do not write the table")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    text2image, inpainting = pipelines.load("fashion_text2image"), pipelines.load("fashion_inpainting")
    images = ((fashion_for_diffusion("test")[0][:args.batch] + 1) / 2).clamp(0, 1)
    masks = random_masks(args.batch, 32, generator=torch.Generator().manual_seed(0), full_p=0.0)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    common = dict(guidance_scale=args.guidance, num_inference_steps=args.steps)

    def g():
        return torch.Generator().manual_seed(0)

    img2img = StableDiffusionImg2ImgPipeline.from_pipe(text2image)
    img2img.set_progress_bar_config(disable=True)
    lines = ["Image to image (`fashion_text2image`):", "",
             "| strength | steps run | ms per image (ours) | diffusers | ours / diffusers | largest pixel difference |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for strength in (0.2, 0.4, 0.6, 0.8, 1.0):
        ours, theirs, difference = timed(
            lambda: image_to_image(text2image, prompts, images, strength=strength, **common, generator=g()),
            lambda: img2img(prompts, image=images, strength=strength, **common, generator=g(),
                            output_type="pt").images, args.repeats)
        lines.append(f"| {strength:.1f} | {steps_for_strength(args.steps, strength)} | "
                     f"{1000 * ours / args.batch:.1f} | {1000 * theirs / args.batch:.1f} | {ours / theirs:.3f}x | "
                     f"{difference:.1e} |")
        print(lines[-1], flush=True)

    lines += ["", "Inpainting (strength 1, random masks):", "",
              "| U-Net | ms per image (ours) | diffusers | ours / diffusers | largest pixel difference |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, pipe in (("4 channels, blending (`fashion_text2image`)", text2image),
                       ("9 channels (`fashion_inpainting`)", inpainting)):
        reference = StableDiffusionInpaintPipeline.from_pipe(pipe)
        reference.set_progress_bar_config(disable=True)
        ours, theirs, difference = timed(
            lambda: inpaint(pipe, prompts, images, masks, **common, generator=g()),
            lambda: reference(prompts, image=images, mask_image=masks, **common, generator=g(),
                              output_type="pt").images, args.repeats)
        lines.append(f"| {name} | {1000 * ours / args.batch:.1f} | {1000 * theirs / args.batch:.1f} | "
                     f"{ours / theirs:.3f}x | {difference:.1e} |")
        print(lines[-1], flush=True)
    lines += ["", f"{args.steps} DDIM steps at guidance scale {args.guidance:g}, batches of {args.batch} 32x32 "
              f"Fashion-MNIST test images, encoding and decoding included; medians of {args.repeats} alternating "
              f"runs on {torch.get_num_threads()} CPU threads, measured by `benchmarks/editing.py`."]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the shipped models inpaint: blending with the text-to-image U-Net against the 9-channel model.

    python benchmarks/inpainting_quality.py            # 100 test pictures per edit, 25 DDIM steps
    python benchmarks/inpainting_quality.py --n 50     # quicker

Each edit masks part of test pictures of one class and prompts for a class (another one, or
the picture's own class for a repair). For each method it measures, with the shipped
classifier: the share of results in the prompt's class and in the picture's own class, the mean
absolute change outside the mask (`sdlearn.metrics.change_outside`; the autoencoder's round trip
alone sets the floor, shown as "real"), the seam across the mask's border (`sdlearn.metrics.seam`;
the real pictures' own value is the mark of a seamless result) and the share judged realistic
(`sdlearn.metrics.realism`). It prints a Markdown table and writes it to
book/_generated/inpainting_quality.md (the model card of `fashion_inpainting` shows it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import pipelines  # noqa: E402
from sdlearn.data import FASHION_CAPTION_NAMES, fashion_caption, fashion_for_diffusion  # noqa: E402
from sdlearn.editing import encode_image, inpaint  # noqa: E402
from sdlearn.masks import half_mask, random_masks  # noqa: E402
from sdlearn.metrics import change_outside, classify, realism, seam, shipped_classifier  # noqa: E402
from sdlearn.text_to_image import latents_to_images  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "inpainting_quality.md"

# (the pictures' class, the mask: a half or "random", the prompt's class)
EDITS = [(9, "upper", 7), (0, "lower", 3), (7, "upper", 9), (1, "left", 3), (8, "random", 8), (4, "random", 4)]


def masks_for(kind: str, n: int) -> torch.Tensor:
    if kind == "random":                       # the training distribution, without full masks
        return random_masks(n, 32, generator=torch.Generator().manual_seed(1), full_p=0.0)
    return half_mask(32, kind)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="test pictures per edit (default 100)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    parser.add_argument("--guidance", type=float, default=5.0, help="guidance scale (default 5)")
    parser.add_argument("--no-table", action="store_true", help="print only; do not write the table")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    started = time.perf_counter()
    methods = {"blend (4-channel)": pipelines.load("fashion_text2image"),
               "9-channel": pipelines.load("fashion_inpainting")}
    vae = methods["9-channel"].vae
    classifier = shipped_classifier()
    images, labels = fashion_for_diffusion("test")
    images = (images + 1) / 2
    lines = ["| edit | mask | method | prompt's class | own class | change outside | seam | judged realistic |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for source, kind, target in EDITS:
        pictures = images[labels == source][:args.n]
        masks = masks_for(kind, len(pictures))
        name = (f"{FASHION_CAPTION_NAMES[source]} -> {FASHION_CAPTION_NAMES[target]}" if source != target
                else f"{FASHION_CAPTION_NAMES[source]}, repaired")
        for method, pipe in methods.items():
            results = inpaint(pipe, [fashion_caption(target)] * len(pictures), pictures, masks,
                              guidance_scale=args.guidance, num_inference_steps=args.steps,
                              generator=torch.Generator().manual_seed(source))
            classes = classify(classifier, results[..., 2:30, 2:30])[0].argmax(1)
            judged = realism(results[..., 2:30, 2:30], classifier).realistic.float().mean().item()
            lines.append(f"| {name} | {kind} | {method} | {(classes == target).float().mean().item():.0%} | "
                         f"{(classes == source).float().mean().item():.0%} | "
                         f"{change_outside(results, pictures, masks).mean().item():.3f} | "
                         f"{seam(results, masks).mean().item():.3f} | {judged:.0%} |")
            print(lines[-1], flush=True)
        round_trip = latents_to_images(vae, encode_image(vae, pictures, torch.Generator().manual_seed(0)))
        lines.append(f"| {name} | {kind} | real pictures | | | {change_outside(round_trip, pictures, masks).mean().item():.3f} "
                     f"| {seam(pictures, masks).mean().item():.3f} | |")
        print(lines[-1], flush=True)
    lines += ["", f"{args.n} Fashion-MNIST test pictures per edit, {args.steps} DDIM steps, guidance scale "
              f"{args.guidance:g}, strength 1, fixed seeds; measured by `benchmarks/inpainting_quality.py`. "
              f"For the real pictures, \"change outside\" is the autoencoder's round trip alone (the floor for "
              f"any method that decodes the whole picture) and \"seam\" the pictures' own value."]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

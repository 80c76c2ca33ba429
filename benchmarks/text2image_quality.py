"""The shipped text-to-image model's quality: prompts per class, guidance scale, superclasses, negative prompts.

    python benchmarks/text2image_quality.py            # 50 images per prompt, 25 steps
    python benchmarks/text2image_quality.py -n 20      # quicker, noisier

Every prompt's images come from one seeded generator and are judged by the shipped classifier
(`sdlearn.metrics.evaluate_prompt`):

- accuracy: the fraction of images classified as the class the prompt names;
- diversity: the mean distance between two images' classifier features, divided by the same
  for real test images of that class (1: as varied as the real images, 0: one image repeated);
- saturation: the fraction of pixels at full white (>= 0.98), beside the real images'.

It writes book/_generated/text2image_quality.md (tables) and text2image_guidance.png (the
sweep), which the model card shows.
"""

from __future__ import annotations

import argparse
import sys
from statistics import mean
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import pipelines  # noqa: E402
from sdlearn.data import FASHION_CAPTION_NAMES, FASHION_CLASSES, FASHION_SUPERCLASSES, fashion_caption  # noqa: E402
from sdlearn.metrics import evaluate_prompt  # noqa: E402
from sdlearn.utils import atomic_path, atomic_write  # noqa: E402

OUT = ROOT / "book" / "_generated"
DEFAULT_SCALE = 7.5                  # StableDiffusionPipeline's default, and sdlearn.guidance's
SCALES = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 12.0)
SNEAKER = FASHION_CAPTION_NAMES.index("sneaker")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="images per prompt (default 50)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    parser.add_argument("--model", default="fashion_text2image", help="pipeline name or folder")
    parser.add_argument("--no-table", action="store_true", help="print only; do not write book/_generated")
    args = parser.parse_args(argv)
    pipe = pipelines.load(args.model)
    torch.set_grad_enabled(False)

    def run(prompt, target, scale=DEFAULT_SCALE, negative=None, seed=0):
        return evaluate_prompt(pipe, prompt, target, negative_prompt=negative, guidance_scale=scale, n=args.n,
                               num_inference_steps=args.steps,
                               generator=torch.Generator().manual_seed(seed))

    # 1. the guidance sweep over the ten class prompts (its default-scale column is the class table)
    sweep = {scale: [run(fashion_caption(label), label, scale, seed=label) for label in range(10)]
             for scale in SCALES}
    for scale, reports in sweep.items():
        print(f"guidance {scale:>4}: accuracy {mean(r.accuracy for r in reports):.3f}  "
              f"diversity {mean(r.diversity for r in reports):.3f}  "
              f"saturation {mean(r.saturation for r in reports):.4f}", flush=True)
    per_class = sweep[DEFAULT_SCALE]
    # 2. superclass prompts, and 3. the negative prompt
    supers = {name: run(fashion_caption(members[0], superclass=True), members, seed=100 + i)
              for i, (name, members) in enumerate(FASHION_SUPERCLASSES.items()) if len(members) > 1}
    shoes = FASHION_SUPERCLASSES["shoe"]
    negatives = [run("a photo of a shoe", shoes, seed=200),
                 run("a photo of a shoe", shoes, negative="a photo of a sneaker", seed=200),
                 run("a photo of a shoe", shoes, negative="sneaker", seed=200)]

    lines = [f"**Prompts per class** at guidance scale {DEFAULT_SCALE:g} ({args.n} images each, "
             f"{args.steps} DDIM steps):", "",
             "| prompt | accuracy | diversity | saturated pixels (real) | mostly confused with |",
             "| --- | ---: | ---: | ---: | --- |"]
    for label, r in enumerate(per_class):
        others = [(count, FASHION_CLASSES[c]) for c, count in enumerate(r.histogram) if c != label and count]
        confused = ", ".join(f"{name} ({count})" for count, name in sorted(others, reverse=True)[:2]) or "none"
        lines.append(f"| {r.prompt} | {r.accuracy:.0%} | {r.diversity:.2f} | {r.saturation:.2%} "
                     f"({r.saturation_real:.2%}) | {confused} |")
    lines += ["", f"Lowest accuracy {min(r.accuracy for r in per_class):.0%}, mean "
              f"{mean(r.accuracy for r in per_class):.1%}.", "",
              "**Guidance scale**, averaged over the ten class prompts:", "",
              "| guidance scale | accuracy | lowest class accuracy | diversity | saturated pixels |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for scale, reports in sweep.items():
        lines.append(f"| {scale:g} | {mean(r.accuracy for r in reports):.1%} | "
                     f"{min(r.accuracy for r in reports):.0%} | {mean(r.diversity for r in reports):.2f} | "
                     f"{mean(r.saturation for r in reports):.2%} |")
    lines += ["", f"**Superclass prompts** (guidance {DEFAULT_SCALE:g}): how the images spread over the classes "
              "of the superclass.", "", "| prompt | in the superclass | spread |", "| --- | ---: | --- |"]
    for name, r in supers.items():
        spread = ", ".join(f"{FASHION_CLASSES[c]} {r.histogram[c]}" for c in FASHION_SUPERCLASSES[name])
        lines.append(f"| {r.prompt} | {r.accuracy:.0%} | {spread} |")
    lines += ["", f"**Negative prompt** (guidance {DEFAULT_SCALE:g}, the same seed for each row):", "",
              "| prompt | negative prompt | sneakers | still shoes | sandals / ankle boots |",
              "| --- | --- | ---: | ---: | --- |"]
    for r in negatives:
        lines.append(f"| {r.prompt} | {r.negative_prompt or '(none)'} | {r.histogram[SNEAKER] / r.n:.0%} | "
                     f"{r.accuracy:.0%} | {r.histogram[5]} / {r.histogram[9]} |")
    lines += ["", f"Measured by `benchmarks/text2image_quality.py` with the shipped classifier; "
              f"{args.n * (len(SCALES) * 10 + len(supers) + len(negatives)):,} images in "
              f"{sum(r.seconds for rs in sweep.values() for r in rs) + sum(r.seconds for r in supers.values()) + sum(r.seconds for r in negatives):.0f} s "
              f"on {torch.get_num_threads()} CPU threads."]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(OUT / "text2image_quality.md", "w") as handle:
            handle.write(table)
        plot_sweep(sweep, OUT / "text2image_guidance.png")
        print(f"wrote {(OUT / 'text2image_quality.md').relative_to(ROOT)} and text2image_guidance.png")
    return 0


def plot_sweep(sweep, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(sweep)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (key, label) in zip(axes, [("accuracy", "accuracy"), ("diversity", "diversity (real = 1)"),
                                       ("saturation", "saturated pixels")]):
        for label_index in range(10):
            ax.plot(scales, [getattr(sweep[s][label_index], key) for s in scales], color="0.8", lw=0.8)
        ax.plot(scales, [mean(getattr(r, key) for r in sweep[s]) for s in scales], "o-", color="C0", lw=2,
                label="mean of 10 prompts")
        ax.set_xlabel("guidance scale")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle("fashion_text2image: one prompt per class (grey), their mean (blue)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

"""Which images does `sdlearn.metrics.realism` judge realistic? The evidence behind its threshold.

    python benchmarks/realism.py

For each kind of image: how many, the classifier's mean confidence, the fraction judged
realistic and the mean realism (threshold / distance to the 5th nearest real training image;
real test images: 99% and about 2.1). Confidence cannot tell speckle from clothes; realism
should put real images and the shipped models' samples far above noise, speckle, Heun on the
cosine schedule (lesson 06) and decoded random latents. Prints a Markdown table and writes it
to book/_generated/realism.md (shown on the Benchmarks page); about 80 s on two busy CPU threads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import weights  # noqa: E402
from sdlearn.data import load_fashion_mnist, to_classifier_range  # noqa: E402
from sdlearn.metrics import REALISM_REFERENCE_SIZE, classify, realism, shipped_classifier  # noqa: E402
from sdlearn.models.autoencoder import decode_latents  # noqa: E402
from sdlearn.pipelines import load  # noqa: E402
from sdlearn.samplers import as_noise_model, sample_ddim, sample_heun  # noqa: E402
from sdlearn.schedules import make_schedule  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "realism.md"

PROMPTS = ["a photo of a shirt", "a photo of a sneaker", "a photo of a dress", "a photo of a bag",
           "a photo of a pullover", "a photo of a shoe"]


def image_sets() -> dict[str, torch.Tensor]:
    """Name -> images (N, 1, 28, 28) in [0, 1], every set from its own seeded generator."""
    sets = {}
    test_images, _ = load_fashion_mnist("test")
    train_images, _ = load_fashion_mnist("train")
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    sets["real test images (the calibration set)"] = test_images
    sets["real training images outside the reference"] = train_images[order[REALISM_REFERENCE_SIZE:][:2000]]

    alphas_cumprod = weights.noise_schedule("ddpm_fashion").alphas_cumprod
    model = as_noise_model(weights.load("ddpm_fashion"))
    noise = torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    schedule = make_schedule(alphas_cumprod, 25, timestep_spacing="trailing")
    sets["ddpm_fashion, DDIM 25 steps"] = to_classifier_range(
        sample_ddim(model, noise, schedule, prediction_type="v_prediction", clip_sample=True))
    for steps in (5, 10, 20):
        schedule = make_schedule(alphas_cumprod, steps, timestep_spacing="trailing")
        sets[f"ddpm_fashion, Heun {steps} steps (speckle)"] = to_classifier_range(
            sample_heun(model, noise[:64] * schedule.init_noise_sigma, schedule, prediction_type="v_prediction"))

    pipe = load("fashion_text2image")
    pipe.set_progress_bar_config(disable=True)
    for prompt in PROMPTS:
        images = pipe([prompt] * 32, guidance_scale=7.5, num_inference_steps=25, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).images
        sets[f"fashion_text2image, {prompt!r}"] = images.float()[..., 2:30, 2:30]

    generator = torch.Generator().manual_seed(2)
    for density in (0.2, 0.5, 0.8):
        white = torch.rand(200, 1, 28, 28, generator=generator) < density
        sets[f"speckle, {density:.0%} white pixels"] = white.float()
    sets["uniform noise"] = torch.rand(200, 1, 28, 28, generator=generator)
    sets["Gaussian noise (0.5 +- 0.3)"] = (0.5 + 0.3 * torch.randn(200, 1, 28, 28, generator=generator)).clamp(0, 1)
    vae = weights.load("vae_fashion")
    for scale in (0.5, 1.0, 2.0, 3.0):
        with torch.no_grad():
            latents = torch.randn(200, 4, 8, 8, generator=generator) * scale
            sets[f"vae_fashion decoding random latents x {scale:g}"] = to_classifier_range(decode_latents(vae, latents))
    return sets


def main() -> int:
    torch.set_num_threads(2)
    started = time.perf_counter()
    rows = ["| images | n | mean confidence | judged realistic | mean realism |", "|---|---:|---:|---:|---:|"]
    for name, images in image_sets().items():
        confidence = classify(shipped_classifier(), images)[0].max(-1).values.mean().item()
        judged = realism(images)
        rows.append(f"| {name} | {len(images)} | {confidence:.2f} | {judged.realistic.float().mean().item():.1%} "
                    f"| {judged.realism.mean().item():.2f} |")
    text = ("\n".join(rows) + f"\n\nJudged with the shipped classifier; the threshold is the 99th percentile of "
            f"real test images' distance, so about 1% of real images fail by construction.\n")
    print(text)
    with atomic_write(TABLE, "w") as handle:
        handle.write(text)
    print(f"{time.perf_counter() - started:.0f} s on {torch.get_num_threads()} CPU threads; wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

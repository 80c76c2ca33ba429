"""The same DDPM in pixels and in latents: training speed, sampling speed and sample quality.

    python benchmarks/latent_diffusion.py            # shipped ddpm_fashion against ldm_fashion
    python benchmarks/latent_diffusion.py -n 500     # fewer samples for the quality scores

- Training: optimizer steps per second of each recipe's U-Net at its recipe's batch size (128),
  bf16 autocast as in the recipes, after warm-up steps, and the time the recipe's steps take at
  that speed (the wall time a recipe records also holds data loading, EMA and checkpoints). The latent model trains on latents
  encoded once beforehand, so the encoder costs nothing per step; that one-off cost is given.
- Sampling: milliseconds per image for a batch of 250 with 25 DDIM steps; for the latent
  model this includes decoding the latents with the autoencoder.
- Quality: n samples per model with 50 DDIM steps, scored by `sdlearn.metrics` (class
  entropy, mean confidence, Fréchet distance in the classifier's feature space). The
  autoencoder's own reconstructions of test images are scored too: a latent model cannot beat
  the decoder it draws through.
- Uncertainty: each Fréchet distance is given with its bootstrap standard error (`frechet_bootstrap`:
  200 resamples, with replacement, of the n samples' features; the test set held fixed), and
  the difference latents minus pixels with a 95% interval of 1.96 standard errors of the
  resampled differences. An interval that contains 0 means the two cannot be ranked at this n.

The table is printed and written to book/_generated/latent_diffusion.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import weights  # noqa: E402
from sdlearn.losses import diffusion_loss  # noqa: E402
from sdlearn.metrics import classify, evaluate_samples, shipped_classifier  # noqa: E402
from sdlearn.metrics.images import frechet_bootstrap  # noqa: E402
from sdlearn.models.autoencoder import decode_latents, encode_latents  # noqa: E402
from sdlearn.models.unet import count_parameters  # noqa: E402
from sdlearn.data import fashion_for_diffusion, load_fashion_mnist, to_classifier_range  # noqa: E402
from sdlearn.models.autoencoder import encode_dataset  # noqa: E402
from sdlearn.recipes import DDPMRecipe, LatentDDPMRecipe  # noqa: E402
from sdlearn.precision import resolve_mixed_precision  # noqa: E402
from sdlearn.samplers import generate  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "latent_diffusion.md"
RESAMPLES = 200     # bootstrap resamples of each model's samples


def bootstrap_frechet(images: torch.Tensor, test_features: torch.Tensor, seed: int) -> torch.Tensor:
    """Fréchet distances to the test set of RESAMPLES resamples of `images` (classifier range)."""
    _, features = classify(shipped_classifier(), images)
    return frechet_bootstrap(features, test_features, RESAMPLES, generator=torch.Generator().manual_seed(seed))


def training_steps_per_second(recipe, shape: tuple, steps: int = 12, warmup: int = 3) -> float:
    """Optimizer steps per second of a freshly built U-Net of `recipe` on random data of `shape`."""
    from sdlearn.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(recipe.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    alphas_cumprod = recipe.noise_schedule().alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((recipe.train.batch_size, *shape), generator=generator)
    bf16 = resolve_mixed_precision(recipe.train.mixed_precision, "cpu") == "bf16"   # as the recipe trains
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(model, batch, alphas_cumprod, generator, prediction_type=recipe.prediction_type,
                                  snr_gamma=recipe.snr_gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


@torch.no_grad()
def sample(name: str, n: int, steps: int, seed: int = 0, vae=None) -> torch.Tensor:
    """n images in [-1, 1] (1x32x32) from a shipped pixel or latent DDPM."""
    info = weights.read_info(name)
    unet = weights.load(name)
    alphas_cumprod = weights.noise_schedule(name).alphas_cumprod
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    latent = vae is not None
    out = generate(unet, n, alphas_cumprod=alphas_cumprod, num_inference_steps=steps, timestep_spacing="trailing",
                   prediction_type=info["prediction_type"], clip_sample=not latent, shape=shape,
                   generator=torch.Generator().manual_seed(seed), decode=partial(decode_latents, vae) if latent else None)
    return out.clamp(-1, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixel", default="ddpm_fashion", help="pixel-space DDPM weights")
    parser.add_argument("--latent", default="ldm_fashion", help="latent DDPM weights")
    parser.add_argument("-n", type=int, default=2000, help="samples per model for the quality scores")
    parser.add_argument("--no-table", action="store_true")
    args = parser.parse_args(argv)

    latent_info = weights.read_info(args.latent)
    vae = weights.load(latent_info.get("autoencoder", "vae_fashion"))
    images, _ = fashion_for_diffusion("train")
    test_images, _ = fashion_for_diffusion("test")
    _, test_features = classify(shipped_classifier(), load_fashion_mnist("test")[0])   # as evaluate_samples
    start = time.perf_counter()
    encode_dataset(vae, images[:10000])
    encode_ms = (time.perf_counter() - start) / 10000 * 1000

    rows = {}
    for label, name, recipe, shape, model_vae, bootstrap_seed in [
            ("pixels, 1x32x32", args.pixel, DDPMRecipe(), (1, 32, 32), None, 0),
            ("latents, 4x8x8", args.latent, LatentDDPMRecipe(), (4, 8, 8), vae, 1)]:
        steps_per_second = training_steps_per_second(recipe, shape)
        sample(name, 50, 25, vae=model_vae)                              # warm-up
        start = time.perf_counter()
        sample(name, 250, 25, vae=model_vae)
        ms_per_image = (time.perf_counter() - start) / 250 * 1000
        samples = sample(name, args.n, 50, seed=1, vae=model_vae)
        report = evaluate_samples(to_classifier_range(samples))
        resampled = bootstrap_frechet(to_classifier_range(samples), test_features, seed=bootstrap_seed)
        info = weights.read_info(name)
        rows[label] = dict(params=count_parameters(weights.load(name)), numbers=shape[0] * shape[1] * shape[2],
                           steps_per_second=steps_per_second, ms_per_image=ms_per_image, report=report,
                           steps=info["settings"]["train"]["steps"], resampled=resampled)
        print(f"== {label}: {steps_per_second:.2f} steps/s, {ms_per_image:.1f} ms per image\n{report}\n"
              f"Fréchet distance's bootstrap standard error {resampled.std():.2f}\n", flush=True)

    with torch.no_grad():
        subset = test_images[:args.n]
        reconstructions = torch.cat([decode_latents(vae, encode_latents(vae, subset[i:i + 500]))
                                     for i in range(0, len(subset), 500)]).clamp(-1, 1)
    ceiling = evaluate_samples(to_classifier_range(reconstructions))
    ceiling_resampled = bootstrap_frechet(to_classifier_range(reconstructions), test_features, seed=2)
    print(f"== autoencoder reconstructions of {args.n} test images\n{ceiling}\n")

    lines = ["| denoised tensor | U-Net parameters | training steps/s (batch 128) | recipe's steps at that speed (min) | "
             "ms per image (25 steps) | class entropy | mean confidence | Fréchet distance ± standard error |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, row in rows.items():
        r = row["report"]
        lines.append(f"| {label} ({row['numbers']} numbers) | {row['params']:,} | {row['steps_per_second']:.2f} | "
                     f"{row['steps'] / row['steps_per_second'] / 60:.1f} ({row['steps']:,} steps) | "
                     f"{row['ms_per_image']:.1f} | "
                     f"{r.entropy:.3f} | {r.mean_confidence:.3f} | {r.frechet:.2f} ± {row['resampled'].std():.2f} |")
    lines.append(f"| autoencoder reconstructions of test images | | | | | {ceiling.entropy:.3f} | "
                 f"{ceiling.mean_confidence:.3f} | {ceiling.frechet:.2f} ± {ceiling_resampled.std():.2f} |")
    pixel, lat = rows["pixels, 1x32x32"], rows["latents, 4x8x8"]
    difference = lat["report"].frechet - pixel["report"].frechet
    margin = 1.96 * (lat["resampled"] - pixel["resampled"]).std().item()
    verdict = ("the interval contains 0: at this number of samples the two cannot be ranked on it"
               if abs(difference) < margin else
               f"the interval excludes 0: the {'latent' if difference < 0 else 'pixel'} model's samples are closer")
    lines += ["", f"The latent model takes {lat['steps_per_second'] / pixel['steps_per_second']:.1f}x "
              f"as many training steps per second and draws an image in "
              f"{lat['ms_per_image'] / pixel['ms_per_image']:.2f}x the time, decoding included. Encoding the "
              f"training set once costs {encode_ms:.2f} ms per image. Fréchet distance, latents minus pixels: "
              f"{difference:+.2f}, 95% interval [{difference - margin:+.2f}, {difference + margin:+.2f}] "
              f"(1.96 bootstrap standard errors, {RESAMPLES} resamples of each model's samples); {verdict}. "
              f"{args.n} samples per model, 50 DDIM steps "
              f"(trailing spacing), scored by the shipped classifier; the real training images score "
              f"{ceiling.frechet_real:.2f} against the test set. Measured on {torch.get_num_threads()} CPU threads."]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

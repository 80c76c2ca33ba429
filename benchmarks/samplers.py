"""Time per step of each sampler against diffusers' scheduler loop, and quality against steps.

    python benchmarks/samplers.py

Both loops drive the shipped DDPM from the same noise; the ratio ours / diffusers should stay
at or below 1.05 (the sampler's arithmetic is small next to the U-Net). Quality is the
Fréchet distance of 200 samples (sdlearn.metrics) at 5, 10 and 20 steps. The tables go
to book/_generated/samplers.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LMSDiscreteScheduler)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import weights  # noqa: E402
from sdlearn.metrics import evaluate_samples  # noqa: E402
from sdlearn.data import to_classifier_range  # noqa: E402
from sdlearn.recipes import DDPMRecipe  # noqa: E402
from sdlearn.samplers import SAMPLERS, as_noise_model, generate  # noqa: E402
from sdlearn.schedules import make_schedule  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
              "euler_ancestral": EulerAncestralDiscreteScheduler, "heun": HeunDiscreteScheduler,
              "lms": LMSDiscreteScheduler}
TABLE = ROOT / "book" / "_generated" / "samplers.md"


def diffusers_loop(scheduler, model, x, generator):
    for t in scheduler.timesteps:
        output = model(scheduler.scale_model_input(x, t), t)
        kwargs = {} if isinstance(scheduler, (HeunDiscreteScheduler, LMSDiscreteScheduler)) else {"generator": generator}
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    torch.set_num_threads(2)
    recipe = DDPMRecipe()
    alphas_cumprod = recipe.noise_schedule().alphas_cumprod
    model = as_noise_model(weights.load("ddpm_fashion"))
    steps, batch = 20, 64
    timing = ["| sampler | ours (ms/step) | diffusers (ms/step) | ratio |", "| --- | ---: | ---: | ---: |"]
    for name, cls in SCHEDULERS.items():
        extra = {"clip_sample": True} if name in ("ddpm", "ddim") else {}
        scheduler = cls(beta_schedule=recipe.beta_schedule, prediction_type=recipe.prediction_type,
                        timestep_spacing="trailing", **extra)
        scheduler.set_timesteps(steps)
        schedule = make_schedule(alphas_cumprod, steps, timestep_spacing="trailing")
        x = torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * float(scheduler.init_noise_sigma)

        def ours():
            SAMPLERS[name](model, x.clone(), schedule, prediction_type=recipe.prediction_type,
                           generator=torch.Generator().manual_seed(1), **extra)

        def theirs():
            scheduler.set_timesteps(steps)
            diffusers_loop(scheduler, model, x.clone(), torch.Generator().manual_seed(1))

        calls = 2 * steps - 1 if name == "heun" else steps
        a, b = best_of(ours) / calls * 1000, best_of(theirs) / calls * 1000
        timing.append(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.3f} |")
        print(timing[-1], flush=True)
    quality = ["| sampler | 5 steps | 10 steps | 20 steps |", "| --- | ---: | ---: | ---: |"]
    for name in SAMPLERS:
        row = [name]
        for n in (5, 10, 20):
            extra = {"clip_sample": True} if name in ("ddpm", "ddim") else {}
            images = generate(model, 200, alphas_cumprod=alphas_cumprod, sampler=name, num_inference_steps=n,
                              prediction_type=recipe.prediction_type, generator=torch.Generator().manual_seed(3),
                              **extra)
            row.append(f"{evaluate_samples(to_classifier_range(images.clamp(-1, 1))).frechet:.2f}")
        quality.append("| " + " | ".join(row) + " |")
        print(quality[-1], flush=True)
    text = ("Time per network call, batch of 64 images, shipped DDPM, 2 CPU threads (best of 3):\n\n"
            + "\n".join(timing) + "\n\nFréchet distance of 200 samples (lower is better):\n\n"
            + "\n".join(quality) + "\n")
    print(text)
    with atomic_write(TABLE, "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

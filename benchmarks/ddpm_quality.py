"""Judge pixel-space DDPMs on Fashion-MNIST with sdlearn.metrics and write the model-card table.

    python benchmarks/ddpm_quality.py                         # the shipped model
    python benchmarks/ddpm_quality.py runs/ddpm/snapshot-0000900.safetensors runs/ddpm_plain.safetensors

Each model draws 2,000 samples with 50 DDIM steps ("trailing" spacing, clipped x0) and is
scored by the shipped classifier: class entropy, mean confidence, and the Fréchet distance in
the classifier's feature space against the test set, beside the real-against-real baseline.
The table goes to book/_generated/ddpm_quality.md (shown on the model card).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdlearn import weights  # noqa: E402
from sdlearn.metrics import evaluate_samples  # noqa: E402
from sdlearn.data import to_classifier_range  # noqa: E402
from sdlearn.samplers import generate  # noqa: E402
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas  # noqa: E402
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "ddpm_quality.md"


def judge(path, n: int = 2000, steps: int = 50, seed: int = 0, beta_schedule=None, prediction_type=None):
    info = weights.read_info(path)
    beta_schedule = info.get("beta_schedule") or beta_schedule
    prediction_type = info.get("prediction_type") or prediction_type
    if beta_schedule is None or prediction_type is None:
        raise ValueError(f"{path} does not record its beta_schedule and prediction_type; pass --beta-schedule "
                         "and --prediction-type")
    unet = weights.load(path)
    alphas_cumprod = alphas_cumprod_from_betas(make_betas(beta_schedule, 1000))
    start = time.perf_counter()
    samples = generate(unet, n, alphas_cumprod=alphas_cumprod, sampler="ddim", num_inference_steps=steps,
                       timestep_spacing="trailing", prediction_type=prediction_type, clip_sample=True,
                       generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    return evaluate_samples(to_classifier_range(samples)), seconds, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="weights files or shipped names (default: ddpm_fashion)")
    parser.add_argument("-n", type=int, default=2000, help="samples per model")
    parser.add_argument("--labels", nargs="*", help="a label per model for the table")
    parser.add_argument("--no-table", action="store_true")
    parser.add_argument("--beta-schedule", help="for weights files that do not record it")
    parser.add_argument("--prediction-type", help="for weights files that do not record it")
    parser.add_argument("--minutes", nargs="*", type=float, help="training minutes per model, where not recorded")
    args = parser.parse_args(argv)
    models = args.models or ["ddpm_fashion"]
    labels = args.labels or models
    rows = []
    for index, (label, path) in enumerate(zip(labels, models)):
        report, seconds, info = judge(path, n=args.n, beta_schedule=args.beta_schedule,
                                      prediction_type=args.prediction_type)
        if args.minutes:
            info = {**info, "train_seconds": args.minutes[index] * 60}
        print(f"== {label} ({seconds:.0f} s to sample {args.n})\n{report}\n", flush=True)
        rows.append((label, report, info))
    lines = ["| model | training time (min) | class entropy | mean confidence | Fréchet distance | real baseline |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, report, info in rows:
        minutes = info.get("train_seconds", info.get("seconds"))
        minutes = f"{minutes / 60:.1f}" if minutes is not None else "?"
        lines.append(f"| {label} | {minutes} | {report.entropy:.3f} | {report.mean_confidence:.3f} | "
                     f"{report.frechet:.2f} | {report.frechet_real:.2f} |")
    lines.append("")
    lines.append(f"{args.n} samples per model, 50 DDIM steps (trailing spacing, x0 clipped to [-1, 1]), judged "
                 "by the shipped Fashion-MNIST classifier; the real baseline is the distance from 2,000 training "
                 "images to the test set.")
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_table:
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

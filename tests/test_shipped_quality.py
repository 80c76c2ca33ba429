"""The shipped pixel DDPM draws clothes: its samples judged by the shipped classifier (`sdlearn.metrics`).

ddpm_fashion predicts v on the cosine schedule ("squaredcos_cap_v2") and makes 32x32 images
in [-1, 1]. 200 samples from 25 DDIM steps ("trailing" spacing) are judged on their 28x28
centre, beside 200 real training images: the Fréchet distance of 200 images to the test set
is far above the 2,000-image baseline that `evaluate_samples` reports (14 against 1.4), so
samples are compared with as many real images.

Measured with seed 0 (seeds 1 and 2 in brackets):

                                   entropy              confidence         Fréchet distance
    200 real training images       0.993                0.94               14.3 (other draws 13.0 to 14.4)
    ddpm_fashion, 25 steps         0.993 (0.995 0.991)  0.88 (0.87 0.89)   52 (46 46)
    ddpm_fashion, 10 steps         0.979                0.87               63
    the same, read as epsilon*     0.33                 0.88               736
    random weights, 25 steps       0.18                 0.83               591

The thresholds: all ten classes (at least 5 of 200 each, entropy above 0.95), confidence above
0.8, and a Fréchet distance under 6 times the real images' (86). The model passes with a
margin of 1.65 on the distance; both broken cases fail the classes and the distance (by 7
times). Confidence fails real images blurred to 7x7 (0.62) or with noise of std 0.2 (0.77),
but not a broken model: the classifier confidently calls its blobs bags and shirts.
(* the same figures with 5, 8 or 10 steps: the wrong reading, not the step count, breaks it.)
"""

import pytest
import torch

from sdlearn import weights
from sdlearn.data import load_fashion_mnist, to_classifier_range
from sdlearn.metrics import SampleReport, evaluate_samples
from sdlearn.samplers import as_noise_model, sample_ddim
from sdlearn.schedules import make_schedule

N = 200


def real_report(n: int) -> SampleReport:
    """evaluate_samples on n real training images: the baseline for n samples."""
    images, _ = load_fashion_mnist("train")
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
    return evaluate_samples(images[chosen])


def quality_failures(samples: torch.Tensor, real: SampleReport) -> tuple[SampleReport, list[str]]:
    """Judge 32x32 samples in [-1, 1]; return the report and the names of the checks they fail."""
    report = evaluate_samples(to_classifier_range(samples))
    failures = []
    if report.entropy < 0.95 or min(report.histogram) < 5:          # every class, none much rarer than 1 in 10
        failures.append("classes")
    if report.mean_confidence < 0.8:                                 # real images: 0.94
        failures.append("confidence")
    if report.frechet > 6 * real.frechet:
        failures.append("frechet")
    return report, failures


def ddpm_samples(unet, num_inference_steps: int, prediction_type: str) -> torch.Tensor:
    alphas_cumprod = weights.noise_schedule("ddpm_fashion").alphas_cumprod
    schedule = make_schedule(alphas_cumprod, num_inference_steps, timestep_spacing="trailing")
    noise = torch.randn(N, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    return sample_ddim(as_noise_model(unet), noise, schedule, prediction_type=prediction_type)


@pytest.mark.slow
def test_shipped_ddpm_draws_varied_recognisable_clothes(debian_fashion):
    info = weights.read_info("ddpm_fashion")
    assert (info["beta_schedule"], info["prediction_type"]) == ("squaredcos_cap_v2", "v_prediction")
    unet = weights.load("ddpm_fashion").eval()
    real = real_report(N)
    report, failures = quality_failures(ddpm_samples(unet, 25, "v_prediction"), real)
    assert failures == [], f"{report}\n200 real images: Fréchet distance {real.frechet:.2f}"
    # The same weights and noise read as predicting epsilon: a broken sampler, which the thresholds must catch
    # (10 steps to keep it cheap; read as v, 10 steps still pass, with a Fréchet distance of 63).
    report, failures = quality_failures(ddpm_samples(unet, 10, "epsilon"), real)
    assert "classes" in failures and "frechet" in failures, f"{report}"

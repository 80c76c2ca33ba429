"""sdlearn.metrics, the shipped weights, and the training command line."""

import math
import subprocess
import sys

import pytest
import torch

from sdlearn import weights
from sdlearn.data import load_fashion_mnist
from sdlearn.metrics import classify, evaluate_samples, frechet_distance, normalized_entropy
from sdlearn.models.classifier import accuracy

from conftest import ROOT


def test_normalized_entropy_bounds():
    assert normalized_entropy([5] * 10) == pytest.approx(1.0)
    assert normalized_entropy([50] + [0] * 9) == pytest.approx(0.0)
    assert 0 < normalized_entropy([10, 10] + [0] * 8) == pytest.approx(math.log(2) / math.log(10))


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    b = torch.randn(4000, 3, generator=g)
    assert frechet_distance(a, b) < 0.02
    shifted = b + torch.tensor([2.0, 0.0, 0.0])
    assert frechet_distance(a, shifted) == pytest.approx(4.0, abs=0.1)     # ||mu_a - mu_b||^2
    scaled = 2 * b                                                           # Tr(1 + 4 - 2*2) = 1 per dimension
    assert frechet_distance(a, scaled) == pytest.approx(3.0, abs=0.15)


def test_shipped_classifier_reaches_its_stated_accuracy(debian_fashion):
    classifier = weights.load("fashion_classifier")
    images, labels = load_fashion_mnist("test")
    measured = accuracy(classifier, images, labels)
    assert measured >= 0.91
    assert measured == pytest.approx(weights.read_info("fashion_classifier")["test_accuracy"], abs=1e-4)


def test_real_images_score_as_real(debian_fashion):
    images, labels = load_fashion_mnist("test")
    report = evaluate_samples(images[:1000], labels=labels[:1000])
    assert report.entropy > 0.99 and report.accuracy > 0.9 and report.mean_confidence > 0.85
    assert report.frechet < 3 * report.frechet_real + 1.0


def test_collapsed_samples_score_badly(debian_fashion):
    images, labels = load_fashion_mnist("test")
    sneakers = images[labels == 7][:500]
    report = evaluate_samples(sneakers)
    assert report.entropy < 0.2
    assert report.frechet > 10 * report.frechet_real


def test_classify_rejects_diffusion_sized_images():
    with pytest.raises(ValueError, match="to_classifier_range"):
        classify(weights.load("fashion_classifier"), torch.zeros(2, 1, 32, 32))


def test_shipped_ddpm_loads_and_denoises():
    from sdlearn.recipes import DDPMRecipe, ddpm_alphas_cumprod
    from sdlearn.samplers import generate
    unet = weights.load("ddpm_fashion")
    info = weights.read_info("ddpm_fashion")
    assert info["train_seconds"] <= 40 * 60
    recipe = DDPMRecipe()
    samples = generate(unet, 4, alphas_cumprod=ddpm_alphas_cumprod(recipe), num_inference_steps=10,
                       prediction_type=recipe.prediction_type, clip_sample=True, seed=0)
    assert samples.shape == (4, 1, 32, 32)
    assert samples.min() >= -1 and samples.max() <= 1
    assert samples.std() > 0.3          # not a flat grey image
    again = generate(unet, 4, alphas_cumprod=ddpm_alphas_cumprod(recipe), num_inference_steps=10,
                     prediction_type=recipe.prediction_type, clip_sample=True, seed=0)
    assert torch.equal(samples, again)


def test_unknown_weights_list_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="fashion_classifier"):
        weights.load("stable-diffusion-9")


def test_train_command_line_lists_the_recipes():
    result = subprocess.run([sys.executable, "-m", "sdlearn.train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for name in ("classifier", "ddpm", "ddpm_plain", "autoencoder", "latent_ddpm", "clip"):
        assert name in result.stdout


def test_shipped_weights_stay_small():
    total = sum(p.stat().st_size for p in weights.WEIGHTS_DIR.rglob("*.safetensors"))   # pipeline folders too
    assert total < 40 * 2 ** 20


def test_shipped_autoencoder_reconstructs_and_scales(debian_fashion):
    """vae_fashion: 1x32x32 to 4x8x8; PSNR >= 24 dB on test images; scaled latents of unit variance."""
    from sdlearn.models.autoencoder import decode_latents, encode_latents, psnr
    from sdlearn.recipes import fashion_for_diffusion

    vae = weights.load("vae_fashion")
    info = weights.read_info("vae_fashion")
    assert type(vae).__name__ == "AutoencoderKL" and info["test_psnr"] >= 24
    assert vae.config.scaling_factor == pytest.approx(info["scaling_factor"])
    test_images, _ = fashion_for_diffusion("test")
    latents = encode_latents(vae, test_images[:1000])
    assert latents.shape == (1000, 4, 8, 8)
    assert 0.9 < latents.std().item() < 1.1
    reconstruction = decode_latents(vae, latents)
    crop = (slice(None), slice(None), slice(2, 30), slice(2, 30))
    assert psnr(reconstruction[crop], test_images[:1000][crop]).mean().item() >= 24


def test_shipped_latent_ddpm_draws_clothes_through_the_decoder(debian_fashion):
    """ldm_fashion: the DDPM recipe on vae_fashion's latents; its decoded samples are judged as clothes."""
    from sdlearn.metrics import evaluate_samples
    from sdlearn.models.autoencoder import decode_latents
    from sdlearn.recipes import DDPMRecipe, ddpm_alphas_cumprod, to_classifier_range
    from sdlearn.samplers import generate

    info = weights.read_info("ldm_fashion")
    unet = weights.load("ldm_fashion")
    vae = weights.load(info["autoencoder"])
    assert next(unet.parameters()).dtype == torch.float32          # stored in half precision, loaded in float32
    assert (unet.config.in_channels, unet.config.sample_size) == (vae.config.latent_channels, 8)
    alphas_cumprod = ddpm_alphas_cumprod(DDPMRecipe(beta_schedule=info["beta_schedule"]))
    images = generate(unet, 200, alphas_cumprod=alphas_cumprod, num_inference_steps=20,
                      prediction_type=info["prediction_type"], shape=(4, 8, 8), seed=0,
                      decode=lambda z: decode_latents(vae, z)).clamp(-1, 1)
    assert images.shape == (200, 1, 32, 32)
    report = evaluate_samples(to_classifier_range(images))
    assert report.entropy > 0.9 and report.mean_confidence > 0.75         # varied, and recognisable
    noise = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert evaluate_samples(to_classifier_range(noise)).frechet > 3 * report.frechet

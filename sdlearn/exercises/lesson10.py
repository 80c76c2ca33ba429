"""Checks for the exercises of lesson 10, latent diffusion."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake


@lru_cache(maxsize=1)
def _vae():
    from sdlearn import weights
    return weights.load("vae_fashion")


def _images(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(10)
    # smooth random blobs in [-1, 1]: image-like enough for the autoencoder, no dataset needed
    coarse = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)


def _close(a, b, atol=1e-4) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol)


@lru_cache(maxsize=1)
def _garments(n: int = 32) -> torch.Tensor:
    from sdlearn.data import fashion_for_diffusion
    images, _ = fashion_for_diffusion("test")
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(10))[:n]]


@exercise("10.1", "mirrored training latents")
def check_training_latents(training_latents):
    vae, images = _vae(), _garments()
    factor, n = vae.config.scaling_factor, len(images)
    with torch.no_grad():
        result = training_latents(vae, images.clone())
        mode = vae.encode(torch.cat([images, images.flip(-1)])).latent_dist.mode()
        latents, mirrored = mode[:n] * factor, mode[n:] * factor
        expected = torch.cat([latents, mirrored])
        # the experiment: decode the flipped latents and the mirrored images' own latents
        decoded = vae.decode(torch.cat([latents.flip(-1), mirrored]) / factor).sample
    target = images.flip(-1)
    error_flipped = (decoded[:n] - target).pow(2).mean().sqrt().item()
    error_encoded = (decoded[n:] - target).pow(2).mean().sqrt().item()
    measured = (f"decoded, the flipped latents are {error_flipped:.2f} (root mean square) from the mirror images, "
                f"{error_flipped / error_encoded:.1f} times the {error_encoded:.2f} of the mirror images' own latents "
                "(the autoencoder's reconstruction error)")
    if not isinstance(result, torch.Tensor):
        raise Failed(f"return a tensor of latents, got {type(result).__name__}.")
    if result.shape != expected.shape:
        raise Failed(f"{n} images of 1x32x32 give {n} latents and their mirror images {n} more: shape "
                     f"{tuple(expected.shape)}, got {tuple(result.shape)}.")
    if _close(result, torch.cat([latents, latents.flip(-1)])):
        raise Failed(f"flipping the latents does not give the latents of the mirror images: {measured}. The "
                     "encoder's learned filters are not mirror-symmetric, so a channel that responds to one "
                     "side of an edge does not swap with another when the picture is flipped. Encode the "
                     "mirror images.")
    name_the_mistake(result, {
        "the latent of a mirror image is not its flip, and not upside down either: flip(-2) turns images upside "
        "down; a mirror image flips the last axis, left to right, and must be encoded.":
            torch.cat([latents, latents.flip(-2)]),
        "that flips the images upside down (flip(-2)); a mirror image flips left to right, the last axis.":
            torch.cat([latents, vae.encode(images.flip(-2)).latent_dist.mode() * factor]),
        "put the images' own latents first, then the mirror images'.": torch.cat([mirrored, latents]),
        "multiply by vae.config.scaling_factor: the diffusion model is trained on scaled latents.":
            torch.cat([latents, mirrored]) / factor,
    }, atol=1e-4, rtol=0)
    if not _close(result, expected):
        raise Failed("the latents differ from the scaled posterior means (latent_dist.mode() * "
                     "vae.config.scaling_factor) of the images and then of images.flip(-1).")
    return (f"right to encode them: {measured}. The latent recipe does the same (sdlearn.recipes.latent_ddpm): "
            "it encodes the training set and its mirror images once, before training.")


@exercise("10.2", "scaled latents back to images")
def check_to_images(to_images):
    vae = _vae()
    g = torch.Generator().manual_seed(11)
    latents = torch.randn(4, 4, 8, 8, generator=g)
    factor = vae.config.scaling_factor
    with torch.no_grad():
        result = to_images(vae, latents.clone())
        expected = vae.decode(latents / factor).sample
        unscaled = vae.decode(latents).sample
        wrong_way = vae.decode(latents * factor).sample
    if not isinstance(result, torch.Tensor):
        raise Failed(f"return a tensor of images, got {type(result).__name__}.")
    if result.shape != expected.shape:
        raise Failed(f"4 latents of 4x8x8 decode to images of shape {tuple(expected.shape)}, got {tuple(result.shape)}; "
                     "vae.decode(...) returns an object whose .sample holds the images.")
    if _close(result, unscaled):
        raise Failed("divide the latents by vae.config.scaling_factor before decoding: the decoder was trained "
                     "on raw latents, not on the scaled ones the diffusion model produces.")
    if _close(result, wrong_way):
        raise Failed("you multiplied by the scaling factor; decoding divides by it.")
    if _close(result, expected.clamp(-1, 1)) and not _close(result, expected):
        raise Failed("return the decoder's output as it is, without clamping: clamp only to show the images.")
    if not _close(result, expected):
        raise Failed("the images differ from vae.decode(latents / vae.config.scaling_factor).sample.")
    return "the decoder's images, as sdlearn.models.autoencoder.decode_latents gives them."


@exercise("10.3", "the latent diffusion training loss")
def check_latent_loss(latent_loss):
    from sdlearn.models.unet import UNet, UNetConfig
    from sdlearn.schedules import alphas_cumprod_from_betas, make_betas

    vae, images = _vae(), _images(4)
    torch.manual_seed(0)
    unet = UNet(UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                           layers_per_block=1, attention_levels=(False, False), mid_attention=False,
                           norm_num_groups=4)).eval()
    alphas_cumprod = alphas_cumprod_from_betas(make_betas("squaredcos_cap_v2", 1000))
    t = torch.tensor([10, 250, 600, 990])
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        result = latent_loss(unet, vae, images.clone(), t, noise.clone(), alphas_cumprod)
        factor = vae.config.scaling_factor

        def loss(latents):
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            return ((unet(noisy, t) - noise) ** 2).mean()

        z = vae.encode(images).latent_dist.mode()
        expected = loss(z * factor)
        unscaled = loss(z)
    if not isinstance(result, torch.Tensor) or result.numel() != 1:
        raise Failed("return the loss as a single-number tensor (the mean squared error over everything).")
    if torch.isclose(result, unscaled, atol=1e-5):
        raise Failed("scale the latents by vae.config.scaling_factor before adding noise: the noise schedule "
                     "assumes data of about unit variance.")
    if not torch.isclose(result, expected, atol=1e-5):
        raise Failed(f"expected {expected.item():.5f}, got {result.item():.5f}. Encode (the posterior's mode, "
                     "scaled), noise with sqrt(alpha-bar_t) and sqrt(1 - alpha-bar_t), predict the noise with "
                     "unet(noisy, t), and take the mean squared error against the noise.")
    return "the DDPM loss, computed on scaled latents instead of pixels."


@exercise("10.4", "samples for a decisive benchmark")
def check_samples_needed(samples_needed):
    cases = [(7.68, 300, 2.2), (1.0, 1000, 3.0), (4.0, 500, 1.0)]        # (standard error, n, difference)

    def formula(se, n, d, z=1.96):
        return n * (z * se / d) ** 2

    got = []
    for se, n, d in cases:
        answer = samples_needed(se, n, d)
        if isinstance(answer, torch.Tensor) and answer.numel() == 1:
            answer = answer.item()
        if not isinstance(answer, (int, float)) or isinstance(answer, bool) or not math.isfinite(answer):
            raise Failed(f"return a number of samples, got {answer!r}.")
        got.append(answer)

    wrong = [
        ("the standard error shrinks as 1 / sqrt(n), not 1 / n: to divide it by k you need k squared times "
         "the samples.", [n * 1.96 * se / d for se, n, d in cases]),
        ("that puts the difference one standard error from zero, a 68% interval; 95% needs 1.96 standard errors.",
         [formula(se, n, d, z=1.0) for se, n, d in cases]),
        ("use 1.96 standard errors (a 95% interval), not 2.", [formula(se, n, d, z=2.0) for se, n, d in cases]),
        ("twice the answer: count the samples of one model (not of both), and take the standard error as "
         "given: it is already that of the difference, so do not multiply it by sqrt(2).",
         [2 * formula(se, n, d) for se, n, d in cases]),
        ("half the answer: the standard error given is already that of the difference; do not divide it by "
         "sqrt(2).", [formula(se / math.sqrt(2), n, d) for se, n, d in cases]),
        ("upside down: a larger standard error needs more samples, a larger difference fewer.",
         [n * (d / (1.96 * se)) ** 2 for se, n, d in cases]),
    ]
    for message, values in wrong:
        if all(abs(g - math.ceil(v)) <= 1 for g, v in zip(got, values)):
            raise Failed(message)
    for (se, n, d), answer in zip(cases, got):
        exact = formula(se, n, d)
        if abs(answer - math.ceil(exact)) > 1:
            raise Failed(f"samples_needed({se}, {n}, {d}) should be about {math.ceil(exact):,}, got {answer:,.1f}: "
                         "the standard error at m samples is standard_error * sqrt(n / m); find the m at which "
                         "1.96 of them equal the difference.")
        if answer != int(answer):
            raise Failed(f"round up to a whole number of samples: samples_needed({se}, {n}, {d}) gave {answer}.")
    return (f"with the lesson's standard error, 7.68 at 300 samples, a difference of 2.2 needs {int(got[0]):,} "
            f"samples per model, {int(got[0]) / 2000:.0f} times the benchmark's 2,000; a difference of 3 with an "
            f"error of 1 at 1,000 samples would need only {int(got[1]):,}.")

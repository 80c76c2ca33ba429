"""Lesson 10's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check


def encode(vae, images):
    return vae.encode(images).latent_dist.mode() * vae.config.scaling_factor


def latents_flipped(vae, images):
    latents = encode(vae, images)
    return torch.cat([latents, latents.flip(-1)])


def latents_upside_down(vae, images):
    latents = encode(vae, images)
    return torch.cat([latents, latents.flip(-2)])


def images_upside_down(vae, images):
    return torch.cat([encode(vae, images), encode(vae, images.flip(-2))])


def mirrored_first(vae, images):
    return torch.cat([encode(vae, images.flip(-1)), encode(vae, images)])


def latents_unscaled(vae, images):
    both = torch.cat([images, images.flip(-1)])
    return vae.encode(both).latent_dist.mode()


def mirrored_only(vae, images):
    return encode(vae, images.flip(-1))


def latents_sampled(vae, images):
    generator = torch.Generator().manual_seed(0)
    both = torch.cat([images, images.flip(-1)])
    return vae.encode(both).latent_dist.sample(generator) * vae.config.scaling_factor


def encoded_separately(vae, images):
    from sdlearn.models.autoencoder import encode_latents
    return torch.cat([encode_latents(vae, images), encode_latents(vae, images.flip(-1))])


def images_unscaled(vae, latents):
    return vae.decode(latents).sample


def images_multiplied(vae, latents):
    return vae.decode(latents * vae.config.scaling_factor).sample


def images_clamped(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


def loss_unscaled(unet, vae, images, t, noise, alphas_cumprod):
    latents = vae.encode(images).latent_dist.mode()
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return ((unet(a.sqrt() * latents + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()


def loss_swapped(unet, vae, images, t, noise, alphas_cumprod):
    latents = vae.encode(images).latent_dist.mode() * vae.config.scaling_factor
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return ((unet((1 - a).sqrt() * latents + a.sqrt() * noise, t) - noise) ** 2).mean()


@pytest.mark.parametrize("answer, words", [
    (latents_flipped, "flipping the latents does not give"),
    (latents_upside_down, "not upside down either"),
    (images_upside_down, "upside down (flip(-2))"),
    (mirrored_first, "images' own latents first"),
    (latents_unscaled, "multiply by vae.config.scaling_factor"),
    (mirrored_only, "shape"),
    (latents_sampled, "differ from the scaled posterior means"),
])
def test_wrong_training_latents_are_explained(answer, words):
    verdict = check("10.1", answer)
    assert not verdict.passed and words in verdict.message, verdict.message


def test_training_latents_report_the_measured_errors():
    verdict = check("10.1", encoded_separately)          # any correct way passes: encode_latents, in two calls
    assert verdict.passed, verdict.message
    # the experiment the check reports: mirrored latents decode several times worse than re-encoding
    ratio = float(verdict.message.split(" times the ")[0].split(", ")[-1])
    assert ratio > 3, verdict.message


@pytest.mark.parametrize("answer, words", [
    (images_unscaled, "divide the latents by vae.config.scaling_factor"),
    (images_multiplied, "you multiplied"),
    (images_clamped, "without clamping"),
])
def test_wrong_decodings_are_explained(answer, words):
    verdict = check("10.2", answer)
    assert not verdict.passed and words in verdict.message


@pytest.mark.parametrize("answer, words", [
    (loss_unscaled, "scale the latents"),
    (loss_swapped, "expected"),
])
def test_wrong_losses_are_explained(answer, words):
    verdict = check("10.3", answer)
    assert not verdict.passed and words in verdict.message


def needed(se, n, d, z=1.96):
    return math.ceil(n * (z * se / d) ** 2)


@pytest.mark.parametrize("answer", [
    needed,
    lambda se, n, d: needed(se, n, d, z=1.959964),
    lambda se, n, d: float(needed(se, n, d)),
    lambda se, n, d: torch.tensor(needed(se, n, d)),
    lambda se, n, d: math.floor(n * (1.96 * se / d) ** 2),       # within one sample of the smallest
])
def test_every_correct_sample_count_passes(answer):
    verdict = check("10.4", answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("answer, words", [
    (lambda se, n, d: math.ceil(n * 1.96 * se / d), "1 / sqrt(n), not 1 / n"),
    (lambda se, n, d: needed(se, n, d, z=1.0), "68%"),
    (lambda se, n, d: needed(se, n, d, z=2.0), "not 2"),
    (lambda se, n, d: 2 * needed(se, n, d), "of one model"),
    (lambda se, n, d: needed(se * math.sqrt(2), n, d), "do not multiply it by sqrt(2)"),
    (lambda se, n, d: needed(se / math.sqrt(2), n, d), "do not divide it by sqrt(2)"),
    (lambda se, n, d: math.ceil(n * (d / (1.96 * se)) ** 2), "upside down"),
    (lambda se, n, d: n * (1.96 * se / d) ** 2, "whole number"),
    (lambda se, n, d: se * math.sqrt(n / 2000), "should be about"),
    (lambda se, n, d: "10565", "return a number"),
])
def test_wrong_sample_counts_are_explained(answer, words):
    verdict = check("10.4", answer)
    assert not verdict.passed and words in verdict.message, verdict.message

"""Lesson 10's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check


def latents_unscaled(vae, images):
    return vae.encode(images).latent_dist.mode()


def latents_divided(vae, images):
    return vae.encode(images).latent_dist.mode() / vae.config.scaling_factor


def latents_sampled(vae, images):
    generator = torch.Generator().manual_seed(0)
    return vae.encode(images).latent_dist.sample(generator) * vae.config.scaling_factor


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
    (latents_unscaled, "multiply by vae.config.scaling_factor"),
    (latents_divided, "you divided"),
    (latents_sampled, "samples from the posterior"),
])
def test_wrong_encodings_are_explained(answer, words):
    verdict = check("10.1", answer)
    assert not verdict.passed and words in verdict.message


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

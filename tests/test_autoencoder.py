"""Autoencoders: shapes, the VAE's KL term and reparameterisation, the AutoencoderKL wrappers, metrics, errors."""

import math

import pytest
import torch
from diffusers import AutoencoderKL

from sdlearn.models.autoencoder import (Autoencoder, AutoencoderConfig, DiagonalGaussian, compute_scaling_factor,
                                        decode_latents, encode_latents, latent_autoencoder_config, psnr, ssim,
                                        vae_loss)

G = torch.Generator().manual_seed(0)


def test_shapes_and_compression():
    config = AutoencoderConfig(channels=(16, 32, 32), latent_channels=4)
    model = Autoencoder(config)
    x = torch.rand(3, 1, 32, 32, generator=G) * 2 - 1
    reconstruction, latent = model(x)
    assert latent.shape == (3, *config.latent_shape) == (3, 4, 8, 8)
    assert reconstruction.shape == x.shape
    assert config.factor == 4 and math.prod(x.shape[1:]) / latent[0].numel() == 4.0


def test_kl_term_equals_torch_distributions():
    moments = torch.randn(2, 8, 3, 3, generator=G)
    posterior = DiagonalGaussian(moments)
    normal = torch.distributions.Normal(posterior.mean, posterior.std)
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected, atol=1e-5, rtol=1e-5)
    standard = DiagonalGaussian(torch.zeros(1, 8, 3, 3))                       # N(0, 1) itself: KL 0
    assert standard.kl().item() == 0.0


def test_reparameterisation_is_seeded_and_differentiable():
    model = Autoencoder(AutoencoderConfig(channels=(16, 32), variational=True))
    x = torch.rand(2, 1, 32, 32, generator=G) * 2 - 1
    a = model(x, generator=torch.Generator().manual_seed(5))[0]
    b = model(x, generator=torch.Generator().manual_seed(5))[0]
    c = model(x, generator=torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    loss = vae_loss(model, x, generator=torch.Generator().manual_seed(0), kl_weight=0.1)
    loss.backward()
    assert model.encoder.conv_out.weight.grad.abs().sum() > 0                 # gradients reach mean and log-variance
    posterior = model.encode(x)
    sample = posterior.sample(torch.Generator().manual_seed(1))
    assert sample.shape == posterior.mean.shape == (2, 4, 16, 16)


def test_kl_weight_changes_the_loss_only_for_a_vae():
    x = torch.rand(2, 1, 32, 32, generator=G) * 2 - 1
    vae = Autoencoder(AutoencoderConfig(channels=(16, 32), variational=True))
    low = vae_loss(vae, x, torch.Generator().manual_seed(0), kl_weight=0.0)
    high = vae_loss(vae, x, torch.Generator().manual_seed(0), kl_weight=10.0)
    assert high > low
    plain = Autoencoder(AutoencoderConfig(channels=(16, 32)))
    assert vae_loss(plain, x, kl_weight=0.0) == vae_loss(plain, x, kl_weight=10.0)


def test_autoencoderkl_wrappers_and_scaling_factor():
    torch.manual_seed(0)
    vae = AutoencoderKL(**latent_autoencoder_config()).eval()
    images = torch.rand(64, 1, 32, 32, generator=G) * 2 - 1
    factor = compute_scaling_factor(vae, images)
    vae.register_to_config(scaling_factor=factor)
    latents = encode_latents(vae, images)
    assert latents.shape == (64, 4, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)
    decoded = decode_latents(vae, latents)
    expected = vae.decode(vae.encode(images).latent_dist.mode()).sample
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-5)
    sampled = encode_latents(vae, images[:2], generator=torch.Generator().manual_seed(0), sample=True)
    assert not torch.equal(sampled, latents[:2])


def test_psnr_and_ssim():
    x = torch.rand(2, 1, 16, 16, generator=G) * 2 - 1
    noisy = x + 0.1 * torch.randn(x.shape, generator=G)
    mse = (noisy - x).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(noisy, x), 10 * torch.log10(4 / mse))
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert (ssim(noisy, x) < 0.99).all() and (ssim(noisy, x) > ssim(torch.zeros_like(x), x)).all()


def test_bad_input_is_a_clear_error():
    model = Autoencoder(AutoencoderConfig(channels=(16, 32, 32)))
    with pytest.raises(ValueError, match="the images have 3 channels but this autoencoder takes 1"):
        model.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"multiples of the downsampling factor 4, got \(30, 30\)"):
        model.encode(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ValueError, match=r"expected a batch of images \(B, 1, H, W\), got \(32, 32\)"):
        model.encode(torch.zeros(32, 32))
    with pytest.raises(ValueError, match=r"expected latents \(B, 4, h, w\), got \(1, 3, 8, 8\)"):
        model.decode(torch.zeros(1, 3, 8, 8))
    vae = AutoencoderKL(**latent_autoencoder_config())
    with pytest.raises(ValueError, match="the images have 3 channels"):
        encode_latents(vae, torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 8, 8, 8\)"):
        decode_latents(vae, torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="24 is not divisible by norm_num_groups=16"):
        AutoencoderConfig(channels=(16, 24), norm_num_groups=16)

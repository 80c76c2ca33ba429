"""Autoencoders: shapes, the VAE's KL term and reparameterisation, the AutoencoderKL wrappers, metrics, errors."""

import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from sdlearn.losses import vae_loss
from sdlearn.models.autoencoder import (Autoencoder, AutoencoderConfig, DiagonalGaussian, compute_scaling_factor,
                                        decode_latents, encode_latents, latent_autoencoder_config)


def random_images(n, seed=0, size=32):
    """n images (n, 1, size, size) uniform in [-1, 1], the same for the same seed."""
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_and_compression():
    config = AutoencoderConfig(channels=(16, 32, 32), latent_channels=4)
    model = Autoencoder(config)
    x = random_images(3)
    reconstruction, latent = model(x)
    assert latent.shape == (3, *config.latent_shape) == (3, 4, 8, 8)
    assert reconstruction.shape == x.shape
    assert config.factor == 4 and math.prod(x.shape[1:]) / latent[0].numel() == 4.0


def test_kl_term_equals_torch_distributions():
    moments = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    posterior = DiagonalGaussian(moments)
    normal = torch.distributions.Normal(posterior.mean, posterior.std)
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected, atol=1e-5, rtol=1e-5)
    standard = DiagonalGaussian(torch.zeros(1, 8, 3, 3))                       # N(0, 1) itself: KL 0
    assert standard.kl().item() == 0.0


def test_reparameterisation_is_seeded_and_differentiable():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(channels=(16, 32), variational=True))
    x = random_images(2)
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
    x = random_images(2)
    torch.manual_seed(0)
    vae = Autoencoder(AutoencoderConfig(channels=(16, 32), variational=True))
    low = vae_loss(vae, x, torch.Generator().manual_seed(0), kl_weight=0.0)
    high = vae_loss(vae, x, torch.Generator().manual_seed(0), kl_weight=10.0)
    assert high > low
    plain = Autoencoder(AutoencoderConfig(channels=(16, 32)))
    assert vae_loss(plain, x, kl_weight=0.0) == vae_loss(plain, x, kl_weight=10.0)


def test_autoencoderkl_wrappers_and_scaling_factor():
    torch.manual_seed(0)
    vae = AutoencoderKL(**latent_autoencoder_config()).eval()
    images = random_images(64)
    factor = compute_scaling_factor(vae, images, batch_size=24)               # batches of 24, 24 and 16
    with torch.no_grad():
        unscaled = vae.encode(images).latent_dist.mean                         # all at once, by hand
    assert factor == pytest.approx(1 / unscaled.std().item(), rel=1e-5)
    vae.register_to_config(scaling_factor=factor)
    latents = encode_latents(vae, images)
    assert latents.shape == (64, 4, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)              # what the factor is for
    torch.testing.assert_close(latents, unscaled * factor)
    decoded = decode_latents(vae, latents)
    expected = vae.decode(vae.encode(images).latent_dist.mode()).sample
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-5)
    sampled = encode_latents(vae, images[:2], generator=torch.Generator().manual_seed(0), sample=True)
    assert not torch.equal(sampled, latents[:2])


def test_psnr_by_hand():
    from sdlearn.metrics import psnr

    target = torch.zeros(2, 1, 4, 4)
    off = torch.zeros(2, 1, 4, 4)
    off[0] += 0.1                                   # every pixel off by 0.1: MSE 0.01
    off[1, :, :2] = 1.0                             # half the pixels off by 1: MSE 0.5
    # range 2 (images in [-1, 1]): 10 log10(4 / 0.01) = 26.0206 dB and 10 log10(4 / 0.5) = 9.0309 dB
    torch.testing.assert_close(psnr(off, target), torch.tensor([26.0206, 9.0309]), atol=1e-4, rtol=0)
    # range 1 (images in [0, 1]): 10 log10(1 / 0.01) = 20 dB exactly
    assert psnr(off[:1], target[:1], data_range=1.0).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(target, off).tolist() == psnr(off, target).tolist()              # symmetric
    identical = psnr(target, target)
    assert torch.isfinite(identical).all() and (identical > 100).all()          # no division by zero


def ssim_by_windows(x: np.ndarray, y: np.ndarray, data_range: float, window: int) -> float:
    """SSIM of two (C, H, W) arrays (Wang et al., 2004, eq. 13), one 7x7 window at a time, averaged.

    The windows of border pixels reach into the image mirrored at its edge (numpy's "reflect").
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = window // 2
    values = []
    for xc, yc in zip(x, y):
        xp, yp = np.pad(xc, pad, mode="reflect"), np.pad(yc, pad, mode="reflect")
        for i in range(xc.shape[0]):
            for j in range(xc.shape[1]):
                a, b = xp[i:i + window, j:j + window], yp[i:i + window, j:j + window]
                mean_a, mean_b = a.mean(), b.mean()
                covariance = ((a - mean_a) * (b - mean_b)).mean()
                luminance = (2 * mean_a * mean_b + c1) / (mean_a ** 2 + mean_b ** 2 + c1)
                structure = (2 * covariance + c2) / (a.var() + b.var() + c2)
                values.append(luminance * structure)
    return float(np.mean(values))


def test_ssim_equals_a_window_by_window_reference():
    from sdlearn.metrics import ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 9, 11, generator=g) * 2 - 1                # two channels, H != W
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    expected = [ssim_by_windows(x[i].double().numpy(), y[i].double().numpy(), 2.0, 7) for i in range(2)]
    torch.testing.assert_close(ssim(x, y), torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_ssim_known_values_and_invariances():
    from sdlearn.metrics import ssim

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    # two flat images: no structure, so SSIM is the luminance term (2ab + c1) / (a^2 + b^2 + c1), c1 = 0.02^2
    flat = ssim(torch.full((1, 1, 8, 8), 0.5), torch.full((1, 1, 8, 8), -0.5)).item()
    assert flat == pytest.approx((-0.5 + 0.0004) / (0.5 + 0.0004), abs=1e-6)
    assert ssim(x, x + 0.2 * noise).tolist() == pytest.approx(ssim(x + 0.2 * noise, x).tolist(), abs=1e-6)
    # scaling both images and the data range together scales every term (and c1, c2) alike
    torch.testing.assert_close(ssim(3 * x, 3 * (x + 0.2 * noise), data_range=6.0), ssim(x, x + 0.2 * noise))
    # more noise, less similar; an unrelated image has no structure in common (SSIM near 0)
    scores = [ssim(x, x + level * noise) for level in (0.05, 0.2, 0.8)]
    assert (scores[0] > scores[1]).all() and (scores[1] > scores[2]).all() and (scores[0] > 0.9).all()
    unrelated = torch.rand(x.shape, generator=g) * 2 - 1
    assert (ssim(x, unrelated).abs() < 0.1).all()


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

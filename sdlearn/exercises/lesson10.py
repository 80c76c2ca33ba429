"""Checks for the exercises of lesson 10, latent diffusion."""

from __future__ import annotations

from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise


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


@exercise("10.1", "images to scaled latents")
def check_to_latents(to_latents):
    vae, images = _vae(), _images()
    with torch.no_grad():
        result = to_latents(vae, images.clone())
        posterior = vae.encode(images).latent_dist
    factor = vae.config.scaling_factor
    expected = posterior.mode() * factor
    if not isinstance(result, torch.Tensor):
        raise Failed(f"return a tensor of latents, got {type(result).__name__}.")
    if result.shape != expected.shape:
        raise Failed(f"the latents of 6 images of 1x32x32 have shape {tuple(expected.shape)}, got "
                     f"{tuple(result.shape)}. Use vae.encode(images).latent_dist.")
    if _close(result, posterior.mode()):
        raise Failed("multiply by vae.config.scaling_factor: the diffusion model was trained on latents of unit "
                     "variance, and the raw latents have a standard deviation of about 1 / scaling_factor.")
    if _close(result, posterior.mode() / factor):
        raise Failed("you divided by the scaling factor; encoding multiplies by it (decoding divides).")
    if _close(result, posterior.mean * factor) and not _close(result, expected):
        raise Failed("use the mode of the posterior (its mean), scaled.")
    if not _close(result, expected):
        if (result - expected).abs().max() < 5 * posterior.std.max() * factor + 1e-3:
            raise Failed("these look like samples from the posterior; for a repeatable encoding use its mean, "
                         "latent_dist.mode().")
        raise Failed("the latents differ from vae.encode(images).latent_dist.mode() * vae.config.scaling_factor.")
    return "the scaled latents, as sdlearn.models.autoencoder.encode_latents gives them."


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

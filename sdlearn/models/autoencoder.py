"""Autoencoders: squeeze images into a small latent tensor and back.

    model = Autoencoder(AutoencoderConfig(variational=True))    # a VAE for 1x32x32 images
    reconstruction, posterior = model(images, generator=g)
    loss = vae_loss(model, images, generator=g, kl_weight=1e-3)   # sdlearn.losses

Two kinds, built by the same class (lesson 09):

- a plain convolutional autoencoder: the encoder returns the latent itself;
- a variational autoencoder (VAE, Kingma and Welling, 2014): the encoder returns a diagonal
  Gaussian per image (a mean and a log-variance per latent number); training samples from it
  with the reparameterisation z = mean + std * noise, and a KL term pulls it towards N(0, I).

The latent autoencoder that the latent-diffusion and text-to-image models use is diffusers'
`AutoencoderKL` (the same architecture family as Stable Diffusion's); `encode_latents` and
`decode_latents` below wrap it with the input checks and the `scaling_factor`.

Shapes: images (B, C, H, W) in [-1, 1]; latents (B, latent_channels, H / f, W / f) with
f = 2 ** (len(channels) - 1) the downsampling factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdlearn.utils import randn_tensor


@dataclass
class AutoencoderConfig:
    in_channels: int = 1                 # image channels
    image_size: int = 32                 # the size it is trained on (any multiple of the factor works)
    channels: tuple = (32, 64, 64)       # feature channels per level; each level after the first halves H, W
    latent_channels: int = 4             # channels of the latent
    variational: bool = False            # a VAE: the encoder gives a mean and a log-variance
    norm_num_groups: int = 8

    def __post_init__(self):
        self.channels = tuple(self.channels)
        for c in self.channels:
            if c % self.norm_num_groups:
                raise ValueError(f"channels {self.channels}: {c} is not divisible by norm_num_groups="
                                 f"{self.norm_num_groups}")
        if self.image_size % self.factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by the downsampling factor {self.factor}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.factor
        return (self.latent_channels, side, side)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, and a residual connection."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Encoder(nn.Module):
    """conv_in, then per level a ConvBlock and (except at the last level) a stride-2 convolution."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.channels[0], 3, padding=1)
        layers = []
        for level, c in enumerate(cfg.channels):
            c_in = cfg.channels[max(level - 1, 0)]
            layers.append(ConvBlock(c_in, c, cfg.norm_num_groups))
            if level < len(cfg.channels) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(cfg.norm_num_groups, cfg.channels[-1])
        out = cfg.latent_channels * (2 if cfg.variational else 1)     # mean and log-variance for a VAE
        self.conv_out = nn.Conv2d(cfg.channels[-1], out, 3, padding=1)

    def forward(self, x):
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class Decoder(nn.Module):
    """The mirror image: conv_in from the latent, per level a ConvBlock and a 2x nearest upsampling."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        channels = list(reversed(cfg.channels))
        self.conv_in = nn.Conv2d(cfg.latent_channels, channels[0], 3, padding=1)
        layers = []
        for level, c in enumerate(channels):
            c_in = channels[max(level - 1, 0)]
            layers.append(ConvBlock(c_in, c, cfg.norm_num_groups))
            if level < len(channels) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], cfg.in_channels, 3, padding=1)

    def forward(self, z):
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


class DiagonalGaussian:
    """A Gaussian with a diagonal covariance per image: what a VAE's encoder returns."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)          # keeps exp() finite early in training
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reparameterisation trick: mean + std * noise, differentiable in mean and std."""
        noise = randn_tensor(self.mean.shape, generator, self.mean.device, self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(N(mean, std^2) || N(0, 1)) summed over the latent numbers of each image: (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class Autoencoder(nn.Module):
    """An encoder and a decoder; with `variational=True`, a VAE."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor):
        """The latent (B, latent_channels, H/f, W/f), or for a VAE the Gaussian it is drawn from."""
        check_images(x, self.config.in_channels, self.config.factor)
        moments = self.encoder(x)
        return DiagonalGaussian(moments) if self.config.variational else moments

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_latents(z, self.config.latent_channels)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        """(reconstruction, latent) for an autoencoder; (reconstruction, posterior) for a VAE."""
        encoded = self.encode(x)
        if self.config.variational:
            z = encoded.sample(generator) if sample else encoded.mode()
        else:
            z = encoded
        return self.decode(z), encoded




# --------------------------------------------------------------------------- checks

def check_images(x: torch.Tensor, channels: int, factor: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a batch of images (B, {channels}, H, W), got {shape}")
    if x.shape[1] != channels:
        raise ValueError(f"the images have {x.shape[1]} channels but this autoencoder takes {channels}; "
                         + ("convert them to greyscale first" if channels == 1 else "convert them to RGB first"))
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"height and width must be multiples of the downsampling factor {factor}, got "
                         f"{tuple(x.shape[-2:])}; pad or resize the images (Fashion-MNIST: pad 28x28 to 32x32)")


def check_latents(z: torch.Tensor, channels: int) -> None:
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != channels:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"expected latents (B, {channels}, h, w), got {shape}; latents come from this "
                         f"autoencoder's encoder, which has {channels} latent channels")


# --------------------------------------------------------------------------- diffusers' AutoencoderKL

def latent_autoencoder_config() -> dict:
    """The diffusers `AutoencoderKL` of the shipped latent models: 1x32x32 images to 4x8x8 latents (factor 4)."""
    return dict(in_channels=1, out_channels=1, latent_channels=4, sample_size=32,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, act_fn="silu",
                scaling_factor=1.0)


def autoencoder_factor(vae) -> int:
    """The downsampling factor of a diffusers AutoencoderKL: 2 ** (number of blocks - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, generator: torch.Generator | None = None,
                   sample: bool = False) -> torch.Tensor:
    """Images in [-1, 1] to latents multiplied by `scaling_factor` (what the diffusion model sees).

    By default the latent is the mean of the encoder's Gaussian; `sample=True` draws from it.
    """
    check_images(images, vae.config.in_channels, autoencoder_factor(vae))
    posterior = vae.encode(images).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mode()
    return latents * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents back to images in [-1, 1] (not clamped)."""
    check_latents(latents, vae.config.latent_channels)
    return vae.decode(latents / vae.config.scaling_factor).sample


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Scaled latents (the posterior means) of a whole image tensor, `batch_size` images at a time."""
    return torch.cat([encode_latents(vae, images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def compute_scaling_factor(vae, images: torch.Tensor, batch_size: int = 512) -> float:
    """1 / (standard deviation of the unscaled latents of `images`): scaled latents get unit variance.

    Stable Diffusion's 0.18215 was found the same way, on its own training images.
    """
    latents = torch.cat([vae.encode(images[i:i + batch_size]).latent_dist.mode()
                         for i in range(0, len(images), batch_size)])
    return float(1.0 / latents.float().std())

"""A U-Net that predicts noise, written to be read, with the layout of diffusers' UNet2DModel.

    x (B, C, H, W), t (B,)
      -> sinusoidal time embedding -> MLP -> temb (B, 4 * ch0)
      -> conv_in -> down blocks (ResNet blocks [+ attention], then a stride-2 conv) --skips--+
      -> mid block (ResNet, self-attention, ResNet)                                          |
      -> up blocks (concatenate a skip, ResNet block [+ attention]; nearest upsample + conv) <-+
      -> GroupNorm, SiLU, conv_out -> prediction (B, C_out, H, W)

The modules carry the names diffusers uses (`conv_in`, `time_embedding.linear_1`,
`down_blocks.0.resnets.0.conv1`, ...), so a state dict moves between the two unchanged.
Lesson 07 builds it block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    sample_size: int = 32                      # height = width of the images the model is trained on
    in_channels: int = 1                       # image channels in
    out_channels: int = 1                      # channels predicted (noise, or v)
    block_out_channels: tuple = (32, 64, 128)  # channels at each resolution; each level halves H and W
    layers_per_block: int = 2                  # ResNet blocks per down level (up levels get one more)
    attention_levels: tuple = (False, False, True)  # which levels add self-attention after each ResNet
    mid_attention: bool = True                 # self-attention in the middle block
    attention_head_dim: int = 32               # channels per attention head
    norm_num_groups: int = 8                   # GroupNorm groups; every channel count must divide by it
    norm_eps: float = 1e-5                     # GroupNorm epsilon
    dropout: float = 0.0                       # dropout inside ResNet blocks
    flip_sin_to_cos: bool = True               # time embedding order [cos, sin], as diffusers' UNet2DModel
    freq_shift: int = 0                        # diffusers' downscale_freq_shift of the time embedding

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_levels = tuple(self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(f"attention_levels has {len(self.attention_levels)} entries but block_out_channels "
                             f"has {len(self.block_out_channels)}; give one flag per level")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {self.block_out_channels}: {channels} is not divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def timestep_embedding(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0,
                       max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal embedding of DDPM (from the Transformer's positional encoding).

    Frequency k is max_period^(-k / (dim/2 - freq_shift)); each timestep becomes
    [sin(t f_0), ..., sin(t f_{d/2-1}), cos(t f_0), ...], or cos first with `flip_sin_to_cos`.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * frequencies[None, :]            # (B, dim/2)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)      # (B, dim)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Linear, SiLU, Linear: from the sinusoidal code to the vector every ResNet block receives."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, emb):
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResnetBlock2D(nn.Module):
    """GroupNorm, SiLU, conv; add the projected time embedding; GroupNorm, SiLU, dropout, conv; plus skip."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]    # (B, C) -> (B, C, 1, 1): same shift everywhere
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class SelfAttention2D(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"{channels} channels cannot be split into heads of {head_dim}")
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)          # (B, HW, C)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        q = q.view(b, -1, self.heads, c // self.heads).transpose(1, 2)          # (B, heads, HW, d)
        k = k.view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)                          # (B, heads, HW, d)
        out = out.transpose(1, 2).reshape(b, h * w, c)                          # (B, HW, C)
        out = self.to_out[1](self.to_out[0](out))
        return x + out.transpose(1, 2).view(b, c, h, w)


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """`layers` ResNet blocks (each optionally followed by attention), then a 2x downsample."""

    def __init__(self, in_ch, out_ch, temb_ch, layers, attention, downsample, cfg: UNetConfig):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps,
                           cfg.dropout) for i in range(layers)])
        self.attentions = nn.ModuleList(
            [SelfAttention2D(out_ch, cfg.attention_head_dim, cfg.norm_num_groups, cfg.norm_eps) for _ in range(layers)]
        ) if attention else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)]) if downsample else None

    def forward(self, x, temb):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """`layers` ResNet blocks, each taking one skip connection, then a 2x upsample."""

    def __init__(self, in_ch, prev_out_ch, out_ch, temb_ch, layers, attention, upsample, cfg: UNetConfig):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_ch = in_ch if i == layers - 1 else out_ch
            resnet_in = prev_out_ch if i == 0 else out_ch
            resnets.append(ResnetBlock2D(resnet_in + skip_ch, out_ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps,
                                         cfg.dropout))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            [SelfAttention2D(out_ch, cfg.attention_head_dim, cfg.norm_num_groups, cfg.norm_eps) for _ in range(layers)]
        ) if attention else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if upsample else None

    def forward(self, x, skips, temb):
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)            # (B, C + C_skip, H, W)
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, ch, temb_ch, attention, cfg: UNetConfig):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps, cfg.dropout)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList(
            [SelfAttention2D(ch, cfg.attention_head_dim, cfg.norm_num_groups, cfg.norm_eps)]) if attention else None

    def forward(self, x, temb):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class UNet(nn.Module):
    """The noise-predicting U-Net: `model(x, t)` returns a tensor shaped like x (with out_channels)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = cfg = config
        channels = cfg.block_out_channels
        temb_ch = channels[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb_ch)
        self.down_blocks = nn.ModuleList()
        out_ch = channels[0]
        for level, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = level == len(channels) - 1
            self.down_blocks.append(DownBlock(in_ch, out_ch, temb_ch, cfg.layers_per_block,
                                              cfg.attention_levels[level], not last, cfg))
        self.mid_block = MidBlock(channels[-1], temb_ch, cfg.mid_attention, cfg)
        self.up_blocks = nn.ModuleList()
        reversed_ch = list(reversed(channels))
        reversed_attention = list(reversed(cfg.attention_levels))
        out_ch = reversed_ch[0]
        for level in range(len(channels)):
            prev_out_ch, out_ch = out_ch, reversed_ch[level]
            in_ch = reversed_ch[min(level + 1, len(channels) - 1)]
            last = level == len(channels) - 1
            self.up_blocks.append(UpBlock(in_ch, prev_out_ch, out_ch, temb_ch, cfg.layers_per_block + 1,
                                          reversed_attention[level], not last, cfg))
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected a batch (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % cfg.downsampling or x.shape[-2] % cfg.downsampling:
            raise ValueError(f"height and width must be divisible by {cfg.downsampling} "
                             f"({len(cfg.block_out_channels) - 1} downsamplings), got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)
        # 1. time embedding
        temb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(temb.to(x.dtype))
        # 2. down: keep every intermediate result for the skip connections
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb)
            skips.extend(block_skips)
        # 3. middle
        h = self.mid_block(h, temb)
        # 4. up: each ResNet block consumes the most recent skip
        for block in self.up_blocks:
            h = block(h, skips, temb)
        # 5. out
        return self.conv_out(F.silu(self.conv_norm_out(h)))

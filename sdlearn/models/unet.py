"""A U-Net that predicts noise, written to be read, with the layout of diffusers' U-Nets.

    sample (B, C, H, W), timestep (B,) [, encoder_hidden_states (B, M, D)] [, class_labels (B,)]
      -> sinusoidal time embedding -> MLP (+ class embedding) -> temb (B, 4 * ch0)
      -> conv_in -> down blocks (ResNet blocks [+ attention], then a stride-2 conv) --skips--+
      -> mid block (ResNet, attention, ResNet)                                               |
      -> up blocks (concatenate a skip, ResNet block [+ attention]; nearest upsample + conv) <-+
      -> GroupNorm, SiLU, conv_out -> prediction (B, C_out, H, W)

One class covers both of diffusers' layouts, chosen by `UNetConfig.cross_attention_dim`:

- None: the attention blocks are self-attention over the pixels, as in `UNet2DModel`
  (the pixel DDPM of lessons 05-06);
- a number D: the attention blocks are spatial transformers (self-attention, then
  cross-attention to a context of D-dimensional tokens, then a feed-forward), as in
  `UNet2DConditionModel`, the U-Net of Stable Diffusion.

The modules carry diffusers' names (`conv_in`, `time_embedding.linear_1`,
`down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`, ...), so a state dict moves
between the two unchanged: `from_diffusers` and `to_diffusers` in `sdlearn.models.conversion`.
The forward pass takes diffusers' arguments, `unet(sample, timestep, encoder_hidden_states)`.
Lesson 07 builds it block by block; lesson 08 explains the attention blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdlearn.models.attention import SelfAttention2D, SpatialTransformer


@dataclass
class UNetConfig:
    sample_size: int = 32                      # height = width of the images the model is trained on
    in_channels: int = 1                       # image channels in
    out_channels: int = 1                      # channels predicted (noise, or v)
    block_out_channels: tuple = (32, 64, 128)  # channels at each resolution; each level halves H and W
    layers_per_block: int = 2                  # ResNet blocks per down level (up levels get one more)
    attention_levels: tuple = (False, False, True)  # which levels add attention after each ResNet
    mid_attention: bool = True                 # attention in the middle block
    attention_head_dim: int = 32               # channels per attention head (when num_attention_heads is None)
    num_attention_heads: int | tuple | None = None  # heads per level instead (Stable Diffusion 1.5: 8)
    norm_num_groups: int = 8                   # GroupNorm groups; every channel count must divide by it
    norm_eps: float = 1e-5                     # GroupNorm epsilon
    dropout: float = 0.0                       # dropout inside ResNet blocks
    flip_sin_to_cos: bool = True               # time embedding order [cos, sin], as diffusers' U-Nets
    freq_shift: int = 0                        # diffusers' downscale_freq_shift of the time embedding
    cross_attention_dim: int | None = None     # context size D: attention blocks become spatial transformers
    transformer_layers_per_block: int = 1      # transformer blocks inside each spatial transformer
    use_linear_projection: bool = False        # spatial transformer projections: linear (SD 2) or 1x1 conv (SD 1)
    num_class_embeds: int | None = None        # a learned embedding per class, added to the time embedding

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_levels = tuple(self.attention_levels)
        if isinstance(self.num_attention_heads, list):
            self.num_attention_heads = tuple(self.num_attention_heads)
        levels = len(self.block_out_channels)
        if len(self.attention_levels) != levels:
            raise ValueError(f"attention_levels has {len(self.attention_levels)} entries but block_out_channels "
                             f"has {levels}; give one flag per level")
        if isinstance(self.num_attention_heads, tuple) and len(self.num_attention_heads) != levels:
            raise ValueError(f"num_attention_heads has {len(self.num_attention_heads)} entries but there are "
                             f"{levels} levels; give one per level, or one number for all")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {self.block_out_channels}: {channels} is not divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")
        for level, channels in enumerate(self.block_out_channels):
            uses = self.attention_levels[level] or (self.mid_attention and level == levels - 1)
            if uses and channels % self.heads(level):
                raise ValueError(f"level {level} has {channels} channels, which cannot be split into "
                                 f"{self.heads(level)} attention heads")

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def conditional(self) -> bool:
        return self.cross_attention_dim is not None

    def heads(self, level: int) -> int:
        """Attention heads at a level (the middle block uses the last level's)."""
        if isinstance(self.num_attention_heads, tuple):
            return self.num_attention_heads[level]
        if self.num_attention_heads is not None:
            return self.num_attention_heads
        return max(1, self.block_out_channels[level] // self.attention_head_dim)


def make_attention(channels: int, level: int, cfg: UNetConfig) -> nn.Module:
    """The attention block at a level: self-attention (UNet2DModel) or a spatial transformer."""
    if cfg.conditional:
        return SpatialTransformer(channels, cfg.heads(level), cfg.cross_attention_dim, cfg.norm_num_groups,
                                  cfg.transformer_layers_per_block, cfg.use_linear_projection)
    return SelfAttention2D(channels, channels // cfg.heads(level), cfg.norm_num_groups, cfg.norm_eps)


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

    def __init__(self, in_ch, out_ch, temb_ch, layers, attention, downsample, level, cfg: UNetConfig):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps,
                           cfg.dropout) for i in range(layers)])
        self.attentions = nn.ModuleList(
            [make_attention(out_ch, level, cfg) for _ in range(layers)]) if attention else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)]) if downsample else None

    def forward(self, x, temb, encoder_hidden_states=None):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """`layers` ResNet blocks, each taking one skip connection (plus attention), then a 2x upsample."""

    def __init__(self, in_ch, prev_out_ch, out_ch, temb_ch, layers, attention, upsample, level, cfg: UNetConfig):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_ch = in_ch if i == layers - 1 else out_ch
            resnet_in = prev_out_ch if i == 0 else out_ch
            resnets.append(ResnetBlock2D(resnet_in + skip_ch, out_ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps,
                                         cfg.dropout))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            [make_attention(out_ch, level, cfg) for _ in range(layers)]) if attention else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if upsample else None

    def forward(self, x, skips, temb, encoder_hidden_states=None):
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)            # (B, C + C_skip, H, W)
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """ResNet block, attention, ResNet block, at the lowest resolution."""

    def __init__(self, ch, temb_ch, attention, cfg: UNetConfig):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, temb_ch, cfg.norm_num_groups, cfg.norm_eps, cfg.dropout)
                                      for _ in range(2)])
        last = len(cfg.block_out_channels) - 1
        self.attentions = nn.ModuleList([make_attention(ch, last, cfg)]) if attention else None

    def forward(self, x, temb, encoder_hidden_states=None):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x, encoder_hidden_states)
        return self.resnets[1](x, temb)


class UNet(nn.Module):
    """The noise-predicting U-Net: `model(sample, timestep[, encoder_hidden_states][, class_labels])`.

    It returns a tensor shaped like `sample`. The arguments are those of diffusers' U-Nets:
    `encoder_hidden_states` is the context of cross-attention, the text encoder's output
    (B, M, D); `class_labels` are integers, one per image, for a class-conditional U-Net.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = cfg = config
        channels = cfg.block_out_channels
        temb_ch = channels[0] * 4
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb_ch)
        self.class_embedding = nn.Embedding(cfg.num_class_embeds, temb_ch) if cfg.num_class_embeds else None
        self.down_blocks = nn.ModuleList()
        out_ch = channels[0]
        for level, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = level == len(channels) - 1
            self.down_blocks.append(DownBlock(in_ch, out_ch, temb_ch, cfg.layers_per_block,
                                              cfg.attention_levels[level], not last, level, cfg))
        self.mid_block = MidBlock(channels[-1], temb_ch, cfg.mid_attention, cfg)
        self.up_blocks = nn.ModuleList()
        reversed_ch = list(reversed(channels))
        reversed_attention = list(reversed(cfg.attention_levels))
        out_ch = reversed_ch[0]
        for index in range(len(channels)):
            prev_out_ch, out_ch = out_ch, reversed_ch[index]
            in_ch = reversed_ch[min(index + 1, len(channels) - 1)]
            last = index == len(channels) - 1
            self.up_blocks.append(UpBlock(in_ch, prev_out_ch, out_ch, temb_ch, cfg.layers_per_block + 1,
                                          reversed_attention[index], not last, len(channels) - 1 - index, cfg))
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], cfg.out_channels, 3, padding=1)

    def _check_inputs(self, sample, encoder_hidden_states, class_labels):
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"expected a batch (B, {cfg.in_channels}, H, W) as sample, got {tuple(sample.shape)}")
        if sample.shape[-1] % cfg.downsampling or sample.shape[-2] % cfg.downsampling:
            raise ValueError(f"height and width must be divisible by {cfg.downsampling} "
                             f"({len(cfg.block_out_channels) - 1} downsamplings), got {tuple(sample.shape[-2:])}")
        context = encoder_hidden_states
        if cfg.conditional:
            if context is None:
                raise ValueError(f"this U-Net attends to a context: pass encoder_hidden_states of shape (B, tokens, "
                                 f"{cfg.cross_attention_dim}), e.g. the text encoder's last hidden state")
            if context.ndim != 3 or context.shape[-1] != cfg.cross_attention_dim:
                raise ValueError(f"encoder_hidden_states has shape {tuple(context.shape)}, but this U-Net's "
                                 f"cross_attention_dim is {cfg.cross_attention_dim}: expected (B, tokens, "
                                 f"{cfg.cross_attention_dim})")
            if context.shape[0] != sample.shape[0]:
                raise ValueError(f"{sample.shape[0]} images but encoder_hidden_states for {context.shape[0]}; "
                                 "give one context per image")
        elif context is not None:
            raise ValueError("this U-Net has no cross-attention (cross_attention_dim is None), so it takes no "
                             "encoder_hidden_states")
        if cfg.num_class_embeds:
            if class_labels is None:
                raise ValueError(f"this U-Net is class-conditional: pass class_labels, integers in "
                                 f"[0, {cfg.num_class_embeds})")
            labels = torch.as_tensor(class_labels)
            if labels.numel() and (labels.min() < 0 or labels.max() >= cfg.num_class_embeds):
                raise ValueError(f"class_labels must lie in [0, {cfg.num_class_embeds}), got {labels.tolist()}")
        elif class_labels is not None:
            raise ValueError("this U-Net has no class embedding (num_class_embeds is None); drop class_labels")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        self._check_inputs(sample, encoder_hidden_states, class_labels)
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(sample.shape[0]) if t.ndim == 0 else t.reshape(-1)      # (B,): one timestep per image
        # 1. time embedding (plus the class embedding, if any)
        temb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(temb.to(sample.dtype))
        if self.class_embedding is not None:
            temb = temb + self.class_embedding(torch.as_tensor(class_labels, device=sample.device)).to(temb.dtype)
        # 2. down: keep every intermediate result for the skip connections
        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, encoder_hidden_states)
            skips.extend(block_skips)
        # 3. middle
        h = self.mid_block(h, temb, encoder_hidden_states)
        # 4. up: each ResNet block consumes the most recent skip
        for block in self.up_blocks:
            h = block(h, skips, temb, encoder_hidden_states)
        # 5. out
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def count_parameters(model: nn.Module, trainable: bool | None = None) -> int:
    """The number of numbers a model learns: every parameter's element count, summed.

    `trainable=True` counts only the parameters that require gradients (a LoRA's adapters, say),
    `False` only the frozen ones.
    """
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)

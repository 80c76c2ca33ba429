"""Attention written out, multi-head attention with diffusers' names, and the spatial transformer.

    out, weights = attention(q, k, v)          # softmax(q k^T / sqrt(d)) v, and the weights
    layer = Attention(query_dim=64, heads=4, dim_head=16)                               # self-attention
    layer = Attention(query_dim=64, cross_attention_dim=32, heads=4, dim_head=16)       # cross-attention
    out = layer(hidden_states, encoder_hidden_states)   # (B, N, 64) from (B, N, 64) and (B, M, 32)

Lesson 08 derives attention from a dictionary lookup. The modules carry diffusers' parameter
names (`to_q`, `to_k`, `to_v`, `to_out.0`; `transformer_blocks.0.attn2.to_k`, ...), arguments
and attributes (`cross_attention_dim`, `heads`, `dim_head`, `is_cross_attention`), so their
weights load into diffusers' `Attention` and `Transformer2DModel` unchanged. Their forward passes
use PyTorch's fused kernel; `sdlearn.attention_maps` records the attention weights from outside.

Shapes: B batch, N query positions (H*W for an image), M context tokens, C channels,
h heads, d = C / h channels per head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention (Vaswani et al., 2017), written out.

    q (..., N, d), k (..., M, d), v (..., M, d_v) -> out (..., N, d_v), weights (..., N, M).
    `mask` is boolean (True = may attend) or additive, broadcastable to (..., N, M).

    1. scores: every query against every key, q k^T, scaled by 1 / sqrt(d) so that their
       spread does not grow with d (which would make the softmax a hard maximum);
    2. weights: a softmax over the keys, so each query's weights are positive and sum to 1;
    3. out: the weighted sum of the values, a soft dictionary lookup.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"queries have {q.shape[-1]} channels but keys have {k.shape[-1]}; they must match")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values; each key needs one value")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale                   # 1. (..., N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(dim=-1)                             # 2. rows sum to 1
    return weights @ v, weights                                  # 3. (..., N, d_v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, h*d) -> (B, h, N, d): each head sees its own d channels."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, N, d) -> (B, N, h*d): the heads' outputs side by side."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head attention over tokens (B, N, C): self-attention, or cross-attention to a context.

    Queries come from `hidden_states`; keys and values from `encoder_hidden_states` (cross) or
    from `hidden_states` itself (self). Arguments, attributes and parameter names follow
    diffusers' `Attention` (no bias on the projections of Stable Diffusion's transformer blocks;
    `bias=True` for UNet2DModel's attention blocks).
    """

    def __init__(self, query_dim: int, cross_attention_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 bias: bool = False, out_bias: bool = True):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.is_cross_attention = cross_attention_dim is not None
        self.cross_attention_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(self.cross_attention_dim, inner, bias=bias)
        self.to_v = nn.Linear(self.cross_attention_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        context = encoder_hidden_states
        if context is None:
            if self.is_cross_attention:
                raise ValueError(f"this is a cross-attention layer: pass encoder_hidden_states "
                                 f"(B, tokens, {self.cross_attention_dim})")
            context = hidden_states                                # self-attention: the tokens look at each other
        elif context.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states has embedding size {context.shape[-1]} but this attention layer "
                             f"expects {self.cross_attention_dim} (its cross_attention_dim); encode the prompt with "
                             "the matching text encoder")
        q = split_heads(self.to_q(hidden_states), self.heads)      # (B, h, N, d)
        k = split_heads(self.to_k(context), self.heads)            # (B, h, M, d)
        v = split_heads(self.to_v(context), self.heads)            # (B, h, M, d)
        # `attention` above, fused (and memory-efficient) in PyTorch; it never stores the weights
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)   # (B, h, N, d)
        return self.to_out[1](self.to_out[0](merge_heads(out)))   # (B, N, C)


class SelfAttention2D(Attention):
    """Self-attention over the H*W positions of a feature map, with GroupNorm and a residual.

    This is the attention block of diffusers' UNet2DModel (`group_norm`, `to_q`, ...).
    """

    def __init__(self, channels: int, dim_head: int, groups: int, eps: float):
        if channels % dim_head:
            raise ValueError(f"{channels} channels cannot be split into heads of {dim_head} channels")
        super().__init__(channels, heads=channels // dim_head, dim_head=dim_head, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map (B, C, H, W), normalised, as tokens (B, HW, C): one per pixel."""
        b, c, h, w = x.shape
        return self.group_norm(x).view(b, c, h * w).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """`encoder_hidden_states` is accepted for a common block signature and ignored: this is self-attention."""
        b, c, h, w = hidden_states.shape
        out = super().forward(self.to_tokens(hidden_states))               # (B, HW, C)
        return hidden_states + out.transpose(1, 2).reshape(b, c, h, w)


class GEGLU(nn.Module):
    """A gated linear unit with a GELU gate (Shazeer, 2020): half the projection gates the other half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4x the width, then back: the per-token MLP of a transformer block."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the context, feed-forward; each pre-normed, each a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)            # image to image
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, heads=heads,
                               dim_head=dim_head)                               # image to text
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, encoder_hidden_states):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), encoder_hidden_states)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """The spatial transformer of Latent Diffusion (diffusers' Transformer2DModel, continuous input).

    (B, C, H, W) -> GroupNorm -> 1x1 conv (or linear) -> tokens (B, HW, C) -> transformer blocks
    attending to the context (B, M, cross_attention_dim) -> back to (B, C, H, W) -> plus the input.
    """

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int, layers: int = 1,
                 use_linear_projection: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} heads")
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if use_linear_projection else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, heads, channels // heads, cross_attention_dim) for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels) if use_linear_projection else nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x)
        if self.use_linear_projection:
            tokens = self.proj_in(tokens.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            tokens = self.proj_in(tokens).permute(0, 2, 3, 1).reshape(b, h * w, c)   # (B, HW, C)
        for block in self.transformer_blocks:
            tokens = block(tokens, encoder_hidden_states)
        if self.use_linear_projection:
            out = self.proj_out(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = self.proj_out(tokens.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return x + out

"""Attention written out, the spatial transformer, and a recorder for attention maps.

    out, weights = attention(q, k, v)          # softmax(q k^T / sqrt(d)) v, and the weights
    layer = Attention(query_dim=64, heads=4, head_dim=16)                       # self-attention
    layer = Attention(query_dim=64, context_dim=32, heads=4, head_dim=16)       # cross-attention
    with record_attention(model, kind="cross") as maps:
        model(x, t, context)
    maps.token_maps(size=32)                   # (B, tokens, 32, 32): where each token looked

Lesson 08 derives attention from a dictionary lookup; the modules carry diffusers' parameter
names (`to_q`, `to_k`, `to_v`, `to_out.0`; `transformer_blocks.0.attn2.to_k`, ...), so their
weights load into diffusers' `Attention` and `Transformer2DModel` unchanged.

Shapes: B batch, N query positions (H*W for an image), M context tokens, C channels,
h heads, d = C / h channels per head.
"""

from __future__ import annotations

from contextlib import contextmanager

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

    Queries come from `x`; keys and values from `context` (cross) or from `x` itself (self).
    Parameter names and defaults follow diffusers' `Attention` (no bias on the projections of
    Stable Diffusion's transformer blocks; `bias=True` for UNet2DModel's attention blocks).
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, head_dim: int = 64,
                 bias: bool = False, out_bias: bool = True):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.is_cross = context_dim is not None
        self.context_dim = context_dim if context_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(self.context_dim, inner, bias=bias)
        self.to_v = nn.Linear(self.context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])
        self.recorder = None          # set by `record_attention`: called with the weights (B, h, N, M)
        self.explicit = False         # True: always use `attention` above, never the fused kernel

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            if self.is_cross:
                raise ValueError(f"this is a cross-attention layer: pass a context (B, tokens, {self.context_dim})")
            context = x
        elif context.shape[-1] != self.context_dim:
            raise ValueError(f"the context has embedding size {context.shape[-1]} but this attention layer expects "
                             f"{self.context_dim} (its cross_attention_dim); encode the prompt with the matching "
                             "text encoder")
        q = split_heads(self.to_q(x), self.heads)                  # (B, h, N, d)
        k = split_heads(self.to_k(context), self.heads)            # (B, h, M, d)
        v = split_heads(self.to_v(context), self.heads)            # (B, h, M, d)
        if self.recorder is not None or self.explicit:
            out, weights = attention(q, k, v, mask)
            if self.recorder is not None:
                self.recorder(weights.detach())
        else:   # the same computation, fused (and memory-efficient) in PyTorch
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out[1](self.to_out[0](merge_heads(out)))   # (B, N, C)


class SelfAttention2D(Attention):
    """Self-attention over the H*W positions of a feature map, with GroupNorm and a residual.

    This is the attention block of diffusers' UNet2DModel (`group_norm`, `to_q`, ...).
    """

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float):
        if channels % head_dim:
            raise ValueError(f"{channels} channels cannot be split into heads of {head_dim} channels")
        super().__init__(channels, heads=channels // head_dim, head_dim=head_dim, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """`context` is accepted for a common block signature and ignored: this is self-attention."""
        b, c, h, w = x.shape
        tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)      # (B, HW, C)
        out = super().forward(tokens)                                       # (B, HW, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


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

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, head_dim=head_dim)                          # image to image
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim=context_dim, heads=heads, head_dim=head_dim)  # image to text
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """The spatial transformer of Latent Diffusion (diffusers' Transformer2DModel, continuous input).

    (B, C, H, W) -> GroupNorm -> 1x1 conv (or linear) -> tokens (B, HW, C) -> transformer blocks
    attending to the context (B, M, context_dim) -> back to (B, C, H, W) -> plus the input.
    """

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, layers: int = 1,
                 linear_projection: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} heads")
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if linear_projection else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, heads, channels // heads, context_dim) for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels) if linear_projection else nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x)
        if self.linear_projection:
            tokens = self.proj_in(tokens.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            tokens = self.proj_in(tokens).permute(0, 2, 3, 1).reshape(b, h * w, c)   # (B, HW, C)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        if self.linear_projection:
            out = self.proj_out(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = self.proj_out(tokens.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return x + out


# --------------------------------------------------------------------------- attention maps

class AttentionMaps(dict):
    """Recorded attention weights: module name -> list of (B, heads, N, M) tensors, one per call."""

    def token_maps(self, size: int | None = None, names=None, batch: slice | None = None) -> torch.Tensor:
        """Average where each context token was looked at: (B, M, size, size), values summing to 1 per position.

        Every recorded cross-attention map (N = h*w query positions, M tokens) is averaged over
        its heads, laid out as an image, resized to `size` (the largest recorded resolution by
        default) and averaged over modules and calls.
        """
        names = [n for n in (names or self) if self[n]]
        if not names:
            raise ValueError("no attention maps were recorded; run the model inside `record_attention`")
        sides = {n: int(round(self[n][0].shape[-2] ** 0.5)) for n in names}
        for name, side in sides.items():
            if side * side != self[name][0].shape[-2]:
                raise ValueError(f"{name} attends from {self[name][0].shape[-2]} positions, not a square image")
        size = size or max(sides.values())
        total = None
        count = 0
        for name in names:
            side = sides[name]
            for weights in self[name]:
                w = weights if batch is None else weights[batch]
                w = w.float().mean(dim=1)                                          # (B, N, M)
                w = w.transpose(1, 2).reshape(w.shape[0], w.shape[-1], side, side)  # (B, M, side, side)
                w = F.interpolate(w, size=(size, size), mode="bilinear", align_corners=False) if side != size else w
                total = w if total is None else total + w
                count += 1
        return total / count


@contextmanager
def record_attention(model: nn.Module, kind: str = "cross"):
    """Record the attention weights of every `Attention` in `model` of the given kind.

    kind: "cross" (image positions to context tokens), "self", or "all". While recording, the
    layers use the written-out `attention` (the fused kernel does not return its weights).
    """
    if kind not in ("cross", "self", "all"):
        raise ValueError(f"kind must be 'cross', 'self' or 'all', got {kind!r}")
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)
              and (kind == "all" or m.is_cross == (kind == "cross"))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no {kind}-attention layers to record")
    maps = AttentionMaps()
    for name, layer in layers:
        maps[name] = []
        layer.recorder = maps[name].append
    try:
        yield maps
    finally:
        for _, layer in layers:
            layer.recorder = None

"""Attention maps: what each attention layer of a model looked at, recorded from outside the model.

    with AttentionRecorder(unet) as recorder:          # our UNet, or a diffusers UNet2DConditionModel
        unet(sample, timestep, encoder_hidden_states)  # or a whole pipeline call (pipe.unet recorded)
    recorder.layer_maps()          # layer name -> (B, M, h, w), averaged over heads and calls
    recorder.resolution_maps()     # (h, w) -> (B, M, h, w), the layers of one resolution averaged
    recorder.token_maps(size=32)   # (B, M, 32, 32): one map per context token, every resolution averaged

Every attention layer computes, for each query position, a softmax over the keys (lesson 08).
In a cross-attention layer the keys are the M tokens of the prompt, and the softmax says how
much of each token's value vector that position takes in; laid out as an image per token, these
are the layer's attention maps (Prompt-to-Prompt, Hertz et al. 2022, edits images by editing
them). `AttentionRecorder` records them for every layer of a kind: "cross" (the default),
"self" or "all". Per layer it keeps a running sum of the weights averaged over the heads, so
fifty denoising steps cost the memory of one; with `keep_weights=True` it also keeps every
call's weights head by head, `recorder.weights[name]`, a list of (B, heads, N, M) tensors.

One recorder, two ways in, and nothing inside the model's forward pass:

- sdlearn's `Attention` layers (`sdlearn.models.attention`) run PyTorch's fused kernel, which
  never returns its weights. A forward hook on each layer, `RecordingHook`, computes them again
  from the layer's inputs with the written-out `attention` (`attention_weights` below).
- diffusers' `Attention` layers (in a `UNet2DConditionModel`, a `UNet2DModel`, ...) get
  `RecordingAttnProcessor` in place of their processor: it computes what diffusers'
  `AttnProcessor` computes and records the softmax on the way.

Leaving the `with` block removes the hooks and gives back the original processors. The layers
carry the same names in both (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`, ...), so
our U-Net and the diffusers U-Net converted from it give the same maps under the same names.

With classifier-free guidance the U-Net sees the doubled batch [reference prompts, prompts], so
the maps of the prompts are the second half of the batch (`recorder.token_maps()[n:]`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdlearn.models.attention import Attention, SelfAttention2D, attention, split_heads

KINDS = ("cross", "self", "all")


def _wanted(module: nn.Module, kind: str) -> bool:
    """Whether a module is an attention layer of the kind to record: sdlearn's `Attention`, or
    diffusers' (which has `set_processor`); both say `is_cross_attention`."""
    if not (isinstance(module, Attention) or hasattr(module, "set_processor")):
        return False
    return kind == "all" or module.is_cross_attention == (kind == "cross")


# --------------------------------------------------------------------------- getting the weights

def attention_weights(layer: Attention, hidden_states: torch.Tensor,
                      encoder_hidden_states: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The weights (B, heads, N, M) that one call of an sdlearn `Attention` layer attended with.

    Takes the layer's own inputs, computes its queries and keys again and runs the written-out
    `attention` of lesson 08, which returns the weights that the fused kernel keeps to itself.
    """
    if isinstance(layer, SelfAttention2D):          # its input is a feature map; the attention runs on its tokens
        hidden_states, encoder_hidden_states = layer.to_tokens(hidden_states), None
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    q = split_heads(layer.to_q(hidden_states), layer.heads)       # (B, h, N, d)
    k = split_heads(layer.to_k(context), layer.heads)             # (B, h, M, d)
    v = split_heads(layer.to_v(context), layer.heads)             # (B, h, M, d)
    _, weights = attention(q, k, v, attention_mask)               # (B, h, N, M), each row sums to 1
    return weights


class RecordingHook:
    """A forward hook for sdlearn's `Attention`: after each call, records the weights it attended with."""

    def __init__(self, recorder: "AttentionRecorder", name: str):
        self.recorder = recorder
        self.name = name

    def __call__(self, layer: Attention, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        with torch.no_grad():
            weights = attention_weights(layer, *args, **kwargs)
        self.recorder.record(self.name, weights)                  # returns nothing: the output stays the layer's


class RecordingAttnProcessor:
    """diffusers' `AttnProcessor` (attention as softmax(Q K^T / sqrt(d)) V), which also records the softmax."""

    def __init__(self, recorder: "AttentionRecorder", name: str):
        self.recorder = recorder
        self.name = name

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (B, N, C)
        batch_size, positions, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        # 1. queries from the image positions, keys and values from the tokens
        query = attn.to_q(hidden_states)                                  # (B, N, H * D)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)                            # (B, M, H * D)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)                             # (B * H, N, D)
        key = attn.head_to_batch_dim(key)                                 # (B * H, M, D)
        value = attn.head_to_batch_dim(value)

        # 2. the attention probabilities: for each position, a softmax over the M tokens
        probs = attn.get_attention_scores(query, key, attention_mask)    # (B * H, N, M)
        self.recorder.record(self.name, probs.view(batch_size, attn.heads, positions, -1))  # (B, H, N, M)

        # 3. the weighted sum of the values, the heads put back side by side, the output projection
        hidden_states = torch.bmm(probs, value)                           # (B * H, N, D)
        hidden_states = attn.batch_to_head_dim(hidden_states)             # (B, N, H * D)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)                     # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# --------------------------------------------------------------------------- the recorder

class AttentionRecorder:
    """Record the attention weights of a model's layers of one kind, averaged over heads and calls.

    `model` is a network built from sdlearn's `Attention` (our U-Net, a spatial transformer, any
    module) or a diffusers model (a `UNet2DConditionModel`, `UNet2DModel`, ...). `kind` is
    "cross" (image positions to context tokens), "self" or "all". Use it as a context manager
    (or call `install` and `remove`). Each call of a recorded layer adds its weights, averaged
    over the heads, (B, N positions, M keys), to a running sum; the maps are the average over the
    calls (the denoising steps). `reset()` starts again.
    """

    def __init__(self, model: nn.Module, kind: str = "cross", keep_weights: bool = False):
        if kind not in KINDS:
            raise ValueError(f"kind must be 'cross', 'self' or 'all', got {kind!r}")
        self.model = model
        self.kind = kind
        self.keep_weights = keep_weights                  # also keep every call's weights, head by head
        self.sums: dict[str, torch.Tensor] = {}           # layer name -> (B, N, M), summed over calls
        self.calls: dict[str, int] = {}                   # layer name -> how many calls were added
        self.weights: dict[str, list[torch.Tensor]] = {}  # layer name -> [(B, heads, N, M)] per call (keep_weights)
        self.sample_size: tuple[int, int] | None = None   # (H, W) of the model's input, when it is an image
        self._handles: list = []
        self._original_processors: dict = {}             # diffusers' layers: name -> their own processor
        self._installed = False

    # -------------------------------------------------------------- installing and restoring
    def install(self) -> "AttentionRecorder":
        """Hook every chosen layer: sdlearn's get a forward hook, diffusers' a recording processor."""
        if self._installed:
            raise RuntimeError("this recorder is already installed")
        layers = [(name, module) for name, module in self.model.named_modules() if _wanted(module, self.kind)]
        if not layers:
            raise ValueError(f"{type(self.model).__name__} has no {self.kind}-attention layers to record (layers of "
                             "sdlearn.models.attention.Attention, or diffusers' Attention)")
        for name, layer in layers:
            if isinstance(layer, Attention):
                self._handles.append(layer.register_forward_hook(RecordingHook(self, name), with_kwargs=True))
            else:
                self._original_processors[name] = layer.processor
                layer.set_processor(RecordingAttnProcessor(self, name))
        self._handles.append(self.model.register_forward_pre_hook(self._note_sample_size, with_kwargs=True))
        self._installed = True
        return self

    def remove(self) -> None:
        """Take the hooks off and give diffusers' layers their own processors back."""
        for name, processor in self._original_processors.items():
            self.model.get_submodule(name).set_processor(processor)
        for handle in self._handles:
            handle.remove()
        self._handles, self._original_processors, self._installed = [], {}, False

    def __enter__(self) -> "AttentionRecorder":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.sums, self.calls, self.weights, self.sample_size = {}, {}, {}, None

    def _note_sample_size(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs.get("sample")
        if isinstance(sample, torch.Tensor) and sample.ndim == 4:
            self.sample_size = (sample.shape[-2], sample.shape[-1])

    # -------------------------------------------------------------- recording
    @torch.no_grad()
    def record(self, name: str, probs: torch.Tensor) -> None:
        """Add one call's attention weights (B, heads, N, M), averaged over the heads, to layer `name`."""
        averaged = probs.float().mean(dim=1)                              # (B, N, M)
        if name in self.sums and self.sums[name].shape != averaged.shape:
            raise ValueError(f"layer {name} saw weights of shape {tuple(averaged.shape)} after "
                             f"{tuple(self.sums[name].shape)}: the batch or image size changed; call reset() "
                             "between generations of different sizes")
        if name in self.sums:
            self.sums[name] += averaged
        else:
            self.sums[name] = averaged.clone()
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.keep_weights:
            self.weights.setdefault(name, []).append(probs.detach())

    # -------------------------------------------------------------- reading the maps
    def _grid(self, positions: int) -> tuple[int, int]:
        """The (h, w) of a feature map with `positions` positions, from the input's shape (or square)."""
        if self.sample_size is None:
            side = math.isqrt(positions)
            if side * side != positions:
                raise ValueError(f"cannot lay out {positions} positions as a square image")
            return side, side
        height, width = self.sample_size
        factor = math.isqrt(height * width // positions)                 # how much the model has downsampled
        if factor < 1 or (height // factor) * (width // factor) != positions:
            raise ValueError(f"cannot lay out {positions} positions on a {height}x{width} input")
        return height // factor, width // factor

    def layer_maps(self) -> dict[str, torch.Tensor]:
        """Each recorded layer's map, averaged over heads and calls: name -> (B, M, h, w)."""
        if not self.sums:
            raise RuntimeError("nothing recorded yet: run the model (or the pipeline) inside the recorder")
        maps = {}
        for name, total in self.sums.items():
            batch, positions, keys = total.shape
            h, w = self._grid(positions)
            mean = total / self.calls[name]                                # (B, N, M)
            maps[name] = mean.transpose(1, 2).reshape(batch, keys, h, w)   # (B, M, h, w)
        return maps

    def resolution_maps(self) -> dict[tuple[int, int], torch.Tensor]:
        """The layers' maps averaged over the layers of the same resolution: (h, w) -> (B, M, h, w)."""
        groups: dict[tuple[int, int], list[torch.Tensor]] = {}
        for layer_map in self.layer_maps().values():
            groups.setdefault(tuple(layer_map.shape[-2:]), []).append(layer_map)
        keys = {layer_map.shape[1] for group in groups.values() for layer_map in group}
        if len(keys) > 1:
            raise ValueError(f"the recorded layers attend to different numbers of keys {sorted(keys)} "
                             "(self-attention at several resolutions, or self- and cross-attention together), so "
                             "their maps cannot be averaged: read layer_maps(), or record kind='cross'")
        return {size: torch.stack(group).mean(dim=0) for size, group in sorted(groups.items(), reverse=True)}

    def token_maps(self, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """One map per token position, (B, M, H, W): each resolution upsampled to `size`, then averaged.

        `size` defaults to the largest recorded resolution. Upsampling is bilinear, so at every
        position the values still sum to 1 over the M tokens, as each layer's softmax does.
        """
        per_resolution = self.resolution_maps()
        if size is None:
            size = next(iter(per_resolution))
        size = (size, size) if isinstance(size, int) else tuple(size)
        upsampled = [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                     for m in per_resolution.values()]
        return torch.stack(upsampled).mean(dim=0)

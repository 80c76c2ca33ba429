"""Cross-attention maps: where in the picture a diffusers U-Net reads each token of the prompt.

    with CrossAttentionRecorder(pipe.unet) as recorder:
        image = pipe("a photo of a sneaker facing right", generator=torch.Generator().manual_seed(0)).images
    maps = recorder.token_maps(size=32)          # (U-Net batch, 77, 32, 32), one map per token position

Every cross-attention layer of a `UNet2DConditionModel` (the `attn2` of each transformer block)
computes, for each position of its feature map, a softmax over the 77 token positions of the
prompt: how much of each token's value vector that position takes in (Prompt-to-Prompt, Hertz et
al. 2022, edits images by changing these maps). `CrossAttentionRecorder` swaps in
`RecordingAttnProcessor`, which computes exactly what diffusers' `AttnProcessor` computes and
adds the attention probabilities, averaged over the heads, to a running sum per layer. On
leaving the `with` block the U-Net gets its original processors back.

With classifier-free guidance the U-Net sees the doubled batch [reference prompts, prompts], so
the maps of the prompts are the second half of the batch (`recorder.token_maps()[n:]`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RecordingAttnProcessor:
    """diffusers' `AttnProcessor` (attention as softmax(Q K^T / sqrt(d)) V), which also records the softmax."""

    def __init__(self, recorder: "CrossAttentionRecorder", name: str):
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


class CrossAttentionRecorder:
    """Record the cross-attention probabilities of a diffusers U-Net, averaged over heads and calls.

    Use it as a context manager (or call `install` and `remove`). Each U-Net call adds, for each
    cross-attention layer, its probabilities averaged over the heads, (B, N positions, M tokens),
    to a running sum; the maps are the average over the calls (the denoising steps). `reset()`
    starts again. Only the processors of the cross-attention layers (`attn2`) are replaced.
    """

    def __init__(self, unet):
        self.unet = unet
        self.sums: dict[str, torch.Tensor] = {}     # layer name -> (B, N, M), summed over calls
        self.calls: dict[str, int] = {}             # layer name -> how many calls were added
        self.sample_size: tuple[int, int] | None = None   # (h, w) of the U-Net's input latents
        self._originals: dict | None = None
        self._hook = None

    # -------------------------------------------------------------- installing and restoring
    def install(self) -> "CrossAttentionRecorder":
        if self._originals is not None:
            raise RuntimeError("this recorder is already installed")
        self._originals = dict(self.unet.attn_processors)
        names = [name for name in self._originals if _is_cross_attention(name)]
        if not names:
            raise ValueError("this U-Net has no cross-attention layers (no 'attn2' processors) to record")
        processors = dict(self._originals)
        for name in names:
            processors[name] = RecordingAttnProcessor(self, name)
        self.unet.set_attn_processor(processors)
        self._hook = self.unet.register_forward_pre_hook(self._note_sample_size, with_kwargs=True)
        return self

    def remove(self) -> None:
        if self._originals is None:
            return
        self.unet.set_attn_processor(self._originals)
        self._hook.remove()
        self._originals, self._hook = None, None

    def __enter__(self) -> "CrossAttentionRecorder":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.sums, self.calls, self.sample_size = {}, {}, None

    def _note_sample_size(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.sample_size = (sample.shape[-2], sample.shape[-1])

    # -------------------------------------------------------------- recording
    @torch.no_grad()
    def record(self, name: str, probs: torch.Tensor) -> None:
        """Add one call's probabilities (B, heads, N, M), averaged over the heads, to layer `name`."""
        averaged = probs.float().mean(dim=1)                              # (B, N, M)
        if name in self.sums and self.sums[name].shape != averaged.shape:
            raise ValueError(f"layer {name} saw probabilities of shape {tuple(averaged.shape)} after "
                             f"{tuple(self.sums[name].shape)}: the batch or image size changed; call reset() "
                             "between generations of different sizes")
        if name in self.sums:
            self.sums[name] += averaged
        else:
            self.sums[name] = averaged.clone()
        self.calls[name] = self.calls.get(name, 0) + 1

    # -------------------------------------------------------------- reading the maps
    def _grid(self, positions: int) -> tuple[int, int]:
        """The (h, w) of a feature map with `positions` positions, from the input latents' shape."""
        if self.sample_size is None:
            side = math.isqrt(positions)
            if side * side != positions:
                raise ValueError(f"cannot lay out {positions} positions as a square image")
            return side, side
        height, width = self.sample_size
        factor = math.isqrt(height * width // positions)                 # how much the U-Net has downsampled
        if factor < 1 or (height // factor) * (width // factor) != positions:
            raise ValueError(f"cannot lay out {positions} positions on a {height}x{width} latent")
        return height // factor, width // factor

    def layer_maps(self) -> dict[str, torch.Tensor]:
        """Each cross-attention layer's map, averaged over heads and calls: name -> (B, M, h, w)."""
        if not self.sums:
            raise RuntimeError("nothing recorded yet: run the U-Net (or the pipeline) inside the recorder")
        maps = {}
        for name, total in self.sums.items():
            batch, positions, tokens = total.shape
            h, w = self._grid(positions)
            mean = total / self.calls[name]                                # (B, N, M)
            maps[name] = mean.transpose(1, 2).reshape(batch, tokens, h, w)  # (B, M, h, w)
        return maps

    def resolution_maps(self) -> dict[tuple[int, int], torch.Tensor]:
        """The layers' maps averaged over the layers of the same resolution: (h, w) -> (B, M, h, w)."""
        groups: dict[tuple[int, int], list[torch.Tensor]] = {}
        for layer_map in self.layer_maps().values():
            groups.setdefault(tuple(layer_map.shape[-2:]), []).append(layer_map)
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


def _is_cross_attention(processor_name: str) -> bool:
    """diffusers names the cross-attention of a transformer block `...attn2.processor`."""
    return processor_name.endswith("attn2.processor")

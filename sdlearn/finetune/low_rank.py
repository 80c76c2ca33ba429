"""A model stored as a low-rank change of another: every weight W = W0 + (alpha / r) B A.

LoRA's idea (Hu et al., 2022) for a plain torch module, without adapters inserted into it: the
base model stays untouched, each chosen weight gets two thin matrices, and the forward pass
calls the base model with the changed weights (`torch.func.functional_call`). A convolution
kernel (out, in, k, k) is the matrix (out, in*k*k) here, as peft's Conv2d LoRA treats it.

    adapted = LowRankAdapted(base_unet, rank=16)        # base frozen; only A and B train
    loss = some_loss(adapted, batch)                    # adapted(x, t) runs base with W0 + s B A
    tensors = adapted.low_rank_tensors()                # {"down.0.conv.weight.lora_A": ..., ...}
    merge_low_rank(other_copy_of_base, tensors, alpha / rank)  # the fine-tuned model, one module again

`sdlearn.weights.save_low_rank` writes the tensors with the name of the base model, and
`sdlearn.weights.load` puts base and change back together. A file of a few hundred kilobytes
then stands for a whole fine-tuned model of several megabytes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

SUFFIX_A, SUFFIX_B = ".lora_A", ".lora_B"


def low_rank_targets(model: nn.Module, min_size: int = 4096) -> list[str]:
    """The weights worth a low-rank change: every matrix or kernel of at least `min_size` numbers."""
    return [name for name, p in model.named_parameters() if p.dim() >= 2 and p.numel() >= min_size]


def _as_matrix_shape(shape: torch.Size) -> tuple[int, int]:
    return shape[0], int(torch.Size(shape[1:]).numel())


class LowRankAdapted(nn.Module):
    """`base` frozen, plus a rank-`rank` change B A of each target weight (B starts at zero).

    A is drawn from N(0, 1/rank^2) under `seed` (without touching the global random state), as
    peft's "gaussian" start, so that at step 0 the model is exactly `base`.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None, targets=None, seed: int = 0):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, float(rank if alpha is None else alpha)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        params = dict(base.named_parameters())
        self.targets = list(low_rank_targets(base) if targets is None else targets)
        unknown = [t for t in self.targets if t not in params or params[t].dim() < 2]
        if unknown:
            raise ValueError(f"{unknown} are not weight matrices or kernels of this model; "
                             f"choose from {low_rank_targets(base, 0)}")
        generator = torch.Generator().manual_seed(seed)
        self._keys = {name: name.replace(".", "/") for name in self.targets}   # ParameterDict keys hold no dots
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for name, key in self._keys.items():
            out_features, in_features = _as_matrix_shape(params[name].shape)
            self.lora_A[key] = nn.Parameter(torch.randn(rank, in_features, generator=generator) / rank)
            self.lora_B[key] = nn.Parameter(torch.zeros(out_features, rank))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def changed_weights(self) -> dict[str, torch.Tensor]:
        """W0 + scale * B A for every target weight (differentiable in A and B)."""
        params = dict(self.base.named_parameters())
        return {name: params[name] + self.scale * (self.lora_B[key] @ self.lora_A[key]).view_as(params[name])
                for name, key in self._keys.items()}

    def forward(self, *args, **kwargs):
        return functional_call(self.base, self.changed_weights(), args, kwargs)

    def low_rank_tensors(self) -> dict[str, torch.Tensor]:
        """The trained change: `NAME.lora_A` (r, in) and `NAME.lora_B` (out, r) for every target weight."""
        tensors = {}
        for name, key in self._keys.items():
            tensors[name + SUFFIX_A] = self.lora_A[key].detach().cpu().contiguous()
            tensors[name + SUFFIX_B] = self.lora_B[key].detach().cpu().contiguous()
        return tensors


@torch.no_grad()
def merge_low_rank(model: nn.Module, tensors: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """Add scale * B A to each weight that `tensors` changes (in place, in the weight's own dtype).

    A clear error, before anything changes, for a name the model does not have or a pair whose
    shapes do not fit the weight: the file belongs to another model.
    """
    params = dict(model.named_parameters())
    names = sorted({k[: -len(SUFFIX_A)] for k in tensors if k.endswith(SUFFIX_A)})
    if not names or len(tensors) != 2 * len(names):
        raise ValueError("a low-rank change holds pairs NAME.lora_A and NAME.lora_B and nothing else; "
                         f"got {sorted(tensors)[:4]}...")
    deltas = {}
    for name in names:
        if name not in params or name + SUFFIX_B not in tensors:
            raise ValueError(f"the change names {name!r}, which this model does not have (or has no "
                             f"{SUFFIX_B} for): it was trained on another model")
        a, b = tensors[name + SUFFIX_A], tensors[name + SUFFIX_B]
        rows, cols = _as_matrix_shape(params[name].shape)
        if a.dim() != 2 or b.dim() != 2 or b.shape[0] != rows or a.shape[1] != cols or a.shape[0] != b.shape[1]:
            raise ValueError(f"{name}: B {tuple(b.shape)} A {tuple(a.shape)} do not make a {rows}x{cols} change "
                             f"of its weight {tuple(params[name].shape)}: the change belongs to another model")
        deltas[name] = (b.float() @ a.float()).view(params[name].shape) * scale
    for name, delta in deltas.items():
        params[name].add_(delta.to(params[name]))
    return model

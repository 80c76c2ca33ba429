"""LoRA (Hu et al., 2022): fine-tune a few low-rank matrices beside the frozen weights, with peft.

    params = add_lora(pipe.unet, rank=4)                    # peft adapters on to_q, to_k, to_v, to_out.0
    ...train params with dreambooth_loss...
    save_lora(pipe.unet, "my_lora")                         # my_lora/pytorch_lora_weights.safetensors
    other = sdlearn.pipelines.load("fashion_text2image")
    load_lora(other, "my_lora", adapter_name="bag")         # diffusers' load_lora_weights, after a check

A LoRA layer keeps its linear layer's weight W (out, in) frozen and adds a product of two thin
matrices: W x + (alpha / r) B A x, with A (r, in) and B (out, r). A starts random and B at zero,
so training starts from the unchanged model; only A and B are trained. `add_lora` puts such
layers on the U-Net's attention projections through diffusers' peft integration
(`unet.add_adapter`), as diffusers' `train_dreambooth_lora.py` does; `save_lora` writes them
with diffusers' LoRA serialisation (`StableDiffusionPipeline.save_lora_weights`), the file that
`pipe.load_lora_weights` reads; `check_lora_file` refuses a file that does not fit a U-Net,
naming what does not.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from sdlearn.models.unet import count_parameters        # re-exported: trainable=True counts the adapters
from sdlearn.weights import LORA_FILE                  # the name diffusers saves and looks for

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")    # the attention projections, as diffusers' scripts choose

# a key of diffusers' LoRA files: prefix, module path, and which matrix (down = A, up = B; peft names them lora_A/B)
_KEY = re.compile(r"^(?P<prefix>unet|text_encoder)\.(?P<module>.+?)\.(?P<which>lora\.down|lora\.up|lora_A|lora_B)"
                  r"(?:\.(?P<adapter>[^.]+))?\.weight$")


def add_lora(unet, rank: int = 4, alpha: float | None = None, target_modules=LORA_TARGETS, *,
             adapter_name: str = "default", seed: int = 0) -> list[torch.nn.Parameter]:
    """Freeze `unet` and add LoRA layers of rank `rank` to its `target_modules`; return the new parameters.

    `alpha` defaults to the rank (the scale alpha / r is then 1, as in diffusers' scripts). The
    A matrices are drawn from N(0, 1/r^2) (peft's "gaussian" start, diffusers' choice) under
    `seed`, without touching the global random state; the B matrices start at zero.
    """
    from peft import LoraConfig

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    alpha = rank if alpha is None else alpha
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    missing = [name for name in target_modules
               if not any(path == name or path.endswith("." + name) for path, _ in unet.named_modules())]
    if missing:
        raise ValueError(f"target modules {missing} are not in this U-Net; its attention projections are "
                         f"{list(LORA_TARGETS)}")
    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(target_modules))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=adapter_name)
    return [p for p in unet.parameters() if p.requires_grad]


def lora_layers(unet) -> dict:
    """The LoRA-wrapped linear layers of a U-Net: {module path: peft layer}."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in unet.named_modules() if isinstance(module, LoraLayer)}


def lora_state_dict(unet, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """One adapter's A and B matrices under diffusers' names (`...to_q.lora.down.weight` is A, `lora.up` is B)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    if not state:
        raise ValueError(f"this U-Net has no LoRA adapter called {adapter_name!r}: add one with add_lora")
    return convert_state_dict_to_diffusers(state)


def save_lora(unet, folder, adapter_name: str = "default") -> Path:
    """Write one adapter as `folder/pytorch_lora_weights.safetensors`, the file `load_lora_weights` reads.

    diffusers' `StableDiffusionPipeline.save_lora_weights` writes it (keys prefixed `unet.`, and
    the adapter's settings, rank and alpha among them, in the metadata), into a temporary folder
    beside the target; the file is then moved into place in one step, so that an interrupted
    save never leaves half a file where a good one was.
    """
    from diffusers import StableDiffusionPipeline

    layers = lora_state_dict(unet, adapter_name)
    config = unet.peft_config[adapter_name]
    # the settings every peft version knows (a whole LoraConfig of a newer peft does not load in an older one)
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
                "lora_dropout": config.lora_dropout, "bias": config.bias, "use_rslora": config.use_rslora,
                "use_dora": config.use_dora, "rank_pattern": dict(config.rank_pattern),
                "alpha_pattern": dict(config.alpha_pattern)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".lora-", dir=folder))
    try:
        StableDiffusionPipeline.save_lora_weights(scratch, unet_lora_layers=layers, safe_serialization=True,
                                                  unet_lora_adapter_metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch / LORA_FILE, 0o666 & ~umask)            # a temporary folder's file is private
        os.replace(scratch / LORA_FILE, folder / LORA_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder / LORA_FILE


def _lora_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}: give a {LORA_FILE} or the folder that holds it")
    return path


def read_lora_file(path) -> dict[str, dict[str, torch.Size]]:
    """The layers a LoRA file adapts: {"unet.<module path>": {"down": A's shape, "up": B's shape}}."""
    path = _lora_path(path)
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as error:       # safetensors' own errors do not say which file
        raise ValueError(f"{path} is not a safetensors file ({error})") from None
    layers: dict[str, dict[str, torch.Size]] = {}
    with handle:
        for key in handle.keys():
            match = _KEY.match(key)
            if match is None:
                raise ValueError(f"{path} holds {key!r}, which is not a LoRA matrix in diffusers' layout "
                                 f"('unet.<module>.lora.down.weight' / '.lora.up.weight'); it may be a LoRA for "
                                 f"another program (kohya's 'lora_unet_...' keys must be converted first)")
            which = "down" if match["which"] in ("lora.down", "lora_A") else "up"
            shape = handle.get_slice(key).get_shape()
            layers.setdefault(f"{match['prefix']}.{match['module']}", {})[which] = torch.Size(shape)
    if not layers:
        raise ValueError(f"{path} holds no tensors")
    return layers


def check_lora_file(path, unet, text_encoder=None) -> int:
    """Check that a LoRA file fits this U-Net (and text encoder); return its rank, or raise a clear error.

    Every adapted layer must exist here and be a linear layer of the same width: A (r, in) and
    B (out, r), with one r for A and B. A file trained for another architecture (Stable
    Diffusion 1.5's attention is 320 to 1280 wide, ours 64 and 128) fails here with the first
    layer that does not match, instead of deep inside peft.
    """
    layers = read_lora_file(path)
    roots = {"unet": unet, "text_encoder": text_encoder}
    ranks = set()
    for name, shapes in layers.items():
        prefix, module_path = name.split(".", 1)
        root = roots[prefix]
        if root is None:
            raise ValueError(f"{path} adapts the text encoder ({name}), but no text encoder was given to check it")
        if set(shapes) != {"down", "up"}:
            raise ValueError(f"{path} has only the {'/'.join(shapes)} matrix of {name}; a LoRA layer needs both")
        try:
            module = root.get_submodule(module_path)
        except AttributeError:
            raise ValueError(f"{path} adapts {module_path}, which this {type(root).__name__} does not have: the "
                             f"file was trained for another architecture") from None
        module = getattr(module, "base_layer", module)          # a layer that already carries adapters
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(f"{path} adapts {module_path}, a {type(module).__name__} here, not a linear layer")
        down, up = shapes["down"], shapes["up"]
        if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
            raise ValueError(f"{path}: rank mismatch in {name}: A is {tuple(down)} and B {tuple(up)}, but A's rows "
                             f"and B's columns must both be the rank r")
        if down[1] != module.in_features or up[0] != module.out_features:
            raise ValueError(f"{path} was trained for another architecture: its {name} maps {down[1]} to {up[0]} "
                             f"features, this model's {module.in_features} to {module.out_features}")
        ranks.add(down[0])
    if len(ranks) != 1:
        raise ValueError(f"{path} mixes ranks {sorted(ranks)}; a file saved by save_lora has one")
    return ranks.pop()


def load_lora(pipe, path, adapter_name: str = "default", scale: float = 1.0) -> str:
    """Check a LoRA file against the pipeline's models, then load it with diffusers' `pipe.load_lora_weights`.

    `scale` multiplies the adapter's contribution (`pipe.set_adapters`); 0 is the model without it.
    Returns the adapter's name. `pipe.unload_lora_weights()` takes every adapter out again.
    """
    path = _lora_path(path)
    check_lora_file(path, pipe.unet, pipe.text_encoder)
    if adapter_name in getattr(pipe.unet, "peft_config", {}):
        raise ValueError(f"the pipeline already has an adapter called {adapter_name!r}: choose another "
                         f"adapter_name, or pipe.delete_adapters({adapter_name!r}) first")
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter_name)
    if scale != 1.0:
        pipe.set_adapters([adapter_name], adapter_weights=[scale])
    return adapter_name


def merged_weight(layer, adapter_name: str = "default", scale: float = 1.0) -> torch.Tensor:
    """W + scale * (alpha / r) * B @ A for one peft LoRA layer: the weight `fuse_lora(lora_scale=scale)` writes.

    alpha / r is read from the adapter's settings, not from the layer's current `scaling`, which
    `set_adapters` multiplies by the adapter's weight: `scale` is that weight here.
    """
    base = layer.base_layer.weight
    a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
    return base + scale * (layer.lora_alpha[adapter_name] / layer.r[adapter_name]) * (b @ a)


__all__ = ["LORA_FILE", "LORA_TARGETS", "add_lora", "check_lora_file", "count_parameters", "load_lora",
           "lora_layers", "lora_state_dict", "merged_weight", "read_lora_file", "save_lora"]

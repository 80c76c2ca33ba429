"""The weights the project trains and ships, as safetensors files in this directory.

Each file stores its model's configuration in the safetensors metadata, so `load(name)` can
rebuild the model without any other file:

    classifier = load("fashion_classifier")   # SmallClassifier, Fashion-MNIST, 28x28
    unet = load("ddpm_fashion")                # UNet noise predictor, Fashion-MNIST padded to 32x32
    vae = load("vae_fashion")                  # diffusers AutoencoderKL, 1x32x32 to 4x8x8 latents
    latent_unet = load("ldm_fashion")          # UNet noise predictor on vae_fashion's latents
    clip = load("clip_fashion")                # SmallCLIP: image and text encoders, CLIP's tokenizer

`python -m sdlearn.train RECIPE` writes them (see each model card in the book).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdlearn.utils import atomic_path

WEIGHTS_DIR = Path(__file__).resolve().parent


def _builders():
    from sdlearn.models.classifier import ClassifierConfig, SmallClassifier
    from sdlearn.models.clip import CLIPConfig, SmallCLIP
    from sdlearn.models.unet import UNet, UNetConfig
    return {"SmallClassifier": (SmallClassifier, ClassifierConfig), "UNet": (UNet, UNetConfig),
            "SmallCLIP": (SmallCLIP, CLIPConfig)}


def _is_diffusers(model) -> bool:
    return any(c.__module__.startswith("diffusers.") for c in type(model).__mro__)


def available() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def save(model: torch.nn.Module, path, info: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a model's weights and configuration (and an `info` dict) to one safetensors file.

    With `dtype` (e.g. torch.float16) floating-point tensors are stored in that type to halve
    the file; `load` puts them back into the model's own float32 parameters.
    """
    path = Path(path)
    if _is_diffusers(model):          # a diffusers model: its own config, class name prefixed
        config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
        metadata = {"class": f"diffusers.{type(model).__name__}", "config": json.dumps(config, default=list),
                    "info": json.dumps(info or {})}
    else:
        metadata = {"class": type(model).__name__, "config": json.dumps(asdict(model.config)),
                    "info": json.dumps(info or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_info(name_or_path) -> dict:
    """The `info` dictionary stored with a weights file (recipe, training time, metrics)."""
    path = _resolve(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata().get("info", "{}"))


def _resolve(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" and path.exists():
        return path
    candidate = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"no weights called {name_or_path!r}; shipped weights: {', '.join(available()) or 'none'}")


def load(name_or_path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a shipped (or saved) model from its safetensors file, in eval mode."""
    path = _resolve(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("class", "").startswith("diffusers."):
        import diffusers

        cls = getattr(diffusers, metadata["class"].split(".", 1)[1])
        model = cls.from_config(json.loads(metadata["config"]))
        model.load_state_dict(load_file(str(path)))
        return model.to(device).eval()
    builders = _builders()
    if metadata.get("class") not in builders:
        raise ValueError(f"{path} does not say which model it holds (metadata 'class' is {metadata.get('class')!r})")
    model_cls, config_cls = builders[metadata["class"]]
    model = model_cls(config_cls(**json.loads(metadata["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()

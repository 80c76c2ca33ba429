"""Text-to-image pipelines as diffusers folders: the shipped Fashion-MNIST model, and Stable Diffusion.

    pipe = sdlearn.pipelines.load("fashion_text2image")        # shipped with the package, offline
    images = pipe("a photo of a sneaker facing right", num_inference_steps=25,
                  generator=torch.Generator().manual_seed(0)).images

A shipped pipeline is an ordinary diffusers folder (`model_index.json`, and `unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`), so `diffusers.StableDiffusionPipeline.from_pretrained`
loads it unchanged. Its weights are stored in half precision to keep the package small; their
configs say float32, so they load as float32.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdlearn.weights import WEIGHTS_DIR

INFO_FILE = "sdlearn_info.json"


def scheduler_config(beta_schedule: str, prediction_type: str) -> dict:
    """The DDIM scheduler a shipped pipeline samples with: the training schedule, trailing spacing."""
    return {"num_train_timesteps": 1000, "beta_schedule": beta_schedule, "prediction_type": prediction_type,
            "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "trailing"}


def shipped() -> list[str]:
    """Names of the pipelines shipped with the package."""
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "model_index.json").exists())


def _halve(folder: Path) -> None:
    """Store every floating-point tensor of the folder's safetensors files in float16, in place."""
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(path), metadata=metadata)


def write_pipeline(folder, *, unet, vae, text_encoder, beta_schedule: str, prediction_type: str,
                   info: dict | None = None, half: bool = True) -> Path:
    """Write a complete StableDiffusionPipeline folder; an existing folder is replaced only when it is done.

    `unet` is a diffusers UNet2DConditionModel, `vae` an AutoencoderKL and `text_encoder` a
    transformers CLIPTextModel; the tokenizer is CLIP's (`sdlearn.tokenizer`). The folder is
    written beside its destination and renamed into place, so a reader never sees half of it.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from sdlearn.tokenizer import clip_tokenizer

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scheduler = DDIMScheduler.from_config(scheduler_config(beta_schedule, prediction_type))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if half:
            _halve(staging)
        (staging / INFO_FILE).write_text(json.dumps(info or {}, indent=1) + "\n")
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            folder.rename(old)
        try:
            staging.rename(folder)
        except OSError:
            if old.exists():
                old.rename(folder)                 # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_info(name_or_path) -> dict:
    """The training information stored with a pipeline folder."""
    path = _resolve(name_or_path)
    file = path / INFO_FILE
    return json.loads(file.read_text()) if file.exists() else {}


def _resolve(name_or_path) -> Path:
    path = Path(name_or_path)
    if (path / "model_index.json").exists():
        return path
    candidate = WEIGHTS_DIR / str(name_or_path)
    if (candidate / "model_index.json").exists():
        return candidate
    raise FileNotFoundError(f"no pipeline called {name_or_path!r}; shipped pipelines: {', '.join(shipped()) or 'none'}")


def load(name_or_path, device: str | torch.device = "cpu"):
    """A `diffusers.StableDiffusionPipeline` from a shipped name or a local folder, in float32."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(_resolve(name_or_path)), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

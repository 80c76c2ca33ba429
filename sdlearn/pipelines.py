"""Text-to-image pipelines as diffusers folders: the shipped Fashion-MNIST model, and Stable Diffusion.

    pipe = sdlearn.pipelines.load("fashion_text2image")        # shipped with the package, offline
    images = pipe("a photo of a sneaker facing right", num_inference_steps=25,
                  generator=torch.Generator().manual_seed(0)).images

A shipped pipeline is an ordinary diffusers folder (`model_index.json`, and `unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`), so `diffusers.StableDiffusionPipeline.from_pretrained`
loads it unchanged. The registry in `sdlearn.weights` lists it beside the shipped weights files
(`available()`), finds it (`resolve`) and reads its training record (`read_info`). Its weights are stored in half precision to keep the package small; their
configs say float32, so they load as float32.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdlearn.weights import PIPELINE_INFO, WEIGHTS_DIR, is_pipeline, resolve


def scheduler_config(beta_schedule: str, prediction_type: str) -> dict:
    """The DDIM scheduler a shipped pipeline samples with: the training schedule, trailing spacing."""
    return {"num_train_timesteps": 1000, "beta_schedule": beta_schedule, "prediction_type": prediction_type,
            "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "trailing"}


def _halve(folder: Path) -> None:
    """Store every floating-point tensor of the folder's safetensors files in float16, in place."""
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(path), metadata=metadata)


def _slim_tokenizer(directory: Path) -> None:
    """Keep CLIP's vocab.json and merges.txt (1.5 MB) instead of the 3.6 MB tokenizer.json.

    `CLIPTokenizer.from_pretrained` builds the same tokenizer from them, and faster.
    """
    from sdlearn.tokenizer import write_clip_tokenizer_files

    (directory / "tokenizer.json").unlink(missing_ok=True)
    write_clip_tokenizer_files(directory)


PIPELINE_CLASSES = {"text2image": "StableDiffusionPipeline", "inpaint": "StableDiffusionInpaintPipeline",
                    "img2img": "StableDiffusionImg2ImgPipeline"}
SHAREABLE = ("vae", "text_encoder", "tokenizer")           # the parts an inpainting folder takes from its base


def _same_component(a: Path, b: Path) -> bool:
    """Whether two component folders hold the same files: same configs and tokenizer files, same tensors."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    for name in names:
        if name.suffix == ".json":                       # a config: the same, but for where it was loaded from
            x, y = (json.loads((root / name).read_text()) for root in (a, b))
            if isinstance(x, dict) and isinstance(y, dict):
                x, y = ({k: v for k, v in d.items() if k != "_name_or_path"} for d in (x, y))
            if x != y:
                return False
            continue
        if name.suffix != ".safetensors":
            if (a / name).read_bytes() != (b / name).read_bytes():
                return False
            continue
        with safe_open(str(a / name), framework="pt") as x, safe_open(str(b / name), framework="pt") as y:
            if sorted(x.keys()) != sorted(y.keys()):
                return False
            if any(not torch.equal(x.get_tensor(k), y.get_tensor(k)) for k in x.keys()):
                return False
    return True


def _share_components(staging: Path, folder: Path, base: Path) -> list[str]:
    """Replace each of staging's `SHAREABLE` parts that equals the base's by a relative link to it.

    Only parts that hold exactly the base's files and tensors are linked, so loading either
    folder gives what was written. Returns the names of the linked parts.
    """
    import os

    shared = []
    for name in SHAREABLE:
        if (base / name).is_dir() and not (base / name).is_symlink() and _same_component(staging / name, base / name):
            shutil.rmtree(staging / name)
            (staging / name).symlink_to(os.path.relpath(base / name, folder), target_is_directory=True)
            shared.append(name)
    return shared


def write_pipeline(folder, *, unet, vae, text_encoder, beta_schedule: str, prediction_type: str,
                   info: dict | None = None, half: bool = True, pipeline: str = "text2image",
                   share_with: Path | None = None) -> Path:
    """Write a complete diffusers pipeline folder; an existing folder is replaced only when it is done.

    `unet` is a diffusers UNet2DConditionModel, `vae` an AutoencoderKL and `text_encoder` a
    transformers CLIPTextModel; the tokenizer is CLIP's (`sdlearn.tokenizer`). `pipeline` names
    the class `model_index.json` records (`PIPELINE_CLASSES`: "text2image" or "inpaint"). With
    `share_with` (another pipeline folder beside this one), the VAE, text encoder and tokenizer
    are stored once: where they equal that folder's, they become relative links to it. The folder
    is written beside its destination and renamed into place, so a reader never sees half of it.
    """
    import diffusers
    from diffusers import DDIMScheduler

    from sdlearn.tokenizer import clip_tokenizer

    if pipeline not in PIPELINE_CLASSES:
        raise ValueError(f"pipeline must be one of {sorted(PIPELINE_CLASSES)}, got {pipeline!r}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scheduler = DDIMScheduler.from_config(scheduler_config(beta_schedule, prediction_type))
    pipe = getattr(diffusers, PIPELINE_CLASSES[pipeline])(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        _slim_tokenizer(staging / "tokenizer")
        if half:
            _halve(staging)
        if share_with is not None:
            _share_components(staging, folder, Path(share_with))
        (staging / PIPELINE_INFO).write_text(json.dumps(info or {}, indent=1) + "\n")
        for path in [staging, *staging.rglob("*")]:       # readable by all, as an installed package must be
            path.chmod(0o755 if path.is_dir() else 0o644)
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


SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"      # the Hub id of Stable Diffusion 1.5


SHIPPED_TEXT2IMAGE = "fashion_text2image"                # the text-to-image model in this package


def default_model(hub_timeout: float = 5.0) -> str:
    """The model a lesson should use here: Stable Diffusion 1.5 where it can run, else the shipped one.

    SD 1.5 needs a CUDA GPU, and either a copy in the Hugging Face cache or a reachable Hub.
    Without a GPU the network is never touched.
    """
    if not torch.cuda.is_available():
        return SHIPPED_TEXT2IMAGE
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(SD15, "model_index.json"), str):
            return SD15
        import urllib.request

        urllib.request.urlopen("https://huggingface.co", timeout=hub_timeout).close()
        return SD15
    except OSError:
        return SHIPPED_TEXT2IMAGE


class HubUnavailableError(OSError):
    """A model was asked for by its Hub id, and neither the Hub nor a local copy could provide it."""


def _is_hub_id(name) -> bool:
    text = str(name)
    return text.count("/") == 1 and not Path(text).exists() and not text.startswith((".", "/", "~"))


@contextmanager
def _quiet_loading():
    """No loading progress bars from diffusers or transformers (they would clutter a lesson's output)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    were_enabled = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if were_enabled[0]:
            diffusers_logging.enable_progress_bar()
        if were_enabled[1]:
            transformers_logging.enable_progress_bar()


def _dtype_keyword(dtype: torch.dtype) -> dict:
    """`from_pretrained`'s dtype argument: `dtype=` from diffusers 0.40, `torch_dtype=` before.

    Each version warns about the other name (0.40 on deprecates `torch_dtype`; before it,
    `dtype` is ignored), and `from_pretrained` takes **kwargs, so its signature cannot tell.
    """
    import diffusers

    major, minor = (int(part) for part in re.findall(r"\d+", diffusers.__version__)[:2])
    return {"dtype" if (major, minor) >= (0, 40) else "torch_dtype": dtype}


def pipeline_class(folder):
    """The diffusers pipeline class a folder's `model_index.json` names (text to image, inpainting, ...)."""
    import diffusers

    name = json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
    if name not in PIPELINE_CLASSES.values():
        raise ValueError(f"{folder} holds a {name}; sdlearn loads {', '.join(sorted(PIPELINE_CLASSES.values()))}")
    return getattr(diffusers, name)


def load(name_or_path, device: str | torch.device | None = None, *, dtype: torch.dtype | None = None,
         attention_slicing: bool = False):
    """A diffusers pipeline from a shipped name, a local folder or a Hub id.

    A folder loads as the class its `model_index.json` names: `StableDiffusionPipeline` for
    text to image, `StableDiffusionInpaintPipeline` for an inpainting model; a Hub id loads as
    `StableDiffusionPipeline`.

    - A shipped name or a folder loads offline, in float32, on `device` (default: the CPU).
    - A Hub id such as `SD15` loads from the Hugging Face Hub or its local cache, by default on
      the GPU in float16 when there is one (on a CPU, float32). `attention_slicing=True` computes
      attention in slices, for GPUs with little memory. Without a network and without a cached
      copy this raises `HubUnavailableError`, which says what to do instead.
    """
    from diffusers import StableDiffusionPipeline

    if _is_hub_id(name_or_path) and not (WEIGHTS_DIR / str(name_or_path)).exists():
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
        try:
            pipe = StableDiffusionPipeline.from_pretrained(str(name_or_path), **_dtype_keyword(dtype),
                                                           safety_checker=None, requires_safety_checker=False)
        except (OSError, ValueError) as error:
            raise HubUnavailableError(
                f"could not load {name_or_path!r} from the Hugging Face Hub or its local cache ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}). It needs a network connection the first time, and about 5 GB "
                f"of disk; a GPU makes it practical. Without them, use the model shipped with sdlearn: "
                f"sdlearn.pipelines.load({SHIPPED_TEXT2IMAGE!r}).") from error
    else:
        try:
            path = resolve(name_or_path)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error} A pipeline may also be a Hugging Face Hub id such as {SD15!r}.") from None
        if not is_pipeline(path):
            raise ValueError(f"{name_or_path!r} is a weights file, not a pipeline folder: load it with "
                             f"sdlearn.weights.load({name_or_path!r})")
        with _quiet_loading():
            pipe = pipeline_class(path).from_pretrained(str(path), **_dtype_keyword(dtype or torch.float32))
        device = device or "cpu"
    if attention_slicing:
        pipe.enable_attention_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

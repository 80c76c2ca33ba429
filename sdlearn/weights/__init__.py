"""Every model the project trains and ships, found from one place: this directory and its registry.

A shipped model is a safetensors file (`NAME.safetensors`), a diffusers pipeline folder
(`NAME/model_index.json`), or a LoRA for one of the pipelines (`NAME/pytorch_lora_weights.safetensors`,
with the name of the pipeline it adapts in its record). `available()` lists every kind,
`load(name)` rebuilds any of them, `read_info(name)` returns how it was made, and a name that
is not there gets one error listing every shipped model:

    classifier = load("fashion_classifier")   # SmallClassifier, Fashion-MNIST, 28x28
    unet = load("ddpm_fashion")                # UNet noise predictor, Fashion-MNIST padded to 32x32
    vae = load("vae_fashion")                  # diffusers AutoencoderKL, 1x32x32 to 4x8x8 latents
    latent_unet = load("ldm_fashion")          # UNet noise predictor on vae_fashion's latents
    flow_unet = load("flow_fashion")           # the same U-Net trained by flow matching (velocity)
    reflow_unet = load("reflow_fashion")       # flow_fashion plus a low-rank change: straighter paths
    clip = load("clip_fashion")                # SmallCLIP: image and text encoders, CLIP's tokenizer
    pipe = load("fashion_text2image")          # diffusers StableDiffusionPipeline (sdlearn.pipelines)
    pipe = load("fashion_sks_bag_lora")        # the same pipeline with a DreamBooth LoRA loaded (lesson 19)

    schedule = noise_schedule("ddpm_fashion")  # the noise schedule the model was trained with
    schedule.alphas_cumprod, schedule.prediction_type

A weights file stores its model's configuration in the safetensors metadata, so it needs no
other file. `python -m sdlearn.train RECIPE` writes them (see each model card in the book).

A file may hold only a low-rank change of another shipped model (`save_low_rank`):
`reflow_fashion` is `flow_fashion` plus B A on each weight, 1.0 MB instead of 5.6 MB.

A file may leave out tensors another shipped file already holds: `clip_fashion`'s text
encoder is the one inside the `fashion_text2image` pipeline folder, stored once. Its metadata
says where they are (`share_tensors` writes it) and `load` puts the model back together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdlearn.utils import atomic_path

WEIGHTS_DIR = Path(__file__).resolve().parent
PIPELINE_INDEX = "model_index.json"        # what makes a folder a diffusers pipeline
PIPELINE_INFO = "sdlearn_info.json"        # a pipeline's (or a LoRA's) training record
LORA_FILE = "pytorch_lora_weights.safetensors"  # what makes a folder a LoRA (the name diffusers saves)
KINDS = ("file", "pipeline", "lora")


def _builders():
    from sdlearn.models.classifier import ClassifierConfig, SmallClassifier
    from sdlearn.models.clip import CLIPConfig, SmallCLIP
    from sdlearn.models.unet import UNet, UNetConfig
    return {"SmallClassifier": (SmallClassifier, ClassifierConfig), "UNet": (UNet, UNetConfig),
            "SmallCLIP": (SmallCLIP, CLIPConfig)}


def _is_diffusers(model) -> bool:
    return any(c.__module__.startswith("diffusers.") for c in type(model).__mro__)


def available(kind: str | None = None) -> list[str]:
    """Names of the shipped models: `kind="file"` (safetensors files), `"pipeline"` (folders), `"lora"`, or all."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be None or one of {KINDS}, got {kind!r}")
    names = []
    if kind in (None, "file"):
        names += [p.stem for p in WEIGHTS_DIR.glob("*.safetensors")]
    if kind in (None, "pipeline"):
        names += [p.name for p in WEIGHTS_DIR.iterdir() if is_pipeline(p)]
    if kind in (None, "lora"):
        names += [p.name for p in WEIGHTS_DIR.iterdir() if is_lora(p)]
    return sorted(names)


def is_pipeline(path: Path) -> bool:
    """Whether a path is a diffusers pipeline folder (it holds a `model_index.json`)."""
    return (Path(path) / PIPELINE_INDEX).exists()


def is_lora(path: Path) -> bool:
    """Whether a path is a LoRA folder: a `pytorch_lora_weights.safetensors` and no pipeline of its own."""
    return (Path(path) / LORA_FILE).is_file() and not is_pipeline(path)


def resolve(name_or_path) -> Path:
    """The file or folder of a shipped model's name, or of a path to a weights file or pipeline folder."""
    path = Path(name_or_path)
    if (path.suffix == ".safetensors" and path.is_file()) or is_pipeline(path) or is_lora(path):
        return path
    for candidate in (WEIGHTS_DIR / f"{name_or_path}.safetensors", WEIGHTS_DIR / str(name_or_path)):
        if candidate.is_file() or is_pipeline(candidate) or is_lora(candidate):
            return candidate
    files, folders, loras = available("file"), available("pipeline"), available("lora")
    raise FileNotFoundError(
        f"no shipped model called {name_or_path!r}. Shipped weights files: {', '.join(files) or 'none'}; "
        f"shipped pipeline folders: {', '.join(folders) or 'none'}; shipped LoRAs: {', '.join(loras) or 'none'}. "
        f"Or give the path of a .safetensors file written by sdlearn, or of a folder holding a {PIPELINE_INDEX} "
        f"or a {LORA_FILE}.")


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


LOW_RANK = "LowRank"                      # a weights file holding a low-rank change of another one


def save_low_rank(tensors: dict[str, torch.Tensor], scale: float, base: str, path, info: dict | None = None,
                  dtype: torch.dtype | None = None) -> Path:
    """Write a low-rank change of the shipped model `base` (`sdlearn.finetune.low_rank`) to one file.

    `load` rebuilds `base` (a shipped name, or a weights file beside this one) and adds
    scale * B A to each weight the change names.
    """
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    metadata = {"class": LOW_RANK, "base": str(base), "scale": repr(float(scale)), "info": json.dumps(info or {})}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def _low_rank_base(path: Path, metadata: dict) -> Path:
    """The weights file a low-rank change belongs to: a file of that name beside it, else a shipped model."""
    beside = path.parent / f"{metadata['base']}.safetensors"
    if beside.is_file():
        return beside
    try:
        return resolve(metadata["base"])
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path.name} is a low-rank change of {metadata['base']!r}, which is neither "
                                f"beside it nor shipped: put {metadata['base']}.safetensors next to it") from exc


def read_info(name_or_path) -> dict:
    """How a shipped model was made: the record stored with it (recipe, training time, metrics)."""
    path = resolve(name_or_path)
    if is_pipeline(path) or is_lora(path):
        file = path / PIPELINE_INFO
        return json.loads(file.read_text()) if file.exists() else {}
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("info", "{}"))


@dataclass(frozen=True)
class NoiseSchedule:
    """The noise schedule a denoiser was trained with: betas by name, what it predicts, and T."""
    beta_schedule: str                 # "linear", "scaled_linear" or "squaredcos_cap_v2" (the cosine schedule)
    prediction_type: str               # "epsilon" or "v_prediction"
    num_train_timesteps: int = 1000

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar_t for t = 0 ... T - 1, as float32 (as diffusers' schedulers compute it)."""
        from sdlearn.schedules import alphas_cumprod_from_betas, make_betas
        return alphas_cumprod_from_betas(make_betas(self.beta_schedule, self.num_train_timesteps))

    def record(self) -> dict:
        """The entries a training run stores, which `noise_schedule` reads back."""
        return asdict(self)


def noise_schedule(name_or_path) -> NoiseSchedule:
    """The noise schedule a shipped denoiser (a weights file or a pipeline folder) was trained with."""
    path = resolve(name_or_path)
    if is_lora(path):
        return noise_schedule(lora_base(path))
    if is_pipeline(path):
        record = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    else:
        record = read_info(path)
    if "beta_schedule" not in record or "prediction_type" not in record:
        raise ValueError(f"{path.name} does not record a noise schedule: it is not a denoiser (its record has "
                         f"{', '.join(sorted(record)) or 'nothing'})")
    return NoiseSchedule(record["beta_schedule"], record["prediction_type"], int(record.get("num_train_timesteps", 1000)))


def _shared_tensors(path: Path, metadata: dict) -> dict[str, torch.Tensor]:
    """The tensors a weights file leaves to another file (see `share_tensors`), under their own names."""
    if "shared" not in metadata:
        return {}
    shared = json.loads(metadata["shared"])
    source = path.parent / shared["file"]
    if not source.exists():
        raise FileNotFoundError(f"{path.name} keeps its {shared['prefix']!r} weights in {shared['file']}, which is "
                                f"missing from {path.parent}. Reinstall sdlearn, or retrain both models "
                                f"(python -m sdlearn.train ...) to get complete files.")
    return {shared["prefix"] + k: v for k, v in load_file(str(source)).items()}


def share_tensors(name_or_path, prefix: str, source) -> Path:
    """Rewrite a weights file without its tensors under `prefix`, which `source` holds already.

    `source` is a safetensors file in the same directory tree (its path is stored relative to
    the weights file), whose tensor `k` must equal this file's tensor `prefix + k`, exactly.
    The file is rewritten atomically, and only after every tensor has been compared.
    """
    path = resolve(name_or_path)
    source = Path(source)
    source = source if source.is_absolute() else path.parent / source
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors.update(_shared_tensors(path, metadata))
    if not source.resolve().is_relative_to(path.parent.resolve()):
        raise ValueError(f"{source} must lie under {path.parent}, so the pair can be moved together")
    theirs = load_file(str(source))
    for key, value in theirs.items():
        mine = tensors.get(prefix + key)
        if mine is None or mine.dtype != value.dtype or not torch.equal(mine, value):
            raise ValueError(f"{source} does not hold {path.name}'s {prefix + key!r} exactly; nothing was changed")
    kept = {k: v for k, v in tensors.items() if not (k.startswith(prefix) and k[len(prefix):] in theirs)}
    metadata["shared"] = json.dumps({"prefix": prefix,
                                     "file": source.resolve().relative_to(path.parent.resolve()).as_posix()})
    with atomic_path(path) as tmp:
        save_file(kept, str(tmp), metadata=metadata)
    return path


def lora_base(name_or_path) -> str:
    """The pipeline a LoRA adapts, as its record names it (a shipped name, or a path relative to the LoRA)."""
    path = resolve(name_or_path)
    base = read_info(path).get("base")
    if base is None:
        raise ValueError(f"{path} does not say which pipeline it adapts: its {PIPELINE_INFO} needs a 'base' entry "
                         f"(a shipped pipeline such as 'fashion_text2image')")
    return base


def load(name_or_path, device: str | torch.device = "cpu"):
    """Rebuild a shipped (or saved) model, in eval mode: a module from a weights file, a pipeline from a folder.

    A pipeline folder loads with `sdlearn.pipelines.load` (a `diffusers.StableDiffusionPipeline`);
    a LoRA folder loads as the pipeline it adapts with the LoRA in it, an adapter named after
    the folder (`sdlearn.finetune.load_lora`: `pipe.set_adapters` changes its scale).
    """
    path = resolve(name_or_path)
    if is_lora(path):
        from sdlearn.finetune.lora import load_lora
        from sdlearn.pipelines import load as load_pipeline

        pipe = load_pipeline(resolve(lora_base(path)), device)
        load_lora(pipe, path, adapter_name=path.name)
        return pipe
    if is_pipeline(path):
        from sdlearn.pipelines import load as load_pipeline
        return load_pipeline(path, device)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("class") == LOW_RANK:
        from sdlearn.finetune.low_rank import merge_low_rank

        model = load(_low_rank_base(path, metadata), device="cpu")
        return merge_low_rank(model, load_file(str(path)), float(metadata["scale"])).to(device).eval()
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
    model.load_state_dict({**load_file(str(path)), **_shared_tensors(path, metadata)})
    return model.to(device).eval()

"""One training loop for every recipe: AdamW, EMA, mixed precision, clipping, checkpoints.

(`train_classifier`, at the end, is the few-line loop the early lessons train small classifiers with.)

    result = train(model, loss_fn, data, TrainConfig(steps=..., batch_size=...), checkpoint_dir=...)

- `loss_fn(model, batch, generator)` returns the scalar loss of one batch; the generator is
  seeded from (seed, step, process), so a run is repeatable and a resumed run continues
  exactly where it stopped.
- `data` is a tensor (or a tuple of tensors) indexed along the first dimension; each epoch
  is a permutation seeded from (seed, epoch).
- It runs under Hugging Face Accelerate: the same code trains on a CPU, one GPU, or several
  processes (`accelerate launch`), each process taking its share of every global batch.
- Checkpoints are safetensors (model, EMA, optimizer state) plus a JSON file, written to a
  fresh directory and then published by atomically rewriting `latest.json`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from sdlearn.precision import choose_mixed_precision, resolve_mixed_precision
from sdlearn.utils import atomic_write


@dataclass
class TrainConfig:
    steps: int = 1000                 # optimizer steps in total
    batch_size: int = 128             # global batch size (split across processes)
    lr: float = 1e-3                  # peak learning rate of AdamW
    weight_decay: float = 0.0         # AdamW weight decay
    betas: tuple = (0.9, 0.999)       # AdamW betas
    warmup_steps: int = 0             # linear learning-rate warm-up
    lr_schedule: str = "constant"     # "constant" or "cosine" (decay to 0 after the warm-up)
    ema_decay: float = 0.0            # 0 switches the EMA off; 0.999 is typical
    ema_warmup: bool = True           # use min(ema_decay, (1 + step) / (10 + step)) early on
    grad_clip: float | None = 1.0     # clip the global gradient norm (None: no clipping)
    mixed_precision: str = "no"       # "no", "bf16" (CPU or GPU), "fp16" (GPU), or "auto": bf16 where the
                                      # hardware has it natively and it is faster (sdlearn.precision)
    seed: int = 0                     # fixes initial order, noise and timesteps
    checkpoint_every: int = 0         # steps between checkpoints (0: only at the end)
    sample_every: int = 0             # steps between sample grids (0: never)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16", "auto"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16', 'fp16' or 'auto', got {self.mixed_precision!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainResult:
    model: torch.nn.Module            # the trained model (unwrapped), on its device
    ema: torch.nn.Module | None       # the EMA of its weights, if switched on
    losses: list[float] = field(default_factory=list)  # loss of every step (this process)
    seconds: float = 0.0              # wall time of this call
    images_per_second: float = 0.0    # training throughput over this call
    process_index: int = 0            # this process under `accelerate launch` (0 otherwise)
    num_processes: int = 1            # processes that trained the model together
    checksum: str = ""                # fingerprint of the final weights (the EMA if any), equal on every process
    mixed_precision: str = "no"       # the precision that ran ("auto" resolved): "no" (float32), "bf16", "fp16"
    precision_reason: str = ""        # why: sdlearn.precision's reason for "auto", else "set in the config"

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0


class ConfigMismatchError(ValueError):
    """Raised when resuming from a checkpoint written with a different configuration."""


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier at a step: linear warm-up, then constant or cosine decay."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers are copied)."""
    ema_params = list(ema.parameters())
    model_params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters())]
    torch._foreach_lerp_(ema_params, model_params, 1 - decay)   # one fused update instead of a loop
    for ema_b, b in zip(ema.buffers(), model.buffers()):
        ema_b.copy_(b)


def _batch(data, idx):
    return tuple(d[idx] for d in data) if isinstance(data, (tuple, list)) else data[idx]


def _length(data) -> int:
    return len(data[0]) if isinstance(data, (tuple, list)) else len(data)


def _indices_for_step(step: int, n: int, config: TrainConfig) -> torch.Tensor:
    """The global batch of a step: epochs are permutations seeded by (seed, epoch)."""
    per_epoch = n // config.batch_size
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    return order[position * config.batch_size:(position + 1) * config.batch_size]


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(directory: Path, step: int, model, ema, optimizer, config: TrainConfig, extra: dict,
                    losses: list[float]) -> Path:
    """Write step-NNNNNNN/ completely, then point latest.json at it; remove older checkpoints."""
    directory = Path(directory)
    target = directory / f"step-{step:07d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, target / "model.safetensors")
    if ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, target / "ema.safetensors")
    state = optimizer.state_dict()
    tensors = {}
    scalars = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, target / "optimizer.safetensors")
    meta = {"step": step, "config": asdict(config), "extra": extra, "param_groups": state["param_groups"],
            "optimizer_scalars": scalars, "losses": losses}
    with atomic_write(target / "trainer.json", "w") as handle:
        json.dump(meta, handle)
    with atomic_write(directory / "latest.json", "w") as handle:
        json.dump({"checkpoint": target.name, "step": step}, handle)
    for old in directory.glob("step-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old)
    return target


def latest_checkpoint(directory) -> Path | None:
    pointer = Path(directory) / "latest.json"
    if not pointer.exists():
        return None
    return Path(directory) / json.loads(pointer.read_text())["checkpoint"]


def _config_difference(saved: dict, current: dict) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys
            if json.loads(json.dumps(saved.get(k))) != json.loads(json.dumps(current.get(k)))]


def load_checkpoint(path: Path, model, ema, optimizer, config: TrainConfig, extra: dict) -> tuple[int, list[float]]:
    """Restore a checkpoint written by `save_checkpoint`; refuse one with another configuration."""
    meta = json.loads((path / "trainer.json").read_text())
    differences = _config_difference(meta["config"], asdict(config)) + _config_difference(meta["extra"], extra)
    ignorable = ("checkpoint_every", "sample_every", "steps")
    differences = [d for d in differences if d.split(":")[0] not in ignorable]
    if differences:
        raise ConfigMismatchError(f"cannot resume from {path}: it was trained with another configuration ("
                                  + "; ".join(differences) + "). Use a new checkpoint directory, or the same settings.")
    model.load_state_dict(load_file(path / "model.safetensors"))
    if ema is not None:
        ema.load_state_dict(load_file(path / "ema.safetensors"))
    tensors = load_file(path / "optimizer.safetensors")
    state = {}
    for key, value in list(tensors.items()) + list(meta["optimizer_scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["losses"]


# --------------------------------------------------------------------------- the loop

def train(model: torch.nn.Module, loss_fn: Callable, data, config: TrainConfig, *,
          checkpoint_dir=None, resume: bool = True, extra: dict | None = None,
          sample_fn: Callable | None = None, progress: bool = True, stop_after: int | None = None,
          accelerator: Accelerator | None = None) -> TrainResult:
    """Train `model` on `data` with `loss_fn`; see the module docstring.

    `extra` is recipe configuration stored with checkpoints and compared on resume.
    `sample_fn(ema_or_model, step, directory)` is called every `sample_every` steps.
    `stop_after` ends the call after that many steps (an interruption, for tests and demos);
    the checkpoint written then lets a later call resume.
    """
    extra = extra or {}
    if accelerator is None:
        # Accelerate keeps one state per process; a new run may ask for another precision than the
        # previous one (the process group of `accelerate launch`, if any, is kept).
        AcceleratorState._reset_state()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        accelerator = Accelerator(mixed_precision=resolve_mixed_precision(config.mixed_precision, device),
                                  cpu=device == "cpu")
    n = _length(data)
    if n < config.batch_size:
        raise ValueError(f"{n} training examples but batch_size is {config.batch_size}")
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {accelerator.num_processes} processes")
    ema = None
    if config.ema_decay > 0:
        ema = copy.deepcopy(model)
        ema.requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    start, losses = 0, []
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoint_dir is not None and resume and latest_checkpoint(checkpoint_dir) is not None:
        start, losses = load_checkpoint(latest_checkpoint(checkpoint_dir), model, ema, optimizer, config, extra)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    rank, world = accelerator.process_index, accelerator.num_processes
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=config.steps, desc="training",
               disable=not (progress and accelerator.is_main_process))
    began = time.perf_counter()
    last_good = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    model.train()
    for step in bar:
        # 1. this process's share of the global batch, and its own seeded generator
        idx = _indices_for_step(step, n, config)[rank::world]
        batch = _batch(data, idx)
        batch = tuple(b.to(accelerator.device) for b in batch) if isinstance(batch, tuple) else batch.to(accelerator.device)
        generator = torch.Generator().manual_seed((config.seed * 1_000_003 + step) * 64 + rank)
        # 2. forward and backward at this step's learning rate
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_at(step, config)
        with accelerator.autocast():
            loss = loss_fn(model, batch, generator)
        if not torch.isfinite(loss):
            where = f"; the last good checkpoint is {last_good}" if last_good is not None else ""
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}{where}. "
                                     "Lower the learning rate or switch on gradient clipping.")
        accelerator.backward(loss)
        if config.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # 3. the EMA of the weights
        if ema is not None:
            decay = min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_decay
            ema_update(ema, accelerator.unwrap_model(model), decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        # 4. checkpoints and sample grids
        if checkpoint_dir is not None and accelerator.is_main_process and (
                done == end or (config.checkpoint_every and done % config.checkpoint_every == 0)):
            last_good = save_checkpoint(checkpoint_dir, done, accelerator.unwrap_model(model), ema,
                                        optimizer, config, extra, losses)
        if sample_fn is not None and config.sample_every and done % config.sample_every == 0 \
                and accelerator.is_main_process:
            sample_fn(ema if ema is not None else accelerator.unwrap_model(model), done, checkpoint_dir)
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - began
    model = accelerator.unwrap_model(model)
    model.eval()
    checksum = weights_checksum(ema if ema is not None else model)
    if world > 1:
        # Data parallelism keeps one model: every process must end with the same weights.
        fingerprints = accelerator.gather(torch.tensor([int(checksum[:12], 16)], device=accelerator.device))
        if len(set(fingerprints.tolist())) != 1:
            raise RuntimeError(f"the {world} processes ended with different weights ({fingerprints.tolist()}); "
                               "the model was not synchronised, check the launcher and the backend")
    images = (end - start) * config.batch_size
    return TrainResult(model, ema, losses, seconds, images / seconds if seconds > 0 else 0.0,
                       process_index=rank, num_processes=world, checksum=checksum,
                       mixed_precision=str(accelerator.mixed_precision),
                       precision_reason=(choose_mixed_precision(accelerator.device).reason
                                         if config.mixed_precision == "auto" else "set in the config"))


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers, in state-dict order (hex)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_classifier(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5,
                     lr: float = 2e-3, batch_size: int = 64, generator: torch.Generator | None = None,
                     progress: bool = True) -> list[float]:
    """Train with AdamW and cross-entropy, a whole epoch at a time; return the mean loss of every epoch.

    The lessons' small classifiers train in seconds with this; the shipped classifier is
    trained by `train` (its recipe is `sdlearn.recipes.classifier`). Each epoch's order is a
    permutation drawn from `generator` (default: `torch.Generator().manual_seed(0)`), so a run
    is repeatable.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = []
    model.train()
    for _ in tqdm(range(epochs), desc="epochs", disable=not progress):
        order = torch.randperm(images.shape[0], generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / count)
    model.eval()
    return history

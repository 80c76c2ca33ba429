"""The end of every training run, written once: pick the weights, describe the run, save them.

Every recipe ends the same way: take the EMA of the weights if the run kept one (else the
model), build the run's record (command, time, precision, throughput, checksum, settings),
evaluate and write the weights on the main process only (under `accelerate launch` every
process reaches this point with identical weights), and return the record.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from sdlearn import weights
from sdlearn.training import TrainResult

PRECISION_NAMES = {"no": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def precision_record(result: TrainResult) -> str:
    """What the run's record says about its precision: what ran, and why `auto` chose it."""
    return f"{PRECISION_NAMES[result.mixed_precision]}: {result.precision_reason}"


def jsonable(recipe) -> dict:
    """A recipe dataclass as plain JSON values (tuples become lists, anything else a string)."""
    return json.loads(json.dumps(asdict(recipe), default=str))


def final_model(result: TrainResult) -> torch.nn.Module:
    """The weights a run ships: the EMA if the run kept one, else the trained model."""
    return result.ema if result.ema is not None else result.model


def run_record(result: TrainResult, name: str, recipe, **extra) -> dict:
    """The record stored with the weights: how they were made, and what the run measured."""
    info = {"recipe": f"python -m sdlearn.train {name}", "train_seconds": round(result.seconds),
            "precision": precision_record(result), "images_per_second": round(result.images_per_second),
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": jsonable(recipe)}
    if result.losses:
        tail = result.losses[-100:]
        info["final_loss"] = sum(tail) / len(tail)
    info.update(extra)
    return info


def finish_run(result: TrainResult, out: Path, name: str, recipe, *, extra: dict | None = None,
               evaluate: Callable[[torch.nn.Module], dict] | None = None,
               save: Callable[[torch.nn.Module, dict], None] | None = None,
               dtype: torch.dtype | None = None) -> dict:
    """Pick the final weights, evaluate and save them on the main process, and return the run's record.

    - `extra`: more entries for the record (for example the noise schedule a denoiser learned);
    - `evaluate(model)`: measurements added to the record before saving (test accuracy, ...);
    - `save(model, info)`: how to write the weights; by default one safetensors file at `out`
      (`sdlearn.weights.save`, floating-point tensors in `dtype` if given).
    The stored record leaves out `process_index`, which differs between processes.
    """
    model = final_model(result)
    info = run_record(result, name, recipe, **(extra or {}))
    if result.is_main_process:
        model.eval()
        if evaluate is not None:
            info.update(evaluate(model))
        stored = {k: v for k, v in info.items() if k != "process_index"}
        if save is None:
            weights.save(model, out, stored, dtype=dtype)
        else:
            save(model, stored)
    return info

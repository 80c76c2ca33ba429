"""Reflow (rectified flow's second round, Liu et al., 2023): `flow_fashion` taught its own straight lines.

1. Pairs: noise z (4x8x8 latents) and the latent x0 that `flow_fashion` draws from it with
   25 Euler steps. The teacher's ODE ties each z to one x0 deterministically.
2. Training: the flow-matching loss on those pairs instead of on independent (image, noise)
   pairs: x_t = (1 - t) x0 + t z, target z - x0, t uniform in (0, 1). The paths of a
   coupling like this cross less, so the velocity field the student learns is straighter
   and few Euler steps follow it well (a single step lands where 25 steps of the teacher do).
3. The student starts from the teacher and learns a rank-`rank` change of every weight
   matrix and kernel (`sdlearn.finetune.low_rank`); only that change is stored, with the
   teacher's name (`sdlearn.weights.save_low_rank`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlearn import weights
from sdlearn.finetune.low_rank import LowRankAdapted
from sdlearn.flow import FLOW_SCHEDULER, make_flow_schedule, sample_flow_euler
from sdlearn.losses import flow_matching_loss
from sdlearn.recipes.common import finish_run
from sdlearn.training import TrainConfig, train


@dataclass
class ReflowRecipe:
    teacher: str = "flow_fashion"             # the shipped flow-matching model whose ODE makes the pairs
    pairs: int = 24_576                       # (noise, latent) pairs drawn from the teacher
    pair_steps: int = 25                      # Euler steps of the teacher per pair
    pair_batch: int = 512
    pair_seed: int = 1                        # the pairs' noise (the teacher's own training used seed 0)
    rank: int = 16                            # rank of the change of each weight matrix
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema_decay=0.999,
        grad_clip=1.0, mixed_precision="no", seed=0, checkpoint_every=500))
    num_train_timesteps: int = 1000

    def scheduler_config(self) -> dict:
        return {"_class_name": FLOW_SCHEDULER, "num_train_timesteps": self.num_train_timesteps, "shift": 1.0}


@torch.no_grad()
def teacher_pairs(teacher, n: int, steps: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n noises z and the latents x0 the teacher's Euler ODE takes them to (both (n, C, H, W))."""
    generator = torch.Generator().manual_seed(seed)
    schedule = make_flow_schedule(steps)
    shape = (teacher.config.in_channels, teacher.config.sample_size, teacher.config.sample_size)
    noises, latents = [], []
    for start in range(0, n, batch):
        z = torch.randn(min(batch, n - start), *shape, generator=generator)
        noises.append(z)
        latents.append(sample_flow_euler(teacher, z, schedule))
    return torch.cat(noises), torch.cat(latents)


def reflow_loss(model, pair: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator,
                num_train_timesteps: int = 1000) -> torch.Tensor:
    """The flow-matching loss on coupled pairs: x_t = (1 - t) x0 + t z, target z - x0, t uniform."""
    z, x0 = pair
    return flow_matching_loss(model, x0, generator, num_train_timesteps=num_train_timesteps,
                              time_sampling="uniform", noise=z)


def run_reflow(recipe: ReflowRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
               stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    teacher = weights.load(recipe.teacher)
    started = time.perf_counter()
    pairs = teacher_pairs(teacher, recipe.pairs, recipe.pair_steps, recipe.pair_batch, recipe.pair_seed)
    pair_seconds = time.perf_counter() - started
    model = LowRankAdapted(teacher, recipe.rank, seed=recipe.train.seed)
    extra = {"recipe": "reflow", "teacher": recipe.teacher, "rank": recipe.rank, "pairs": recipe.pairs}
    result = train(model, lambda m, pair, g: reflow_loss(m, pair, g, recipe.num_train_timesteps), pairs,
                   recipe.train, checkpoint_dir=checkpoint_dir, extra=extra, progress=progress,
                   stop_after=stop_after)

    def save(adapted, info):
        weights.save_low_rank(adapted.low_rank_tensors(), adapted.scale, recipe.teacher, out, info,
                              dtype=torch.float16)

    return finish_run(result, out, "reflow", recipe, save=save,
                      extra={"scheduler": recipe.scheduler_config(), "pair_seconds": round(pair_seconds),
                             "teacher": recipe.teacher, "rank": recipe.rank,
                             "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})

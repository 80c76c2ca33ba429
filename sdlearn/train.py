"""python -m sdlearn.train RECIPE [--out FILE] [--checkpoint-dir DIR] [--steps N] [--seed S]

Runs a training recipe of `sdlearn.recipes` and writes the weights as safetensors. The same
command runs under `accelerate launch` to train on several processes or GPUs, e.g.

    accelerate launch --multi_gpu --num_processes 2 -m sdlearn.train ddpm

which, on a machine without a GPU, starts two CPU processes that share every batch (gloo
backend). (`accelerate launch --cpu` starts one process only, unless given an MPI hostfile.) A run that is
interrupted resumes from its checkpoint directory when started again with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdlearn.recipes import RECIPES
from sdlearn.weights import WEIGHTS_DIR

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdlearn.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipes:\n" + "\n".join(f"  {name:<12} {desc}" for name, (*_, desc) in RECIPES.items()))
    parser.add_argument("recipe", choices=sorted(RECIPES), help="which recipe to run")
    parser.add_argument("--out", type=Path, help="weights file to write (default: runs/RECIPE.safetensors)")
    parser.add_argument("--checkpoint-dir", type=Path, help="directory for resumable checkpoints (default: runs/RECIPE)")
    parser.add_argument("--steps", type=int, help="override the number of optimizer steps")
    parser.add_argument("--seed", type=int, help="override the seed")
    parser.add_argument("--ship", action="store_true", help=f"write the weights into {WEIGHTS_DIR} (maintainers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    make_recipe, run, shipped_name, _ = RECIPES[args.recipe]
    recipe = make_recipe()
    if args.steps is not None:
        recipe.train.steps = args.steps
    if args.seed is not None:
        recipe.train.seed = args.seed
    out = args.out or (WEIGHTS_DIR / f"{shipped_name}.safetensors" if args.ship
                       else Path("runs") / f"{args.recipe}.safetensors")
    checkpoint_dir = args.checkpoint_dir or Path("runs") / args.recipe
    info = run(recipe, out, checkpoint_dir=checkpoint_dir, progress=not args.no_progress)
    if args.ship and args.recipe in ("clip", "text2image") and info.get("process_index", 0) == 0:
        _share_clip_text_encoder()
    if info.get("num_processes", 1) > 1:
        print(f"process {info['process_index']} of {info['num_processes']} finished: "
              f"weights {info['checksum'][:16]}", flush=True)
    if info.get("process_index", 0) == 0:
        print(json.dumps({k: v for k, v in info.items() if k not in ("settings", "process_index")}, indent=1))
        print(f"wrote {info.get('folder', out)}")
    return 0


def _share_clip_text_encoder() -> None:
    """Store the small CLIP's text encoder once: the shipped pipeline folder holds the same tensors."""
    from sdlearn import weights

    source = WEIGHTS_DIR / "fashion_text2image" / "text_encoder" / "model.safetensors"
    if not (WEIGHTS_DIR / "clip_fashion.safetensors").exists() or not source.exists():
        return
    try:
        weights.share_tensors("clip_fashion", "text_model.", source)
        print("clip_fashion now takes its text encoder from fashion_text2image (stored once)")
    except ValueError:
        print("clip_fashion's text encoder differs from fashion_text2image's: clip_fashion is stored whole. "
              "Retrain text2image with --ship to condition it on the new text encoder.")


if __name__ == "__main__":
    sys.exit(main())
